"""Shared helpers and fixtures: small models and data for the ELBO checks, small files in the schema
(tiny_h5), the embedded handwriting set built once per test session in a temporary cache, loaders for
the run/ scripts, and the fault tests' tools (a dead process id, snapshots of a folder, a read-only
folder, the one-line error check)."""

import os

# The test models are tiny: one thread each is fastest, and it keeps the suite quick when other
# processes share the machine. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import builtins  # noqa: E402
import contextlib  # noqa: E402
import errno  # noqa: E402
import hashlib  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_vrnn import models  # noqa: E402
from pyro_vrnn.data.schema import write_h5  # noqa: E402
from pyro_vrnn.train.config import make_config  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(model, **kw):
    return make_config(
        "test",
        model=model,
        hidden=7,
        z_dim=3,
        x_features=5,
        z_features=4,
        enc_hidden=6,
        prior_hidden=6,
        dec_hidden=5,
        components=3,
        **kw,
    )


def make_data(kind, batch=4, steps=6, dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "handwriting":
        x = torch.cat(
            [
                torch.bernoulli(torch.full((batch, steps, 1), 0.3), generator=g),
                torch.randn(batch, steps, 2, generator=g),
            ],
            dim=-1,
        )
    elif kind == "binary":
        x = torch.bernoulli(torch.full((batch, steps, dim), 0.4), generator=g)
    else:
        x = torch.randn(batch, steps, dim, generator=g)
    lengths = torch.tensor([steps, steps - 2, 1, steps - 1][:batch])
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    return x, mask


def build(model_name, kind, dim, scoring="batched", **kw):
    torch.manual_seed(1)
    config = small_config(model_name, scoring=scoring, **kw)
    model, guide, vrnn = models.build(config, kind, dim)
    for p in vrnn.parameters():  # larger weights than the default init: every term matters
        p.data.normal_(0, 0.4)
    return config, model, guide, vrnn


# ---- Small data sets in the project's schema ----------------------------------------------------


def tiny_h5(path, kind, dim, steps, seed=0, sample_rate=None):
    """A small data set in the project's schema: frames of a sine in noise ("real"; audio frames at
    `sample_rate` when it is given, its root attribute) or piano-roll bits ("binary")."""
    rng = np.random.default_rng(seed)

    def sequence(length):
        if kind == "binary":
            return (rng.random((length, dim)) < 0.1).astype(np.float32)
        t = np.arange(length * dim) / 16000.0
        wave_ = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(t.shape)
        return wave_.reshape(length, dim)

    splits = {
        split: [sequence(steps + (i % 3)) for i in range(n)] for split, n in (("train", 8), ("valid", 4), ("test", 4))
    }
    if kind == "real":
        values = np.concatenate([s.reshape(-1) for s in splits["train"]])
        mean, std = np.full(dim, values.mean()), np.full(dim, values.std())
        splits = {k: [(s - mean) / std for s in v] for k, v in splits.items()}
    else:
        mean, std = np.zeros(dim), np.ones(dim)
    write_h5(path, splits, kind, os.path.basename(path), mean, std, source=f"test-{seed}")
    if sample_rate is not None:
        with h5py.File(path, "a") as f:
            f.attrs["sample_rate"] = sample_rate
    return path


# ---- IAM-OnDB files, as the tests write them -------------------------------------------------


def write_line(path, strokes, broken=False):
    """Write a lineStrokes XML file as IAM-OnDB does; `strokes` are lists of (x, y)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lines = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<WhiteboardCaptureSession>",
        "  <WhiteboardDescription>",
        '    <SensorLocation corner="top_left"/>',
        "  </WhiteboardDescription>",
        "  <StrokeSet>",
    ]
    t = 100.0
    for stroke in strokes:
        lines.append(f'    <Stroke colour="black" start_time="{t:.2f}" end_time="{t + len(stroke):.2f}">')
        for x, y in stroke:
            lines.append(f'      <Point x="{x}" y="{y}" time="{t:.2f}"/>')
            t += 0.01
        lines.append("    </Stroke>")
    lines += ["  </StrokeSet>", "</WhiteboardCaptureSession>"]
    text = "\n".join(lines)
    with open(path, "w") as f:
        f.write(text[: len(text) // 2] if broken else text)


def line_path(root, line_id):
    """IAM-OnDB's layout: lineStrokes/a01/a01-000/a01-000u-01.xml."""
    form = line_id.rsplit("-", 1)[0]
    return os.path.join(
        root, "lineStrokes", form.split("-")[0], form.rstrip("abcdefghijklmnopqrstuvwxyz"), line_id + ".xml"
    )


def make_iam(root, rng):
    """A tiny IAM-OnDB: six forms, official lists (in a task folder, with IAM's leading spaces)."""
    lines = {
        "a01-000u-01": 12,
        "a01-000u-02": 9,
        "a01-001x-01": 15,
        "c03-003z-01": 7,
        "b02-002-01": 10,
        "d04-004-01": 8,
        "e05-005-01": 11,
    }
    for line_id, n in lines.items():
        points = np.cumsum(rng.integers(-20, 21, size=(n, 2)), axis=0) + 1000
        write_line(line_path(root, line_id), [points[: n // 2].tolist(), points[n // 2 :].tolist()])
    os.makedirs(os.path.join(root, "task"), exist_ok=True)
    for file, forms in (
        ("trainset.txt", ["a01-000u", "a01-001x"]),
        ("testset_t.txt", ["c03-003z"]),
        ("testset_v.txt", ["b02-002"]),
        ("testset_f.txt", ["e05-005"]),
    ):
        with open(os.path.join(root, "task", file), "w") as f:
            f.writelines(f" {form}\n" for form in forms)


def load_script(name):
    """A run/ script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "run", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---- network sizes for the tests -----------------------------------------------------------------

# TINY_SIZES run every path in a blink and learn nothing; SMALL_SIZES learn a tiny data set within a test
TINY_SIZES = dict(
    hidden=8, z_dim=2, x_features=4, z_features=4, enc_hidden=4, prior_hidden=4, dec_hidden=4, components=2
)
SMALL_SIZES = dict(
    hidden=16,
    z_dim=4,
    x_features=16,
    z_features=16,
    enc_hidden=16,
    prior_hidden=16,
    dec_hidden=16,
    components=3,
    batch_size=16,
    lr=3e-3,
)


def flags(sizes, **more):
    """The command-line flags of a sizes dict (and of `more`): ["--hidden", "8", "--z-dim", "2", ...]."""
    return [item for key, value in dict(sizes, **more).items() for item in (f"--{key.replace('_', '-')}", str(value))]


NETWORK = flags(TINY_SIZES)  # the tiny networks, as flags
TINY = flags(TINY_SIZES, batch_size=8)  # and a batch: what the fault tests train


# ---- The fault tests' tools (test_faults_data.py, test_faults_train.py) --------------------------


def fresh_script(name):
    """run/NAME.py as a module, so that its main(argv) runs in this process: a new copy at every call,
    not entered in sys.modules (load_script's are), so that what a fault test patches in it stays there."""
    spec = importlib.util.spec_from_file_location(f"faults_{name}", os.path.join(ROOT, "run", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dead_pid():
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def snapshot(folder):
    """{relative path: sha256} of every file under `folder` (folders as None)."""
    found = {}
    for directory, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), folder)] = None
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                found[os.path.relpath(os.path.join(directory, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


def one_line_error(text):
    assert text.startswith("error: ") and "\n" not in text.strip() and "Traceback" not in text, text
    return text


@contextlib.contextmanager
def read_only(monkeypatch, root):
    """Make `root` read-only: chmod a-w, and where that does not stop writes (as root), make every
    write, creation or removal under it fail with EACCES as a read-only directory would."""
    root = os.path.abspath(root)
    modes = {}
    for directory, dirs, files in os.walk(root):
        for name in files + [""]:
            path = os.path.join(directory, name) if name else directory
            modes[path] = os.stat(path).st_mode
            os.chmod(path, modes[path] & ~0o222)
    try:
        probe = os.path.join(root, ".probe")
        try:
            open(probe, "w").close()
            os.remove(probe)
            simulate = True
        except OSError:
            simulate = False
        with monkeypatch.context() as patch:
            if simulate:

                def under(path):
                    if not isinstance(path, (str, bytes, os.PathLike)):
                        return False  # a file descriptor
                    full = os.path.abspath(os.fsdecode(path))
                    return full == root or full.startswith(root + os.sep)

                def refuse(path):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

                real_open, real_os_open, real_h5 = builtins.open, os.open, h5py.File

                def guarded_open(file, mode="r", *args, **kwargs):
                    if under(file) and any(c in mode for c in "wax+"):
                        refuse(file)
                    return real_open(file, mode, *args, **kwargs)

                def guarded_os_open(path, flags, *args, **kwargs):
                    if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
                        refuse(path)
                    return real_os_open(path, flags, *args, **kwargs)

                def guarded_h5(name, mode="r", *args, **kwargs):
                    if under(name) and mode != "r":
                        raise OSError(errno.EACCES, f"Unable to create file (Permission denied): {name}")
                    return real_h5(name, mode, *args, **kwargs)

                def guarded(real):
                    def call(path, *args, **kwargs):
                        if under(path):
                            refuse(path)
                        return real(path, *args, **kwargs)

                    return call

                patch.setattr(builtins, "open", guarded_open)
                patch.setattr(os, "open", guarded_os_open)
                patch.setattr(h5py, "File", guarded_h5)
                for name in ("mkdir", "remove", "unlink", "rmdir", "rename", "replace"):
                    patch.setattr(os, name, guarded(getattr(os, name)))
            yield
    finally:
        for path, mode in modes.items():
            os.chmod(path, mode)


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
    write_h5(
        str(path),
        {s: [splits[s][i].numpy() for i in range(n)] for s, n in sizes.items()},
        kind="handwriting",
        name="small-hershey",
        mean=splits["train"].mean,
        std=splits["train"].std,
        source="tests",
    )
    return str(path)


@pytest.fixture(scope="session")
def lines_with_text(tmp_path_factory):
    """30 embedded lines with their texts, as a user's HDF5 file."""
    from pyro_vrnn import data as datasets

    root = tmp_path_factory.mktemp("text")
    splits = datasets.load("hershey", cache_dir=str(root), num_lines=30, verbose=False)
    path = str(root / "lines.h5")
    write_h5(
        path,
        {s: [splits[s][i].numpy() for i in range(len(splits[s]))] for s in splits},
        "handwriting",
        "lines",
        splits["train"].mean,
        splits["train"].std,
        "tests",
        texts={s: splits[s].texts for s in splits},
    )
    return path
