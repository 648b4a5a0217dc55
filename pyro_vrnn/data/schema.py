"""The one on-disk schema every dataset is prepared into, and the one reader of it.

The VRNN (Chung et al. 2015) is trained on sets of variable-length sequences x_{<=T}: handwritten
lines of (pen, dx, dy) steps, speech frames, piano rolls. Every preparer (iam.py, hershey.py, ...)
ends by calling `write_h5`, so the training code sees a single format:

    HDF5 file, root attrs  kind ("handwriting" | "real" | "binary"), dim (D), name,
                           mean [D], std [D]  (the normalization already applied, TRAIN split only),
                           source             (fingerprint of the inputs, for cache invalidation)
    groups train/valid/test  data    float32 [total_steps, D]  (all sequences end to end)
                             offsets int64   [num_sequences + 1]  (sequence i = data[offsets[i]:offsets[i+1]])
                             names   utf-8   [num_sequences]      (optional, e.g. IAM line ids)

Sequences are padded only when a batch is formed (`pad_batch`): the mask marks the real steps,
and the ELBO sums over them alone (PAPER.md: "padding + mask"). `LengthBucketSampler` puts lines
of similar length together so that little of each batch is padding.
"""
import os

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

SPLITS = ("train", "valid", "test")
KINDS = ("handwriting", "real", "binary")


class DataError(Exception):
    """A dataset is missing, malformed or inconsistent; the message says what to do."""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def write_h5(path, splits, kind, name, mean, std, source, names=None):
    """Write `splits` (split -> list of [T_i, D] arrays, already normalized) to `path`, atomically.

    The file is written next to `path` and moved over it with `os.replace`, so a reader never
    sees half a file, and a crash leaves the previous cache intact.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    dim = mean.shape[0]
    if std.shape != (dim,):
        raise ValueError(f"mean and std must both have shape [D], got {mean.shape} and {std.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = kind
            f.attrs["dim"] = dim
            f.attrs["name"] = name
            f.attrs["mean"] = mean
            f.attrs["std"] = std
            f.attrs["source"] = source
            for split in SPLITS:
                sequences = [np.asarray(s, dtype=np.float32).reshape(-1, dim)
                             for s in splits.get(split, [])]
                lengths = np.array([len(s) for s in sequences], dtype=np.int64)
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                data = (np.concatenate(sequences) if sequences
                        else np.zeros((0, dim), dtype=np.float32))
                group = f.create_group(split)
                group.create_dataset("data", data=data)
                group.create_dataset("offsets", data=offsets)
                if names is not None:
                    split_names = list(names.get(split, []))
                    if len(split_names) != len(sequences):
                        raise ValueError(f"{split}: {len(split_names)} names for {len(sequences)} sequences")
                    group.create_dataset("names", data=split_names, dtype=h5py.string_dtype("utf-8"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cached_source(path):
    """The `source` fingerprint stored in the cache at `path`, or None if it is absent or unreadable."""
    try:
        with h5py.File(path, "r") as f:
            if not all(split in f for split in SPLITS):
                return None
            return str(f.attrs["source"])
    except (OSError, KeyError):
        return None


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

class SequenceDataset(Dataset):
    """One split of a prepared file: `dataset[i]` is sequence i as a float32 tensor [T_i, D].

    The metadata (lengths, statistics) is read once, here. The HDF5 file itself is opened lazily
    on the first `__getitem__` of each process, and reopened when the process id changes: an
    HDF5 handle must not be shared across fork, and DDP ranks and DataLoader workers each need
    their own. Pickling drops the handle for the same reason.
    """

    def __init__(self, path, split):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.path = os.fspath(path)
        self.split = split
        if not os.path.exists(self.path):
            raise DataError(f"no prepared dataset at {self.path}; run pyro_vrnn.data.prepare(name) first")
        try:
            with h5py.File(self.path, "r") as f:
                self.kind = str(f.attrs["kind"])
                self.dim = int(f.attrs["dim"])
                self.name = str(f.attrs["name"])
                self.mean = np.asarray(f.attrs["mean"], dtype=np.float64)
                self.std = np.asarray(f.attrs["std"], dtype=np.float64)
                self.offsets = np.asarray(f[split]["offsets"][:], dtype=np.int64)
                self.names = ([n.decode("utf-8") if isinstance(n, bytes) else str(n)
                               for n in f[split]["names"][:]] if "names" in f[split] else None)
        except (OSError, KeyError) as error:
            raise DataError(f"{self.path} is not a prepared pyro-vrnn dataset ({error}); "
                            f"delete it and prepare the dataset again") from None
        self.lengths = np.diff(self.offsets)
        self._file = self._data = self._pid = None

    def __len__(self):
        return len(self.lengths)

    def _open(self):
        if self._file is None or self._pid != os.getpid():
            # After a fork the inherited handle belongs to the parent: open our own.
            self._file = h5py.File(self.path, "r")
            self._data = self._file[self.split]["data"]
            self._pid = os.getpid()

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sequence {i} out of range for the {self.split} split ({n} sequences)")
        i = int(i) % n
        self._open()
        return torch.from_numpy(self._data[self.offsets[i]:self.offsets[i + 1]])

    def close(self):
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = self._data = self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = state["_data"] = state["_pid"] = None
        return state

    def __repr__(self):
        return (f"SequenceDataset({self.name}/{self.split}: {len(self)} sequences of dim {self.dim}, "
                f"kind {self.kind}, {self.path})")


def pad_batch(sequences):
    """A list of [T_i, D] sequences -> (x [B, T_max, D] float32 zero-padded, mask [B, T_max] bool)."""
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    sequences = [torch.as_tensor(s, dtype=torch.float32) for s in sequences]
    dims = {s.shape[-1] for s in sequences}
    if len(dims) != 1 or any(s.dim() != 2 for s in sequences):
        raise ValueError(f"pad_batch needs [T_i, D] sequences of one D, got shapes "
                         f"{[tuple(s.shape) for s in sequences][:5]}")
    lengths = torch.tensor([len(s) for s in sequences])
    x = torch.zeros(len(sequences), int(lengths.max()), dims.pop())
    for b, s in enumerate(sequences):
        x[b, :len(s)] = s
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

    def _batch_sizes(self):
        n, size, world = len(self.lengths), self.batch_size, self.world_size
        if self.drop_last:
            return [size] * ((n // size) // world * world)
        num_batches = -(-n // size)  # ceil
        num_batches = -(-num_batches // world) * world  # a multiple of world_size
        if num_batches == 0:
            return []
        base, extra = divmod(max(n, num_batches), num_batches)
        return [base + 1] * extra + [base] * (num_batches - extra)

    def batches(self):
        """All batches of this epoch, for all ranks (lists of indices)."""
        sizes = self._batch_sizes()
        if not sizes:
            return []
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = rng.permutation(len(self.lengths))
        else:
            order = np.argsort(self.lengths, kind="stable")
        order = np.resize(order, sum(sizes))  # truncates (drop_last) or, rarely, wraps around
        batches, start = [], 0
        for g in range(0, len(sizes), self.BUCKET_BATCHES):
            group = sizes[g:g + self.BUCKET_BATCHES]
            bucket = order[start:start + sum(group)]
            start += sum(group)
            if self.shuffle:
                bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            batches += np.split(bucket, np.cumsum(group)[:-1])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return [[int(i) for i in batch] for batch in batches]

    def __iter__(self):
        return iter(self.batches()[self.rank::self.world_size])

    def __len__(self):
        return len(self._batch_sizes()) // self.world_size
