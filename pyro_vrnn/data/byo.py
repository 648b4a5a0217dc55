"""Bring your own data: `--dataset hdf5 --data-dir FILE.h5` trains the VRNN on any file in the schema.

The schema (schema.py's docstring is the contract) is the one every built-in dataset is prepared
into, so a user with new sequences writes one small converter to it and nothing else, e.g.::

    import h5py, numpy as np

    def write_sequences(path, splits, kind="real"):   # splits: {"train": [array [T_i, D], ...], ...}
        splits = {name: [np.asarray(s, np.float32).reshape(len(s), -1) for s in seqs] for name, seqs in splits.items()}
        dim = splits["train"][0].shape[1]
        with h5py.File(path, "w") as f:
            f.attrs["kind"] = kind                       # "real", "binary", "handwriting" or "tokens"
            # kind "tokens": D = 1 integer ids, and f.attrs["vocabulary"] = ["a", "b", ...] (id k: vocabulary[k])
            for split in ("train", "valid", "test"):
                seqs = splits.get(split, [])             # an empty split: data [0, D], offsets [0]
                group = f.create_group(split)
                group["data"] = np.concatenate(seqs) if seqs else np.zeros((0, dim), np.float32)
                group["offsets"] = np.cumsum([0] + [len(s) for s in seqs])

Checksums are optional: `group.create_dataset("data", data=..., chunks=True, fletcher32=True)` (and
the same for offsets) makes a file damaged on disk fail to read instead of giving wrong numbers.

The file is checked once (and again whenever it changes: its size, modification time, inode and change
time are remembered in the cache directory, with the content fingerprint computed as it was checked,
fingerprints.py), then read in place, lazily, by the same SequenceDataset as
every other dataset: nothing is copied. Data is used as stored: standardize real-valued data in
the converter (statistics from the train split) and record them as the `mean` and `std`
attributes so that samples can be mapped back. Real data far from standardized, with neither
attribute, gets one warning line at every load (validate.UNSTANDARDIZED). The checks: validate.py.
"""

import hashlib
import os
import sys

import h5py

from pyro_vrnn.data.fingerprints import Fingerprint
from pyro_vrnn.data.schema import SPLITS, DataError, as_text, summary_line
from pyro_vrnn.data.validate import SCHEMA_HINT, validate_h5

# bump when validate.py's checks change: files validated before are checked again (5: warnings, rates)
VALIDATION_VERSION = 5

# stamp (the file's path, size, date and VALIDATION_VERSION) -> its fingerprint, for validated_fingerprint:
# filled by prepare_hdf5 from the marker or the validation, so a read-only cache needs no second scan.
_FINGERPRINTS = {}


def _stamp(path):
    """What identifies a version of the file: with its size and modification time (which a program may set back, as
    `touch -r` or a copy that keeps dates does), its inode and its change time, which every write moves on and no
    program can set."""
    stat = os.stat(path)
    return f"{path}\n{stat.st_size} {stat.st_mtime_ns} {stat.st_ino} {stat.st_ctime_ns} v{VALIDATION_VERSION}\n"


def train_sizes(path):
    """(sequences, steps, D, kind) of a file's train split from the shapes of its arrays and its "kind" attribute, no
    value read: `--dataset hdf5` sizes its network, and picks its lever against a collapsed z, from them before the
    data loads (train/byo_preset.py). None where the file cannot be read so; validate_h5 then says what is wrong."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):  # a FIFO would block the open forever
        return None
    try:
        with h5py.File(path, "r") as f:
            data, offsets = f["train"]["data"], f["train"]["offsets"]
            sequences, steps = offsets.shape[0] - 1, data.shape[0]
            dim = data.shape[1] if data.ndim == 2 else 1
            kind = as_text(f.attrs.get("kind", ""))
    except (OSError, KeyError, TypeError, ValueError, IndexError, AttributeError, UnicodeDecodeError):
        return None  # e.g. train/data a group
    return (sequences, steps, dim, kind) if sequences > 0 and steps > 0 and dim > 0 else None


def prepare_hdf5(data_dir, cache_dir, verbose=True):
    """Validate the user's file (once per version of it) and return its path: it is read in place."""
    if data_dir is None:
        raise DataError(f"--dataset hdf5 needs --data-dir FILE.h5, a file in the pyro-vrnn schema; {SCHEMA_HINT}")
    path = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if os.path.exists(path) and not os.path.isfile(path):  # a folder, or a FIFO whose reading would never end
        raise DataError(f"{path} is not a regular file: --dataset hdf5 needs --data-dir FILE.h5; {SCHEMA_HINT}")
    if not os.path.isfile(path):
        raise DataError(f"no such file {path}: --dataset hdf5 needs --data-dir FILE.h5; {SCHEMA_HINT}")
    stamp = _stamp(path)
    marker = os.path.join(cache_dir, f"hdf5-{hashlib.sha256(path.encode()).hexdigest()[:8]}.validated")
    # The marker: the stamp, "fingerprint HEX", and the validation's warning line (if any) to repeat at every load
    try:
        with open(marker) as f:
            text = f.read()
        lines = text[len(stamp) :].splitlines() if text.startswith(stamp) else []
        remembered = lines[0].split(" ") if lines else []
        if len(remembered) == 2 and remembered[0] == "fingerprint":
            _FINGERPRINTS[stamp] = remembered[1]
            _warn(path, lines[1].removeprefix("warning ") if len(lines) > 1 else None, verbose)
            return path
    except OSError:
        pass
    fingerprint = Fingerprint(SPLITS)
    warning = validate_h5(path, fingerprint)["warning"]
    _FINGERPRINTS[stamp] = fingerprint.hexdigest()
    if verbose:
        print(summary_line(path, verb="validated", note="your file, read in place"), flush=True)
    _warn(path, warning, verbose)
    try:
        with open(marker, "w") as f:
            f.write(f"{stamp}fingerprint {_FINGERPRINTS[stamp]}\n" + (f"warning {warning}\n" if warning else ""))
    except OSError:  # a read-only cache: the file is valid all the same, and checked again next time
        pass
    return path


def _warn(path, warning, verbose):
    """validate_h5's warning about the file, if any, as one line on stderr (the data is used as it is)."""
    if verbose and warning:
        print(f"warning: {path}: {warning}", file=sys.stderr, flush=True)


def validated_fingerprint(path):
    """The content fingerprint of the user's file at `path` as prepare_hdf5 last validated it, or None."""
    return _FINGERPRINTS.get(_stamp(os.path.abspath(path)))
