"""The one on-disk schema every dataset is prepared into, and its writer (the reader: dataset.py).

The VRNN (Chung et al. 2015) is trained on sets of variable-length sequences x_{<=T}: handwritten
lines of (pen, dx, dy) steps, 200-sample frames of speech, 88-key piano rolls. Every preparer
(iam.py, hershey.py, audio.py, music.py) writes this format, a user's own data comes in it
(`--dataset hdf5 --data-dir FILE.h5`, byo.py), and the training code reads nothing else.

The schema (the public contract)
--------------------------------
One HDF5 file::

    root attributes
      kind     required  "real"        real vectors: Gaussian / Gaussian-mixture emission
                         "binary"      0/1 vectors (e.g. piano rolls): Bernoulli emission
                         "handwriting" D = 3 rows (pen, dx, dy), pen 0/1: Bernoulli x bivariate GMM
                         "tokens"      D = 1: one token id a step (characters, chess moves):
                                       categorical emission over the vocabulary (tokens.py)
      vocabulary  "tokens" only, required: utf-8 strings [V], id k means vocabulary[k]; each token
                         once, none empty. Every id in the data is a whole number 0 <= id < V
      dim      optional  D (checked against the data when present)
      name     optional  a label for logs (default: the file name)
      mean     optional  float [D] }  the normalization ALREADY APPLIED to `data`, i.e. stored =
      std      optional  float [D] }  (x - mean) / std; used to map samples back. Default 0 / 1.
                                     The built-in datasets take them from the train split only.
      sample_rate  optional  Hz, "real" data only: the data are audio, each step a frame of D
                         consecutive samples at this rate (samples are drawn as waveforms and
                         written as WAV; other real data as features against the step). The
                         built-in speech sets (data.SPEECH) are 16 kHz without it
      source   optional  fingerprint of the inputs (built-in caches: rebuilt when it changes)
      fingerprint  optional  sha256 of the stored data and offsets (fingerprints.py), written by
                         StreamWriter and write_h5: a checkpoint keeps it, --resume checks it
    groups "train", "valid", "test"  (all three; a group may hold zero sequences)
      data     float [total_steps, D], or [total_steps] when D = 1: the split's sequences end to
               end (float32 preferred; other float, integer or bool types are read as float32)
      offsets  integer [num_sequences + 1], 0 = offsets[0] < offsets[1] < ... = len(data):
               sequence i is data[offsets[i]:offsets[i+1]] (every sequence has >= 1 step)
      names    optional utf-8 strings [num_sequences] (e.g. IAM line ids, source files)
      text     optional utf-8 strings [num_sequences]: what each sequence says or writes (a handwritten
               line's transcription), for the models conditioned on text (models/conditional.py)
    every value finite; "binary" data and the pen column of "handwriting" data are 0 or 1; "tokens"
    data are ids of the vocabulary, stored as integers (or floats of whole numbers), never normalized.

Checksums: the files written here (StreamWriter, write_h5) store data and offsets with HDF5's
fletcher32 filter, so that bytes damaged on disk fail to read (an OSError from h5py, turned into a
DataError that names the file) instead of being read as plausible numbers. A user's own file may
do the same: create_dataset(..., chunks=True, fletcher32=True).

Writing streams: `StreamWriter` appends rows to resizable datasets in bounded chunks, accumulates
the train split's moments on the way (moments.py: float64, Chan et al.'s pairwise update), and
normalizes in a second pass chunk by chunk; `write_h5` is the all-in-memory convenience on top of
it. Reading (lazily, a sequence at a time) and batching (padding, its mask) are dataset.py's.
"""

import os
import sys

import h5py
import numpy as np

from pyro_vrnn.data.fingerprints import Fingerprint
from pyro_vrnn.data.moments import RunningMoments
from pyro_vrnn.data.tempfiles import remove_orphaned_temps, temp_path

SPLITS = ("train", "valid", "test")
KINDS = ("handwriting", "real", "binary", "tokens")
VOCABULARY = "vocabulary"  # the root attribute of "tokens" files


class DataError(Exception):
    """A dataset is missing, malformed or inconsistent; the message says what to do."""


def as_text(value):
    """An HDF5 string attribute as str (h5py gives bytes for fixed-length strings)."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def check_vocabulary(vocabulary, where="the vocabulary"):
    """A "tokens" file's vocabulary as a list of str: at least one token, none empty, none twice."""
    tokens = [as_text(token) for token in np.asarray(vocabulary, dtype=object).reshape(-1)]
    if not tokens:
        raise DataError(f"{where} is empty; list every token the data uses, id k meaning vocabulary[k]")
    seen = {}
    for k, token in enumerate(tokens):
        if token == "":
            raise DataError(f"{where} has an empty token at id {k}; every token needs at least one character")
        if token in seen:
            raise DataError(f"{where} has {token!r} twice (ids {seen[token]} and {k}); list each token once")
        seen[token] = k
    return tokens


