"""The datasets of the VRNN experiments, prepared once into one HDF5 schema (schema.py).

    prepare(name, data_dir=None, cache_dir=None) -> path of the prepared .h5 (built or reused)
    load(name, data_dir=None, cache_dir=None)    -> {"train" | "valid" | "test": SequenceDataset}

Datasets (DATASETS):
    hershey  synthetic handwriting from the Hershey script fonts, generated here (the default;
             no download). Same format and preparation as IAM-OnDB.
    iam      IAM-OnDB lineStrokes XML files (the paper's handwriting set; needs registration).
             data_dir default: ./data/iam-ondb

The cache lives in $PYRO_VRNN_CACHE, or ~/.cache/pyro-vrnn. Preparation holds a file lock, so
DDP ranks that call `load` together build the cache once and then share it.
"""
import contextlib
import hashlib
import os

from pyro_vrnn.data.hershey import prepare_hershey
from pyro_vrnn.data.iam import parse_line_strokes, offsets_to_strokes, prepare_iam
from pyro_vrnn.data.schema import (DataError, LengthBucketSampler, SequenceDataset, pad_batch,
                                   write_h5)

DEFAULT_IAM_DIR = os.path.join("data", "iam-ondb")


def default_cache_dir():
    return os.environ.get("PYRO_VRNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pyro-vrnn")


def _prepare_hershey(data_dir, cache_dir, verbose, num_lines=3000, seed=0):
    return prepare_hershey(cache_dir, num_lines=num_lines, seed=seed, data_dir=data_dir, verbose=verbose)


def _prepare_iam(data_dir, cache_dir, verbose, seed=0):
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_IAM_DIR))
    # One cache per IAM-OnDB copy, so that two copies do not keep rebuilding each other's cache.
    tag = hashlib.sha256(data_dir.encode()).hexdigest()[:8]
    return prepare_iam(data_dir, os.path.join(cache_dir, f"iam-{tag}.h5"), seed=seed, name="iam",
                       verbose=verbose)


# name -> preparer(data_dir, cache_dir, verbose, **options) -> path of the .h5 file
DATASETS = {"hershey": _prepare_hershey, "iam": _prepare_iam}


@contextlib.contextmanager
def _lock(path):
    """An exclusive lock on `path` (POSIX); elsewhere, no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(name, data_dir=None, cache_dir=None, verbose=True, **options):
    """Prepare dataset `name` into the cache (or reuse it); returns the .h5 path.

    Prints one summary line when it (re)builds. `options` go to the preparer (hershey:
    num_lines, seed; iam: seed of the random split used when there are no split lists).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    os.makedirs(cache_dir, exist_ok=True)
    with _lock(os.path.join(cache_dir, f".{name}.lock")):
        return DATASETS[name](data_dir, cache_dir, verbose, **options)


def load(name, data_dir=None, cache_dir=None, verbose=True, **options):
    """{"train", "valid", "test"} -> SequenceDataset of the prepared dataset `name`."""
    path = prepare(name, data_dir, cache_dir, verbose=verbose, **options)
    return {split: SequenceDataset(path, split) for split in ("train", "valid", "test")}


__all__ = ["DATASETS", "DataError", "LengthBucketSampler", "SequenceDataset", "load", "offsets_to_strokes",
           "pad_batch", "parse_line_strokes", "prepare", "prepare_hershey", "prepare_iam", "write_h5",
           "default_cache_dir"]
