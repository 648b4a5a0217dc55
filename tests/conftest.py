"""Shared fixtures: the embedded handwriting set, built once per test session in a temporary cache."""
import os

# The test models are tiny: one thread each is fastest, and it keeps the suite quick when other
# processes share the machine. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def hershey_cache(tmp_path_factory):
    """Point the data cache at a temporary directory (subprocesses inherit it) and build hershey there."""
    from pyro_vrnn import data as datasets

    cache = tmp_path_factory.mktemp("pyro-vrnn-cache")
    previous = os.environ.get("PYRO_VRNN_CACHE")
    os.environ["PYRO_VRNN_CACHE"] = str(cache)
    datasets.prepare("hershey")
    yield cache
    if previous is None:
        os.environ.pop("PYRO_VRNN_CACHE", None)
    else:
        os.environ["PYRO_VRNN_CACHE"] = previous


@pytest.fixture(scope="session")
def small_handwriting(hershey_cache, tmp_path_factory):
    """A 96/16/16-line cut of the embedded set as a user HDF5 file (`--dataset hdf5 --data-dir FILE`):
    runs that must cross epochs stay a few seconds long."""
    from pyro_vrnn import data as datasets
    from pyro_vrnn.data.schema import write_h5

    splits = datasets.load("hershey", verbose=False)
    sizes = {"train": 96, "valid": 16, "test": 16}
    path = tmp_path_factory.mktemp("small") / "small-hershey.h5"
    write_h5(str(path), {s: [splits[s][i].numpy() for i in range(n)] for s, n in sizes.items()},
             kind="handwriting", name="small-hershey", mean=splits["train"].mean, std=splits["train"].std,
             source="tests")
    return str(path)