def read_vocabulary(attrs):
    """The vocabulary attribute of an open file's root (h5py attrs) as a list of str, or None where absent."""
    if VOCABULARY not in attrs:
        return None
    return [as_text(token) for token in np.asarray(attrs[VOCABULARY], dtype=object).reshape(-1)]


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


class StreamWriter:
    """Writes the schema sequence by sequence, in bounded memory; atomically (tmp file, then rename).

        with StreamWriter(path, kind="real", name="timit", dim=200, source=fp) as writer:
            for frames in ...:                     # any number of calls per sequence
                writer.append("train", frames)     # [n, D] raw rows
            writer.end_sequence("train", name)     # closes the current train sequence
            mean, std = writer.moments["train"].pooled_stats()
            writer.finish(mean, std)               # normalizes in place, writes attrs, renames

    Rows wait in a buffer of at most `buffer_bytes` before they are appended to the file's
    resizable datasets (`flushes` counts those writes; `peak_buffered_rows` the most rows ever
    held). `finish(mean, std)` standardizes the stored rows in a second pass, chunk by chunk;
    `finish(mean, std, normalize=False)` records stats of data that is already normalized.
    """

    def __init__(self, path, kind, name, dim, source, names=True, buffer_bytes=4 << 20, vocabulary=None, texts=False):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if (kind == "tokens") != (vocabulary is not None) or (kind == "tokens" and int(dim) != 1):
            raise ValueError('kind "tokens", and only it, takes a vocabulary, and its data have D = 1')
        self.vocabulary = None if vocabulary is None else check_vocabulary(vocabulary)
        self.path = os.fspath(path)
        self.kind, self.name, self.dim, self.source = kind, name, int(dim), source
        self.with_names = bool(names)
        self.with_texts = bool(texts)  # a "text" per sequence (its transcription)
        self.buffer_rows = max(1, int(buffer_bytes) // (4 * self.dim))  # float32 rows
        self.moments = {split: RunningMoments(self.dim) for split in SPLITS}
        self.lengths = {split: [] for split in SPLITS}  # finished sequences' lengths (int64 each)
        self.flushes = 0
        self.peak_buffered_rows = 0
        self._rows = {split: [] for split in SPLITS}  # buffered row blocks
        self._buffered = {split: 0 for split in SPLITS}
        self._open_length = {split: 0 for split in SPLITS}  # rows of the sequence being written
        self._ends = {split: [] for split in SPLITS}  # buffered offsets
        self._names = {split: [] for split in SPLITS}  # buffered names
        self._texts = {split: [] for split in SPLITS}  # buffered texts
        self._total = {split: 0 for split in SPLITS}  # rows written or buffered
        self.fingerprint = Fingerprint(SPLITS)  # of the stored values, fed as they are written
        for split in SPLITS:
            self.fingerprint.update(split, "offsets", [0])
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        remove_orphaned_temps(self.path)  # a killed build's half-written file
        self._tmp = temp_path(self.path)
        self._file = h5py.File(self._tmp, "w")
        # Chunks of about 256 KB: a 0.5 s speech piece (40 x 200 floats) is one chunk read. Each
        # chunk carries a fletcher32 checksum (4 bytes): damage on disk fails the read, never
        # passes as numbers (the names are variable-length strings, which take no filter).
        chunk_rows = max(1, min(self.buffer_rows, (256 << 10) // (4 * self.dim)))
        for split in SPLITS:
            group = self._file.create_group(split)
            group.create_dataset(
                "data",
                shape=(0, self.dim),
                maxshape=(None, self.dim),
                dtype=np.float32,
                chunks=(chunk_rows, self.dim),
                fletcher32=True,
            )
            group.create_dataset(
                "offsets", data=np.zeros(1, dtype=np.int64), maxshape=(None,), chunks=(4096,), fletcher32=True
            )
            for key, wanted in (("names", self.with_names), ("text", self.with_texts)):
                if wanted:
                    group.create_dataset(
                        key, shape=(0,), maxshape=(None,), chunks=(4096,), dtype=h5py.string_dtype("utf-8")
                    )

    # -- adding rows --------------------------------------------------------------------------

    def append(self, split, rows):
        """Add rows [n, D] (raw values) to the sequence being written in `split`."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, self.dim)
        if len(rows) == 0:
            return
        self._rows[split].append(rows)
        self._buffered[split] += len(rows)
        self._open_length[split] += len(rows)
        self._total[split] += len(rows)
        self.moments[split].update(rows)
        buffered = sum(self._buffered.values())
        self.peak_buffered_rows = max(self.peak_buffered_rows, buffered)
        if buffered >= self.buffer_rows:
            self.flush()

    def end_sequence(self, split, name=None, text=None):
        """Close the sequence being written in `split` (its rows are those appended since the last end)."""
        if self.with_names and name is None:
            raise ValueError("this writer stores names: end_sequence needs one")
        if self.with_texts and text is None:
            raise ValueError("this writer stores texts: end_sequence needs one")
        if self.with_texts:
            self._texts[split].append(str(text))
        self.lengths[split].append(self._open_length[split])
        self._open_length[split] = 0
        self._ends[split].append(self._total[split])
        if self.with_names:
            self._names[split].append(str(name))

    def add(self, split, rows, name=None, text=None):
        """append + end_sequence: one whole sequence [T, D]."""
        self.append(split, rows)
        self.end_sequence(split, name, text)

    def flush(self):
        """Append the buffered rows, offsets and names to the file's datasets."""
        for split in SPLITS:
            group = self._file[split]
            if self._rows[split]:
                block = np.concatenate(self._rows[split])
                data = group["data"]
                start = data.shape[0]
                data.resize(start + len(block), axis=0)
                data[start:] = block
                self.fingerprint.update(split, "data", block)
                self._rows[split], self._buffered[split] = [], 0
                self.flushes += 1
            if self._ends[split]:
                self.fingerprint.update(split, "offsets", self._ends[split])
            for key, buffer in (
                ("offsets", self._ends[split]),
                ("names", self._names[split]),
                ("text", self._texts[split]),
            ):
                if buffer:
                    dataset = group[key]
                    start = dataset.shape[0]
                    dataset.resize(start + len(buffer), axis=0)
                    dataset[start:] = buffer
                    buffer.clear()

    # -- finishing ----------------------------------------------------------------------------

    def finish(self, mean=None, std=None, normalize=True):
        """Flush, standardize the stored rows with (mean, std) unless normalize=False, write the
        root attributes and move the file into place. Returns the path."""
        for split in SPLITS:
            if self._open_length[split]:
                raise ValueError(f"{split}: {self._open_length[split]} rows appended after the last end_sequence")
        self.flush()
        mean = (
            np.zeros(self.dim)
            if mean is None
            else np.broadcast_to(np.asarray(mean, dtype=np.float64), (self.dim,)).copy()
        )
        std = (
            np.ones(self.dim) if std is None else np.broadcast_to(np.asarray(std, dtype=np.float64), (self.dim,)).copy()
        )
        if normalize and (np.any(mean != 0) or np.any(std != 1)):
            rows_per_chunk = max(1, self.buffer_rows // 2)  # as float64: the size of the write buffer
            for split in SPLITS:
                data = self._file[split]["data"]
                self.fingerprint.restart(split, "data")  # the rows are rewritten: hash what is stored now
                for start in range(0, data.shape[0], rows_per_chunk):
                    block = ((data[start : start + rows_per_chunk].astype(np.float64) - mean) / std).astype(np.float32)
                    data[start : start + len(block)] = block
                    self.fingerprint.update(split, "data", block)
        attrs = self._file.attrs
        attrs["kind"], attrs["dim"], attrs["name"] = self.kind, self.dim, self.name
        attrs["mean"], attrs["std"], attrs["source"] = mean, std, self.source
        attrs["fingerprint"] = self.fingerprint.hexdigest()
        if self.vocabulary is not None:
            attrs.create(VOCABULARY, self.vocabulary, dtype=h5py.string_dtype("utf-8"))
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self):
        """Drop the half-written file (the previous cache, if any, stays as it was)."""
        try:
            if self._file.id.valid:
                self._file.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self._file.id.valid or os.path.exists(self._tmp):
            self.abort()
        return False


def write_h5(path, splits, kind, name, mean, std, source, names=None, vocabulary=None, texts=None):
    """Write `splits` (split -> list of [T_i, D] arrays, already normalized) to `path`, atomically;
    `names` and `texts`, if given, map each split to one string per sequence.

    The file is written next to `path` and moved over it with `os.replace`, so a reader never
    sees half a file, and a crash leaves the previous cache intact. `mean`/`std` record the
    normalization that was applied; `vocabulary` is that of kind "tokens" data (list of str).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    dim = mean.shape[0]
    if std.shape != (dim,):
        raise ValueError(f"mean and std must both have shape [D], got {mean.shape} and {std.shape}")
    for what, strings in (("names", names), ("texts", texts)):
        for split in SPLITS if strings is not None else ():
            if len(list(strings.get(split, []))) != len(splits.get(split, [])):
                raise ValueError(
                    f"{split}: {len(list(strings.get(split, [])))} {what} for {len(splits.get(split, []))} sequences"
                )
    with StreamWriter(
        path, kind, name, dim, source, names=names is not None, vocabulary=vocabulary, texts=texts is not None
    ) as writer:
        for split in SPLITS:
            split_names = list(names.get(split, [])) if names is not None else None
            split_texts = list(texts.get(split, [])) if texts is not None else None
            for i, sequence in enumerate(splits.get(split, [])):
                writer.add(
                    split,
                    sequence,
                    split_names[i] if split_names is not None else None,
                    split_texts[i] if split_texts is not None else None,
                )
        writer.finish(mean, std, normalize=False)


# A cache up to this size is read whole at every start, which verifies every chunk's checksum
# (~0.1 s for 128 MiB from the page cache), so that a damaged one is rebuilt before training
# starts. A bigger one (a speech corpus: gigabytes) is not scanned on every start: its chunks are
# verified as they are read, and a damaged one stops the run with a DataError naming the file.
VERIFY_MAX_BYTES = 128 << 20


def has_checksums(f):
    """Whether an open prepared file stores every split's data and offsets with fletcher32 checksums."""
    return all(f[split][key].fletcher32 for split in SPLITS for key in ("data", "offsets"))


def damage(path, max_bytes=None):
    """None, or where the prepared file at `path` fails a checksum. Files over `max_bytes` (default
    VERIFY_MAX_BYTES) have only their offsets verified: their data is verified as it is read."""
    max_bytes = VERIFY_MAX_BYTES if max_bytes is None else max_bytes
    whole = os.path.getsize(path) <= max_bytes
    with h5py.File(path, "r") as f:
        for split in SPLITS:
            for key in ("data", "offsets") if whole else ("offsets",):
                dataset = f[split][key]
                row_values = max(1, int(np.prod(dataset.shape[1:], dtype=np.int64)))
                rows = max(1, (8 << 20) // (dataset.dtype.itemsize * row_values))  # 8 MB at a time
                try:
                    for start in range(0, dataset.shape[0], rows):
                        dataset[start : start + rows]
                except OSError as error:
                    return f"{split}/{key} fails its checksum ({error})"
    return None


def cached_source(path):
    """The `source` fingerprint stored in the cache at `path`, or None if it is absent, unreadable,
    without checksums (an older version's cache) or damaged: then the caller rebuilds it."""
    try:
        with h5py.File(path, "r") as f:
            if not all(split in f for split in SPLITS) or not has_checksums(f):
                return None
            source = str(f.attrs["source"])
        problem = damage(path)
    except (OSError, KeyError):
        return None
    if problem is not None:
        print(f"the cache file {path} is damaged: {problem}; building it again", file=sys.stderr, flush=True)
        return None
    return source


def summary_line(path, verb="prepared", what="sequences", unit="steps", note=""):
    """The one-line summary printed when a dataset is prepared: sequences per split, length range
    per split, dimension, kind and path, e.g.

        prepared timit: train 26018 / valid 231 / test 1680 sequences; length 40-40 / 61-385 / 54-390 frames;
        dim 200 (real); /home/me/.cache/pyro-vrnn/timit-1a2b3c4d.h5 (5% of train held out, seed 0)
    """
    with h5py.File(path, "r") as f:
        name = as_text(f.attrs.get("name", os.path.splitext(os.path.basename(path))[0]))
        kind = as_text(f.attrs["kind"])
        vocabulary = read_vocabulary(f.attrs)
        if vocabulary is not None:
            kind += f", {len(vocabulary)} tokens"
        shape = f["train"]["data"].shape
        dim = int(f.attrs["dim"]) if "dim" in f.attrs else (int(shape[1]) if len(shape) == 2 else 1)
        counts, ranges = [], []
        for split in SPLITS:
            lengths = np.diff(np.asarray(f[split]["offsets"][:], dtype=np.int64))
            counts.append(f"{split} {len(lengths)}")
            ranges.append(f"{lengths.min()}-{lengths.max()}" if len(lengths) else "none")
    return (
        f"{verb} {name}: {' / '.join(counts)} {what}; length {' / '.join(ranges)} {unit}; "
        f"dim {dim} ({kind}); {path}{f' ({note})' if note else ''}"
    )
