"""The content fingerprint of a prepared file: what a checkpoint remembers of the data it was trained on,
so that `--resume` with other data of the same kind, dimension, normalization and size is refused.

It is a sha256 of every split's stored values and offsets, fed chunk by chunk in order, as the values
are written (schema.StreamWriter, the built-in caches: kept as their root attribute `fingerprint`) or
read (validate.validate_h5, a user's file: kept in its validated marker in the cache directory). So it is
computed once per version of the data, never at every start. Values are hashed as the float32 numbers
training reads (SequenceDataset), so a file's storage type and byte order do not change it, and a
float32 block is hashed in place, without a copy (preparation runs in bounded memory).
"""

import hashlib

import h5py
import numpy as np


class Fingerprint:
    """A running sha256 per split and part ("data", "offsets"); `hexdigest` combines them."""

    def __init__(self, splits):
        self.splits = tuple(splits)
        self.digests = {}
        for split in self.splits:
            self.restart(split, "data")
            self.restart(split, "offsets")

    def restart(self, split, part):
        """Forget what was fed of split/part (a normalization pass rewrites the data)."""
        self.digests[split, part] = hashlib.sha256()

    def update(self, split, part, values):
        """Feed the next values of split/part: data rows, or offsets, in the order they are stored."""
        dtype = "<f4" if part == "data" else "<i8"
        self.digests[split, part].update(np.ascontiguousarray(values, dtype=dtype))

    def hexdigest(self):
        total = hashlib.sha256()
        for split in self.splits:
            for part in ("data", "offsets"):
                total.update(f"{split}/{part} {self.digests[split, part].hexdigest()}\n".encode())
        return total.hexdigest()


def file_fingerprint(path, splits=("train", "valid", "test"), chunk_rows=1 << 16):
    """The fingerprint of a prepared file, computed by reading it back (to check the one stored with it)."""
    fingerprint = Fingerprint(splits)
    with h5py.File(path, "r") as f:
        for split in splits:
            data = f[split]["data"]
            for start in range(0, data.shape[0], chunk_rows):
                fingerprint.update(split, "data", data[start : start + chunk_rows])
            fingerprint.update(split, "offsets", f[split]["offsets"][:])
    return fingerprint.hexdigest()
