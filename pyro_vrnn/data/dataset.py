"""The one reader of the schema (schema.py), and the batches the VRNN is trained on.

`SequenceDataset` is one split of a prepared file, read lazily: only the offsets are held in
memory, and `dataset[i]` reads sequence i's rows [T_i, D] (a line of handwriting, an utterance's
200-sample frames, a chorale's piano roll), so a 300-hour speech corpus is never loaded whole.
Sequences are padded only when a batch is formed (`pad_batch`): the mask marks the real steps,
and the ELBO sums over them alone (docs/paper.md: "padded with a mask"). `LengthBucketSampler`
puts sequences of similar length together so that little of each batch is padding.
"""

import os

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pyro_vrnn.data.schema import SPLITS, DataError, as_text, read_vocabulary


class SequenceDataset(Dataset):
    """One split of a prepared file: `dataset[i]` is sequence i as a float32 tensor [T_i, D].

    The metadata (lengths, statistics) is read once, here. The HDF5 file itself is opened lazily
    on the first `__getitem__` of each process, and reopened when the process id changes: an
    HDF5 handle must not be shared across fork, and DDP ranks and DataLoader workers each need
    their own. Pickling drops the handle for the same reason.
    """

    # What to do about a file whose chunks fail to read (load() says which kind of file it is).
    DAMAGED_CACHE = "delete it and run again: it is rebuilt from the data"
    DAMAGED_FILE = "write it again with your converter (or restore it from a copy)"

    def __init__(self, path, split, if_damaged=DAMAGED_CACHE, fingerprint=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path = os.fspath(path)
        self.split = split
        self.if_damaged = if_damaged
        if not os.path.exists(self.path):
            raise DataError(f"no prepared dataset at {self.path}; run pyro_vrnn.data.prepare(name) first")
        try:
            f = h5py.File(self.path, "r")
        except OSError as error:
            raise DataError(
                f"{self.path} is not a prepared pyro-vrnn dataset ({error}); delete it and prepare the dataset again"
            ) from None
        try:
            with f:
                group = f[split]
                shape = group["data"].shape
                self.kind = as_text(f.attrs["kind"])
                self.dim = int(f.attrs["dim"]) if "dim" in f.attrs else (int(shape[1]) if len(shape) == 2 else 1)
                self.name = as_text(f.attrs.get("name", os.path.splitext(os.path.basename(self.path))[0]))
                self.mean = (
                    np.asarray(f.attrs["mean"], dtype=np.float64).reshape(-1)
                    if "mean" in f.attrs
                    else np.zeros(self.dim)
                )
                self.std = (
                    np.asarray(f.attrs["std"], dtype=np.float64).reshape(-1) if "std" in f.attrs else np.ones(self.dim)
                )
                self.vocabulary = read_vocabulary(f.attrs)  # kind "tokens": id k is vocabulary[k]; else None
                # Hz of the audio that "real" steps are frames of (schema.py); None: the data are not sound
                self.sample_rate = int(f.attrs["sample_rate"]) if "sample_rate" in f.attrs else None
                self._has_names = "names" in group
                self.has_texts = "text" in group  # a transcription per sequence (schema.py)
                # The content fingerprint, one per file (a user's file has it from its validation, byo.py).
                self.fingerprint = fingerprint or (
                    as_text(f.attrs["fingerprint"]) if "fingerprint" in f.attrs else None
                )
                offsets = group["offsets"]
                try:
                    self.offsets = np.asarray(offsets[:], dtype=np.int64)
                except OSError as error:  # a chunk fails its checksum, or the file is cut short
                    raise self.damaged(f"{split}/offsets", error) from None
        except KeyError as error:
            raise DataError(
                f"{self.path} is not a prepared pyro-vrnn dataset ({error}); delete it and prepare the dataset again"
            ) from None
        self.lengths = np.diff(self.offsets)
        self._names = self._texts = None
        self._file = self._data = self._pid = None

    def damaged(self, what, error):
        """The one-line DataError for a part of the file that cannot be read."""
        return DataError(f"the file {self.path} is damaged: {what} cannot be read ({error}); {self.if_damaged}")

    def _strings(self, key):
        with h5py.File(self.path, "r") as f:
            try:
                strings = f[self.split][key][:]
            except OSError as error:
                raise self.damaged(f"{self.split}/{key}", error) from None
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in strings]

    @property
    def names(self):
        """The sequences' names (list of str), or None; read on first use (a big corpus has millions)."""
        if self._has_names and self._names is None:
            self._names = self._strings("names")
        return self._names

    @property
    def texts(self):
        """The sequences' texts (list of str: what each line writes), or None where the file has none."""
        if self.has_texts and self._texts is None:
            self._texts = self._strings("text")
        return self._texts

    def __len__(self):
        return len(self.lengths)

    def _open(self):
        if self._file is None or self._pid != os.getpid():
            # After a fork the inherited handle belongs to the parent: open our own.
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as error:  # deleted or moved since the split was read (a cache cleaned while training)
                again = (
                    "run again: the cache is rebuilt from the data (a run resumes with --resume)"
                    if self.if_damaged == self.DAMAGED_CACHE
                    else "put it back and run again (a run resumes with --resume)"
                )
                reason = os.strerror(error.errno) if error.errno else error  # h5py's own text is long
                raise DataError(
                    f"cannot open {self.path} to read its {self.split} split ({reason}); was it "
                    f"deleted or moved while in use? {again}"
                ) from None
            self._data = self._file[self.split]["data"]
            self._pid = os.getpid()

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for the {self.split} split ({n} sequences)")
        i = int(i) % n
        self._open()
        try:
            x = self._data[self.offsets[i] : self.offsets[i + 1]]
        except OSError as error:  # a chunk fails its checksum: never read damaged bytes as numbers
            raise self.damaged(f"{self.split} sequence {i}", error) from None
        if x.ndim == 1:  # a one-dimensional series stored flat
            x = x[:, None]
        return torch.from_numpy(np.asarray(x, dtype=np.float32))

    def close(self):
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._data = self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = state["_data"] = state["_pid"] = None
        return state

    def __repr__(self):
        return (
            f"SequenceDataset({self.name}/{self.split}: {len(self)} sequences of dim {self.dim}, "
            f"kind {self.kind}, {self.path})"
        )


