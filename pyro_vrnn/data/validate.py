"""The check of a user's file against the schema (schema.py's docstring is the contract): `validate_h5`, which
byo.py runs once per version of the file (`--dataset hdf5 --data-dir FILE.h5`) before it is read in place.

Every check that fails raises one DataError that names the file, what is wrong and how to fix it. The values are
read last, once, in bounded chunks (_scan): finite, within MAX_ABS, 0/1 where the kind says so, token ids of the
vocabulary; the content fingerprint (fingerprints.py) and the train split's moments are taken on the way.
"""

import math
import os

import h5py
import numpy as np

from pyro_vrnn.data.fingerprints import Fingerprint
from pyro_vrnn.data.moments import RunningMoments, unstandardized
from pyro_vrnn.data.schema import KINDS, SPLITS, DataError, as_text
from pyro_vrnn.data.tokens import check_file_vocabulary, check_token_ids

# The largest magnitude a stored value may have. The model works in float32 and squares its data
# (Gaussian terms ((x - mu) / sigma)^2, sigma down to min_scale): values of 1e20 overflow float32's
# 3.4e38 outright, and far smaller ones already give losses and gradients no step size can follow
# (the divergence is then blamed on --lr). Standardized data lies within tens of standard deviations.
MAX_ABS = 1e6
SCHEMA_HINT = "see the schema in pyro_vrnn/data/schema.py (README: 'Bring your own data')"
# validate_h5's warning for kind 'real' data far from standardized (moments.unstandardized) with no mean/std attributes
UNSTANDARDIZED = (
    "the train split looks unstandardized ({}) and the file has no mean/std attributes; training on it can give "
    "ELBOs like -1e15, or diverge: standardize the data in your converter, x = (x - mean) / std with mean and std "
    "from the train split, and record them as the attributes mean and std"
)


def _fail(path, what, fix):
    raise DataError(f"{path}: {what}; {fix}")


def _scan(path, split, data, offsets, kind, fingerprint, moments=None, chunk_values=1 << 20, vocabulary=None):
    """Check the values chunk by chunk (a big file is never read whole): readable; finite; at most
    MAX_ABS in magnitude; 0/1 where required; ids of the `vocabulary` for kind "tokens". Each chunk also feeds
    the file's content fingerprint, and `moments` (a RunningMoments), if given."""
    fingerprint.update(split, "offsets", offsets)
    rows = len(data)
    step = max(1, chunk_values // max(1, int(np.prod(data.shape[1:], dtype=np.int64))))
    for start in range(0, rows, step):
        try:
            block = np.asarray(data[start : start + step], dtype=np.float64)
        except OSError as error:  # e.g. a chunk that fails its fletcher32 checksum
            _fail(
                path,
                f"{split}/data rows {start}-{min(rows, start + step) - 1} cannot be read ({error}): "
                "the file is damaged",
                "write it again with your converter (or restore it from a copy)",
            )
        fingerprint.update(split, "data", block)
        block = block.reshape(len(block), -1)
        bad = ~np.isfinite(block)
        if bad.any():
            row = start + int(np.flatnonzero(bad.any(axis=1))[0])
            sequence = int(np.searchsorted(offsets, row, side="right") - 1)
            _fail(
                path,
                f"{split}/data has a NaN or infinite value in sequence {sequence} (row {row})",
                "drop, interpolate or clip it in your converter",
            )
        huge = np.abs(block) > MAX_ABS
        if huge.any():
            row = start + int(np.flatnonzero(huge.any(axis=1))[0])
            sequence = int(np.searchsorted(offsets, row, side="right") - 1)
            value = block[row - start][huge[row - start]][0]
            _fail(
                path,
                f"{split}/data holds {value:.3g} in sequence {sequence} (row {row}), beyond +-{MAX_ABS:g}: "
                f"training's float32 arithmetic overflows or diverges on such values",
                "standardize the data in your converter, x = (x - mean) / std with mean and std from the train "
                "split, and record them as the attributes mean and std",
            )
        check = block if kind == "binary" else block[:, :1] if kind == "handwriting" else None
        if check is not None:
            wrong = (check != 0) & (check != 1)
            if wrong.any():
                row = start + int(np.flatnonzero(wrong.any(axis=1))[0])
                sequence = int(np.searchsorted(offsets, row, side="right") - 1)
                value = check[row - start][wrong[row - start]][0]
                what = "values" if kind == "binary" else "pen bits (column 0)"
                _fail(
                    path,
                    f"kind '{kind}' needs {what} of 0 or 1, but {split} sequence {sequence} (row {row}) has {value:g}",
                    "threshold or fix these values, or set kind to 'real'",
                )
        if vocabulary is not None:
            check_token_ids(path, split, block, start, offsets, len(vocabulary))
        if moments is not None:
            moments.update(block)


def _check_kind(path, f):
    """The root attribute kind: present, and one of KINDS."""
    if "kind" not in f.attrs:
        _fail(
            path,
            "no root attribute 'kind'",
            "set f.attrs['kind'] = 'real' (Gaussian emission), 'binary' (Bernoulli), 'handwriting' or 'tokens'",
        )
    kind = as_text(f.attrs["kind"])
    if kind not in KINDS:
        _fail(path, f"attribute kind is {kind!r}", f"it must be one of {', '.join(KINDS)}")
    return kind


def _member(path, group, name):
    """group[name], or None where there is no such member; a link that leads nowhere (a dangling soft link, an
    external link to a missing file) is one line."""
    if name not in group:
        return None
    try:
        return group[name]
    except (KeyError, OSError) as error:
        link = group.get(name, getlink=True)
        _fail(
            path,
            f"'{group.name.rstrip('/')}/{name}' is a link ({type(link).__name__}) that leads nowhere ({error})",
            "store the data in the file itself, or point the link at a group or dataset that exists",
        )


def _check_structure(path, f, split):
    """The group `split` with its datasets data [steps, D] (or [steps]) of numbers and offsets of
    1-D integers; returns the split's D (from the shape: nothing is read yet)."""
    if not isinstance(_member(path, f, split), h5py.Group):
        _fail(
            path,
            f"no group '{split}'",
            "the file needs groups train, valid and test, each with 'data' [steps, D] and 'offsets' "
            "[sequences + 1] (an empty test split: data of shape [0, D], offsets [0])",
        )
    group = f[split]
    for key in ("data", "offsets"):
        if not isinstance(_member(path, group, key), h5py.Dataset):
            _fail(
                path,
                f"group '{split}' has no dataset '{key}'",
                f"{split}/data holds every sequence end to end [steps, D] and {split}/offsets "
                f"the start of each plus the end ([0, T_1, T_1 + T_2, ...])",
            )
    data, offsets = group["data"], group["offsets"]
    if data.dtype.kind not in "fiub":
        _fail(path, f"{split}/data has dtype {data.dtype}", "store numbers: np.asarray(x, dtype=np.float32)")
    if data.ndim not in (1, 2):
        _fail(
            path,
            f"{split}/data has shape {data.shape}",
            "it must be [steps, D] (or [steps] for D = 1): concatenate the sequences along time",
        )
    if offsets.dtype.kind not in "iu" or offsets.ndim != 1:
        _fail(
            path,
            f"{split}/offsets has dtype {offsets.dtype} and shape {offsets.shape}",
            "it must be a 1-D integer array: np.cumsum([0] + lengths)",
        )
    return data.shape[1] if data.ndim == 2 else 1


def _check_offsets(path, split, group):
    """The offsets of `split` (its `group`): readable, from 0, increasing, ending at len(data), one
    name per sequence where names are given; returns them (int64)."""
    data, offsets = group["data"], group["offsets"]
    try:
        o = np.asarray(offsets[:], dtype=np.int64)
    except OSError as error:  # a chunk that fails its checksum
        _fail(
            path,
            f"{split}/offsets cannot be read ({error}): the file is damaged",
            "write it again with your converter (or restore it from a copy)",
        )
    if len(o) == 0 or o[0] != 0:
        _fail(
            path,
            f"{split}/offsets must start with 0 (found {o[:1].tolist() or 'no entries'})",
            "offsets = np.cumsum([0] + lengths)",
        )
    steps = np.diff(o)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        _fail(
            path,
            f"{split}/offsets are not increasing: offsets[{i + 1}] = {o[i + 1]} <= offsets[{i}] = {o[i]} "
            f"(sequence {i} would have {steps[i]} steps)",
            "every sequence needs at least one step and offsets = np.cumsum([0] + lengths)",
        )
    if o[-1] != len(data):
        _fail(
            path,
            f"{split}/offsets end at {o[-1]} but {split}/data has {len(data)} steps",
            "the last offset must equal the number of rows of data",
        )
    for key, what in (("names", "name"), ("text", "text (its transcription)")):
        if key in group and len(group[key]) != len(o) - 1:
            _fail(
                path,
                f"{split}/{key} has {len(group[key])} entries for {len(o) - 1} sequences",
                f"give one {what} per sequence or drop the {key} dataset",
            )
    return o


def _check_dims(path, f, kind, dims, counts):
    """Sequences in train and valid, one D >= 1 across the splits that have any, agreeing with the
    attribute dim and with the kind (handwriting: D = 3); returns D."""
    for split in ("train", "valid"):
        if counts[split] == 0:
            _fail(
                path,
                f"the {split} split is empty",
                "training needs sequences in train and valid (early stopping); test may be empty",
            )
    dims = {split: d for split, d in dims.items() if counts[split]}  # an empty split's D says nothing
    if len(set(dims.values())) > 1:
        _fail(path, f"the splits have different dimensions {dims}", "every sequence must have the same D")
    dim = dims["train"]
    if dim < 1:
        _fail(
            path,
            f"the data has D = 0 (train/data has shape {f['train']['data'].shape})",
            "every step needs at least one value: data is [steps, D] with D >= 1",
        )
    if "dim" in f.attrs:
        value = np.asarray(f.attrs["dim"])
        if value.dtype.kind not in "iu" or value.size != 1 or int(value.item()) != dim:
            _fail(
                path, f"attribute dim is {value.tolist()!r} but the data has D = {dim}", f"set dim = {dim}, or drop it"
            )
    if kind == "handwriting" and dim != 3:
        _fail(
            path,
            f"kind 'handwriting' needs D = 3 (pen, dx, dy), the data has D = {dim}",
            "use kind 'real' for other data",
        )
    return dim


def _check_normalization(path, f, dim):
    """The attributes mean and std, where present: D finite numbers each, std > 0."""
    for key in ("mean", "std"):
        if key in f.attrs:
            raw = np.asarray(f.attrs[key])
            value = raw.astype(np.float64).reshape(-1) if raw.dtype.kind in "iuf" else np.full(1, np.nan)
            if value.shape != (dim,) or not np.isfinite(value).all() or (key == "std" and (value <= 0).any()):
                _fail(
                    path,
                    f"attribute {key} is {raw.reshape(-1).tolist()[:6]!r}",
                    f"it must be {dim} finite numbers{' > 0' if key == 'std' else ''} (the normalization "
                    f"applied to the data: stored = (x - mean) / std), or absent",
                )


def _check_sample_rate(path, f, kind):
    """The attribute sample_rate, where present: "real" data that are audio frames, a whole number of Hz."""
    if "sample_rate" not in f.attrs:
        return
    value = np.asarray(f.attrs["sample_rate"])
    # one number: not a string (even "16000"), not a bool, not several numbers
    rate = float(value.item()) if value.dtype.kind in "iuf" and value.size == 1 else math.nan
    if kind != "real" or not (math.isfinite(rate) and rate >= 1 and rate.is_integer()):
        _fail(
            path,
            f"attribute sample_rate is {value.tolist()!r} (kind '{kind}')",
            "it marks kind 'real' data as audio, D samples a step, and must be a whole number of Hz "
            "(e.g. 16000), or absent",
        )


def validate_h5(path, fingerprint=None):
    """Check a user's file against the schema; returns {"kind", "dim", "name", "sequences": {split: n}, "warning"}.
    Every value read is fed to `fingerprint` (a fingerprints.Fingerprint), if given: the one full read.
    "warning" is UNSTANDARDIZED for kind 'real' data far from standardized, else None (the data is used as stored).

    Raises DataError naming what is wrong and how to fix it: the first failing check, in the order
    kind; each split's structure, then its offsets; dimensions; normalization; sample rate; values (_scan).
    """
    path = os.fspath(path)
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path} is not a readable HDF5 file ({error}); write it with h5py, {SCHEMA_HINT}") from None
    with f:
        kind = _check_kind(path, f)
        dims, counts, offsets_of = {}, {}, {}
        fingerprint = fingerprint or Fingerprint(SPLITS)
        for split in SPLITS:
            dims[split] = _check_structure(path, f, split)
            offsets_of[split] = _check_offsets(path, split, f[split])
            counts[split] = len(offsets_of[split]) - 1
        dim = _check_dims(path, f, kind, dims, counts)
        _check_normalization(path, f, dim)
        _check_sample_rate(path, f, kind)
        vocabulary = check_file_vocabulary(path, f.attrs, kind, dim)
        # The train split's statistics, where the file does not say how it was normalized (attributes mean, std)
        train = RunningMoments(dim) if kind == "real" and not {"mean", "std"} & set(f.attrs) else None
        for split in SPLITS:  # the values last: the one check that reads the whole file
            moments = train if split == "train" else None
            _scan(path, split, f[split]["data"], offsets_of[split], kind, fingerprint, moments, vocabulary=vocabulary)
        name = as_text(f.attrs.get("name", os.path.splitext(os.path.basename(path))[0]))
    far = unstandardized(train) if train is not None else None
    warning = None if far is None else UNSTANDARDIZED.format(far)
    return {"kind": kind, "dim": dim, "name": name, "sequences": counts, "warning": warning}