def pad_batch(sequences):
    """A list of [T_i, D] sequences -> (x [B, T_max, D] float32 zero-padded, mask [B, T_max] bool)."""
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    sequences = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    dims = {s.shape[-1] for s in sequences}
    if len(dims) != 1 or any(s.dim() != 2 for s in sequences):
        raise ValueError(
            f"pad_batch needs [T_i, D] sequences of one D, got shapes {[tuple(s.shape) for s in sequences][:5]}"
        )
    lengths = torch.tensor([len(s) for s in sequences])
    x = torch.zeros(len(sequences), int(lengths.max()), dims.pop())
    for b, s in enumerate(sequences):
        x[b, : len(s)] = s
    mask = torch.arange(x.shape[1]) < lengths[:, None]
    return x, mask


class LengthBucketSampler(Sampler):
    """Batches of indices whose sequences have similar lengths, for little padding.

    Each epoch: shuffle the indices, cut them into buckets of about `BUCKET_BATCHES` batches,
    sort each bucket by length and cut it into batches, then shuffle the order of the batches.
    The result depends only on (seed, epoch), so every DDP rank computes the same batches and
    takes every `world_size`-th one; `set_epoch` changes the shuffle, as in DistributedSampler.
    With shuffle=False the batches simply follow the sorted lengths (evaluation).

    Batches hold at most `batch_size` sequences. Unless drop_last, their sizes are balanced
    (e.g. 100 sequences in batches of 32 -> 4 batches of 25) and their number rounded up to a
    multiple of world_size, so every rank gets the same number of batches and every sequence is
    used exactly once per epoch; only with fewer sequences than batches needed (e.g. fewer
    sequences than ranks) are some repeated. drop_last keeps only full batches.
    """

    BUCKET_BATCHES = 50

    def __init__(self, lengths, batch_size, shuffle=True, seed=0, rank=0, world_size=1, drop_last=False):
        self.lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} and world_size {world_size}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def batch_sizes(self):
        n, size, world = len(self.lengths), self.batch_size, self.world_size
        if self.drop_last:
            return [size] * ((n // size) // world * world)
        num_batches = -(-n // size)  # ceil
        num_batches = -(-num_batches // world) * world  # a multiple of world_size
        if num_batches == 0:
            return []
        base, extra = divmod(max(n, num_batches), num_batches)
        return [base + 1] * extra + [base] * (num_batches - extra)

    def batches(self, epoch=None):
        """All batches of this epoch (or of `epoch`), for all ranks (lists of indices)."""
        sizes = self.batch_sizes()
        if not sizes:
            return []
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch)])
        if self.shuffle:
            order = rng.permutation(len(self.lengths))
        else:
            order = np.argsort(self.lengths, kind="stable")
        order = np.resize(order, sum(sizes))  # truncates (drop_last) or, rarely, wraps around
        batches, start = [], 0
        for g in range(0, len(sizes), self.BUCKET_BATCHES):
            group = sizes[g : g + self.BUCKET_BATCHES]
            bucket = order[start : start + sum(group)]
            start += sum(group)
            if self.shuffle:
                bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            batches += np.split(bucket, np.cumsum(group)[:-1])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return [[int(i) for i in batch] for batch in batches]

    def __iter__(self):
        return iter(self.batches()[self.rank :: self.world_size])

    def __len__(self):
        return len(self.batch_sizes()) // self.world_size
