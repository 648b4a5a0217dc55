"""Fault injection on training: a run directory holding another run or in use, a full or failing disk,
other data on --resume, real signals to a real run, damaged checkpoints, data that blows up the loss.
Each ends in one line saying what to do (or the exit status a shell expects) and loses nothing written
before: where a run is refused, every file of it is byte for byte as it was."""

import errno
import fcntl
import glob
import io
import json
import os
import shutil
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY, dead_pid, fresh_script as load_script, one_line_error, read_only, snapshot, tiny_h5
from svi_slow import start, wait_for

import pyro_vrnn.train.checkpoints
import pyro_vrnn.train.loop
import pyro_vrnn.train.run_directory
from pyro_vrnn.data import DataError, SequenceDataset, schema
from pyro_vrnn.data.fingerprints import file_fingerprint
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.process import TrainingError
from pyro_vrnn.train.run_directory import read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8  # 2 epochs of 4 batches


def train_flags(data_path):
    return [
        "--dataset",
        "hdf5",
        "--data-dir",
        data_path,
        "--model",
        "vrnn-gauss",
        "--epochs",
        "2",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        *TINY,
    ]


def tiny_config(data_path, **settings):
    """train_flags' run as a Config, for the library's train() (one step)."""
    sizes = dict(zip((flag[2:].replace("-", "_") for flag in TINY[::2]), map(int, TINY[1::2])))
    return make_config("hdf5", data_dir=data_path, model="vrnn-gauss", max_steps=1, log_every=1, **sizes, **settings)


def write_data(path, scale=1.0, seed=0):
    """A tiny real-valued file in the schema: 32 / 8 / 8 sequences of 5 to 11 steps, D = 2. The lengths
    depend on nothing but the split, so files of other seeds differ in their values alone."""
    lengths = np.random.default_rng(0)
    values = np.random.default_rng(seed)
    splits = {
        s: [(scale * values.normal(size=(int(lengths.integers(5, 12)), 2))).clip(-9e5, 9e5) for _ in range(n)]
        for s, n in (("train", 32), ("valid", 8), ("test", 8))
    }
    schema.write_h5(str(path), splits, "real", "tiny", [0, 0], [1, 1], "tests")
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two data files of one shape, and one finished run (run/svi.py, in this process) on the first."""
    root = tmp_path_factory.mktemp("faults-train")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYRO_VRNN_CACHE", str(root / "cache"))  # our own; subprocesses inherit it
        a, b = write_data(root / "a.h5"), write_data(root / "b.h5", seed=1)
        load_script("svi").main(train_flags(a) + ["--out", str(root / "trained")])
        yield {"a": a, "b": b, "flags": train_flags(a), "trained": str(root / "trained")}


@pytest.fixture
def run(world, tmp_path):
    """A copy of the finished run, to damage or resume."""
    return str(shutil.copytree(world["trained"], tmp_path / "run"))


@pytest.fixture
def svi():
    return load_script("svi")


def refused(module, argv):
    with pytest.raises(SystemExit) as stop:
        module.main(argv)
    return one_line_error(str(stop.value.code))


def steps_logged(run_dir):
    return [r["step"] for r in read_log(os.path.join(run_dir, "log.jsonl")) if r["event"] == "train"]


def step_of(run_dir):
    return load_checkpoint(os.path.join(run_dir, "last.pt"))["progress"]["step"]


def same_parameters(run_a, run_b):
    a, b = (load_checkpoint(os.path.join(run, "last.pt"))["model"] for run in (run_a, run_b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def temporaries(run_dir):
    return glob.glob(os.path.join(run_dir, "*.tmp*"))


# -- A directory that holds another run, or that another process trains into ---------------------------------


def test_a_new_run_into_another_run_is_refused_unless_overwrite(world, run, svi, tmp_path):
    before = snapshot(run)
    assert refused(svi, world["flags"] + ["--out", run]) == (
        f"error: {run} holds another run; resume it with --resume {run}, choose another --out, or pass "
        "--overwrite to delete that run first"
    )
    assert refused(svi, ["--resume", run, "--overwrite"]).startswith("error: --overwrite deletes the run in --out")
    assert refused(svi, ["--resume", os.path.join(run, "best.pt")]).startswith(
        f"error: --resume continues a run from its last.pt; {run}/best.pt is not one"
    )
    assert refused(svi, ["--resume", os.path.join(run, "config.json")]) == (  # not said to be a best.pt
        f"error: --resume takes a run directory or its last.pt, and {run}/config.json is neither: pass the run "
        f"directory {run}"
    )
    missing = os.path.join(run, "nope")  # a mistyped run directory is said to be missing, not to be a best.pt
    assert refused(svi, ["--resume", missing]) == (
        f"error: --resume {missing}: no such run directory or last.pt; pass a directory that run/svi.py wrote"
    )
    bad = tmp_path / "bad.h5"  # --overwrite deletes the old run only once the new one can start
    bad.write_bytes(b"not an HDF5 file")
    assert "is not a readable HDF5 file" in refused(svi, train_flags(str(bad)) + ["--out", run, "--overwrite"])
    assert snapshot(run) == before
    # what analyze.py and sample.py wrote into the old run goes with it; the user's own file stays
    os.makedirs(os.path.join(run, "samples"))
    for name in ("figure2-valid-0.png", "figure2-valid-0.csv", "samples/samples.png", "samples/samples-01.wav"):
        Path(run, name).write_bytes(b"of the old run")
    Path(run, "samples", "mine.txt").write_text("the user's")
    svi.main(world["flags"] + ["--out", run, "--overwrite", "--max-steps", "2"])
    assert steps_logged(run) == [1, 2] and step_of(run) == 2
    assert not glob.glob(os.path.join(run, "figure2-*")) and os.listdir(os.path.join(run, "samples")) == ["mine.txt"]


def test_a_run_directory_in_use_names_the_process(world, run, svi):
    with open(os.path.join(run, ".lock"), "w") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        before = snapshot(run)
        for argv in (["--resume", run, "--epochs", "3"], world["flags"] + ["--out", run, "--overwrite"]):
            assert refused(svi, argv) == (
                f"error: {run} is in use: process 4242 is training into it; wait for it "
                "to finish or stop it, or choose another --out"
            )
        assert snapshot(run) == before  # --overwrite deleted nothing: the lock comes first


# -- A full disk while logging; a torn last line -------------------------------------------------------------


def test_a_full_disk_while_logging_tears_a_line_that_resume_drops(world, run, svi, monkeypatch):
    appends = []

    class FullDisk(io.StringIO):  # as the line is flushed, half of it reaches the disk, then ENOSPC
        def close(self):
            if not self.closed:  # once: not again when the object is collected
                half = self.getvalue()[: len(self.getvalue()) // 2]
                super().close()
                with open(appends[0], "a") as f:
                    f.write(half)
                raise OSError(errno.ENOSPC, "No space left on device")

    def full_disk_open(path, mode="r", *args, **kwargs):
        if str(path).endswith("log.jsonl") and mode == "a":
            appends.append(path)
            if len(appends) == 2:  # the train record of step 10
                return FullDisk()
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(pyro_vrnn.train.run_directory, "open", full_disk_open, raising=False)
    log = os.path.join(run, "log.jsonl")
    assert refused(svi, ["--resume", run, "--epochs", "3"]) == (
        f"error: cannot append to the log {log}: the disk is full; the last checkpoint is intact: free some "
        f"space and resume with --resume {run}"
    )
    monkeypatch.undo()
    assert step_of(run) == 9  # the step before the failure
    assert not Path(log).read_text().endswith("\n")  # torn
    svi.main(["--resume", run, "--epochs", "3"])
    assert steps_logged(run) == list(range(1, 13))  # whole: every step once, no torn line
    assert read_log(log)[-1]["event"] == "end" and len(read_log(log)) == len(open(log).readlines())


# -- Other data of the same kind, dimension and size; its content fingerprint --------------------------------


def test_resume_with_other_data_of_the_same_shape_is_refused(world, run, svi, tmp_path):
    trained_on = load_checkpoint(os.path.join(run, "last.pt"))["data"]["fingerprint"]
    assert trained_on == file_fingerprint(world["a"]) != file_fingerprint(world["b"])
    before = snapshot(run)
    message = refused(svi, ["--resume", run, "--epochs", "3", "--data-dir", world["b"]])
    assert "hdf5 train holds other sequences than the run was trained on (content fingerprint" in message
    assert "resume with the same data or start a new run" in message and snapshot(run) == before
    copy = shutil.copy(world["a"], tmp_path / "copy-of-a.h5")  # the same sequences anywhere else will do
    svi.main(["--resume", run, "--data-dir", str(copy)])

    # The project's own caches store theirs as they are written (normalized or not): that of the stored values.
    rng = np.random.default_rng(0)
    for normalize in (True, False):
        path = str(tmp_path / f"cache-{normalize}.h5")
        with schema.StreamWriter(path, "real", "t", 3, "tests", names=False, buffer_bytes=64) as writer:
            for split in schema.SPLITS:
                for _ in range(5):
                    writer.add(split, 10 + 3 * rng.normal(size=(int(rng.integers(3, 30)), 3)))
            writer.finish(*writer.moments["train"].column_stats(), normalize=normalize)
        datasets = [SequenceDataset(path, split) for split in schema.SPLITS]
        assert {d.fingerprint for d in datasets} == {file_fingerprint(path)}  # one per file


def test_a_user_file_changed_in_place_with_its_date_set_back_is_refused_on_resume(world, svi, tmp_path):
    """The validation marker trusted the file's size and modification time: a file rewritten in place with both
    restored passed, and --resume trained on other data."""
    mine = shutil.copy(world["a"], tmp_path / "mine.h5")
    run = str(tmp_path / "run")
    svi.main(train_flags(str(mine)) + ["--out", run, "--max-steps", "2"])
    before = os.stat(mine)
    with h5py.File(mine, "r+") as f:
        f["train/data"][0, 0] += 1.0
    os.utime(mine, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(mine).st_size, os.stat(mine).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    message = refused(svi, ["--resume", run, "--max-steps", "4"])
    assert "hdf5 train holds other sequences than the run was trained on (content fingerprint" in message


def test_evaluating_other_data_of_the_same_shape_is_refused(world, run):
    """evaluate_ll.py --data-dir with other sequences of the same kind, dimension and normalization evaluated them
    without a word, although the checkpoint carries the fingerprint of its data; analyze.py read them too."""
    for script in ("evaluate_ll", "analyze"):
        message = refused(load_script(script), ["--checkpoint", run, "--data-dir", world["b"]])
        assert "holds other sequences than the run was trained on (content fingerprint" in message
        assert message.endswith("pass the --data-dir of the data it was trained on"), message
    summary = load_script("evaluate_ll").main(["--checkpoint", run, "-k", "2", "--data-dir", world["a"]])
    assert np.isfinite(summary["log_px_per_seq"])


def test_the_data_file_deleted_while_a_run_trains(world, svi, tmp_path, monkeypatch):
    """Validation opened the file again and failed with a traceback; the run's checkpoint stands."""
    mine, run = shutil.copy(world["a"], tmp_path / "mine.h5"), str(tmp_path / "run")
    real_step = pyro_vrnn.train.loop.svi_step

    def step_then_delete(*args, **kwargs):
        if os.path.exists(mine):
            os.remove(mine)  # the train split is open already; valid is opened at the end of the epoch
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pyro_vrnn.train.loop, "svi_step", step_then_delete)
    assert refused(svi, train_flags(str(mine)) + ["--out", run]) == (
        f"error: cannot open {mine} to read its valid split (No such file or directory); was it deleted or moved "
        "while in use? put it back and run again (a run resumes with --resume)"
    )
    assert step_of(run) == 3  # the last checkpoint before the epoch's end
    cache = tmp_path / "cache.h5"  # a cache says it is rebuilt
    shutil.copy(world["a"], cache)
    valid = SequenceDataset(str(cache), "valid")
    os.remove(cache)
    with pytest.raises(DataError, match="; was it deleted or moved while in use[?] run again: the cache is rebuilt"):
        valid[0]


def test_a_validation_split_changed_to_hold_a_nan(world, tmp_path):
    """A cache changed in place after it was prepared (a user's file is validated again, as its change time moved)."""
    from conftest import build

    from pyro_vrnn.train.svi_step import validate

    path = str(tmp_path / "nan.h5")
    rng = np.random.default_rng(0)
    splits = {s: [rng.normal(size=(5, 3)) for _ in range(4)] for s in ("train", "valid", "test")}
    schema.write_h5(path, splits, "real", "nan", [0, 0, 0], [1, 1, 1], "tests")
    with h5py.File(path, "r+") as f:
        f["valid/data"][7, 1] = np.nan
    _, model, guide, vrnn = build("vrnn-gauss", "real", 3)
    with pytest.raises(TrainingError) as error:
        validate(model, guide, vrnn, SequenceDataset(path, "valid"), 4, "cpu")
    assert str(error.value).startswith("a valid batch holds NaN or inf (sequences [")
    assert str(error.value).endswith("]...); check the data or rebuild its cache")


@pytest.mark.parametrize("script", ["evaluate_ll", "sample", "analyze"])
def test_a_checkpoint_with_nan_weights_is_one_line(run, script):
    """analyze.py and sample.py ended in a traceback; evaluate_ll.py exited 0 with a table of nan."""
    path = os.path.join(run, "last.pt")
    state = load_checkpoint(path)
    name = next(iter(state["model"]))
    state["model"][name][0] = float("nan")
    torch.save(state, path)
    assert refused(load_script(script), ["--checkpoint", path, "-k" if script == "evaluate_ll" else "--seed", "2"]) == (
        f"error: the checkpoint's weights hold NaN or inf ({name}): it is damaged; use another checkpoint of the run "
        "(best.pt or last.pt) or train again"
    )


def test_analyze_on_a_read_only_run_says_where_to_write(run, monkeypatch, tmp_path):
    with read_only(monkeypatch, run):
        assert refused(load_script("analyze"), ["--checkpoint", run]).startswith(
            f"error: --out (default: the run directory) {run}: cannot write in {run} (Permission denied); choose "
            "a writable place"
        )
        written = load_script("analyze").main(["--checkpoint", run, "--out", str(tmp_path / "figures")])
    assert all(os.path.getsize(path) > 0 for path in written)


# -- A kill during the end-of-run figures, or during a checkpoint write --------------------------------------


@pytest.mark.parametrize("killed", ["drawing the samples", "writing the end record"])
def test_a_finished_run_makes_its_missing_figures_on_resume(run, svi, killed):
    os.remove(os.path.join(run, "samples.png"))
    if killed == "writing the end record":  # then nothing was drawn, and the log's last line is torn
        os.remove(os.path.join(run, "curves.png"))
        log = Path(run, "log.jsonl")
        log.write_text(log.read_text()[:-20])
    svi.main(["--resume", run])  # returns: exit status 0
    assert all(os.path.getsize(os.path.join(run, name)) > 1000 for name in ("samples.png", "curves.png"))


def test_temporary_files_of_a_killed_writer_are_removed(run, svi):
    """Only the run's own NAME.tmpPID go: a user's files whose names hold ".tmp" stay."""
    gone = dead_pid()
    for name in ("last.pt", "best.pt", "log.jsonl", "config.json", "samples.png", "figure2-valid-0.png"):
        Path(run, f"{name}.tmp{gone}").write_bytes(b"half a file")
    users = ["notes.tmp.txt", "data.tmp", f"mine.tmp{gone}", "last.pt.tmp"]
    for name in users:
        Path(run, name).write_text("the user's")
    svi.main(["--resume", run])
    assert sorted(map(os.path.basename, temporaries(run))) == sorted(users)


def test_a_log_with_junk_lines_or_a_folder_in_its_place(run, svi):
    log = Path(run, "log.jsonl")
    with open(log, "a") as f:  # lines no run writes, each of which was a traceback on --resume
        f.write('42\n[1, 2]\n{"event": "train", "step": null}\n"text"\n{"event": "epoch", "step": 3}\n')
    svi.main(["--resume", run, "--epochs", "3"])
    assert steps_logged(run) == list(range(1, 13)) and all(line.startswith('{"event"') for line in log.open())
    log.unlink()
    log.mkdir()
    assert refused(svi, ["--resume", run, "--epochs", "4"]) == (
        f"error: cannot read the log {log} (Is a directory); a run's log.jsonl is a file of JSON lines: move it "
        "away (the run then starts a new log) and run again"
    )


class DiskFullOnFlush:
    """A file of the lock's kind whose buffered write does not reach a full disk: flush and close raise ENOSPC."""

    def __init__(self, real):
        self.real, self.pending = real, False

    def __getattr__(self, name):
        return getattr(self.real, name)

    def write(self, text):
        self.pending = True
        return len(text)

    def flush(self):
        if self.pending:
            raise OSError(errno.ENOSPC, "No space left on device")

    def close(self):
        self.real.close()
        self.flush()


def test_a_full_disk_before_anything_is_written(world, svi, tmp_path, monkeypatch):
    """At the lock, at the first checkpoint: one line, and the advice works (there is nothing to resume yet)."""
    run = str(tmp_path / "run")

    def full_disk_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return DiskFullOnFlush(f) if str(path).endswith(".lock") else f

    with monkeypatch.context() as patch:
        patch.setattr(pyro_vrnn.train.run_directory, "open", full_disk_open, raising=False)
        assert refused(svi, world["flags"] + ["--out", run]) == (
            f"error: cannot write {run}/.lock: the disk is full; free some space or pass another --out"
        )
    assert not os.path.exists(run)

    def full_disk_save(state, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(pyro_vrnn.train.run_directory.torch, "save", full_disk_save)
        assert refused(svi, world["flags"] + ["--out", run]) == (
            f"error: cannot write the checkpoint {run}/last.pt: the disk is full; no last.pt was written yet, so "
            "there is nothing to resume: free some space and start the run again, the same command"
        )
    svi.main(world["flags"] + ["--out", run, "--max-steps", "2"])  # the same command, as said
    assert steps_logged(run) == [1, 2]


def test_a_full_disk_while_drawing_the_end_of_run_pictures(run, svi, monkeypatch):
    import matplotlib.figure

    for name in ("samples.png", "curves.png"):
        os.remove(os.path.join(run, name))

    def full_disk_savefig(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a picture")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with monkeypatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", full_disk_savefig)
        assert refused(svi, ["--resume", run]) == (
            f"error: cannot write {run}/samples.png: the disk is full; the run is trained and its checkpoints are "
            f"intact: free some space and draw its pictures with python run/svi.py --resume {run}"
        )
    assert temporaries(run) == []
    svi.main(["--resume", run])  # as said
    assert all(os.path.getsize(os.path.join(run, name)) > 1000 for name in ("samples.png", "curves.png"))


def test_a_moved_run_resumes_where_it_is(world, run, svi):
    """--resume of a run directory copied or moved elsewhere: its config.json and checkpoints name where it is."""
    svi.main(["--resume", run, "--epochs", "3"])
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["out"] == run != world["trained"]
    assert load_checkpoint(os.path.join(run, "last.pt"))["config"]["out"] == run


def test_flags_that_do_nothing_get_a_note(world, svi, tmp_path, capsys):
    """--backward-hidden with the filtering guide, --components on binary data: noted as other unused flags are."""
    binary = tiny_h5(str(tmp_path / "rolls.h5"), "binary", 4, 5)
    flags = ["--max-steps", "1", "--backward-hidden", "4", "--components", "3", "--mixture", "independent", *TINY]
    svi.main(["--dataset", "hdf5", "--data-dir", binary, "--model", "vrnn-gmm", "--out", str(tmp_path / "r"), *flags])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: --components does not apply to binary data, whose emission is Bernoulli whatever the model; it is "
        "ignored",
        "note: --mixture does not apply to binary data, whose emission is Bernoulli whatever the model; it is ignored",
        "note: --backward-hidden does not apply to vrnn-gmm, which has the filtering guide here (--guide smoothing has "
        "the backward RNN); it is ignored",
    ]
    svi.main(world["flags"] + ["--out", str(tmp_path / "s"), "--max-steps", "1", "--guide", "smoothing"] + flags[2:4])
    assert not [line for line in capsys.readouterr().err.splitlines() if "backward-hidden" in line]


def test_a_table_rerun_with_other_sizes_is_refused(world, tmp_path):
    """table1.py reused the old runs and recorded the new sizes in table1.json; svi.py --resume refuses the change."""
    table = tmp_path / "t"
    shutil.copytree(world["trained"], table / "vrnn-gauss" / "seed-0")
    argv = [
        "--dataset",
        "hdf5",
        "--data-dir",
        world["a"],
        "--models",
        "vrnn-gauss",
        "--seeds",
        "0",
        "--out",
        str(table),
    ]
    before = snapshot(table)
    sizes = dict(zip(TINY[::2], TINY[1::2]), **{"--hidden": "16"})
    message = refused(load_script("table1"), argv + [item for pair in sizes.items() for item in pair])
    assert message == (
        f"error: --hidden 16 differs from 8 of the table's run {table}/vrnn-gauss/seed-0; drop it to go on with this "
        "table, or pass another --out for a new one"
    )
    assert snapshot(table) == before


# -- Real signals to a real run ------------------------------------------------------------------------------


def last_line(stderr):
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_exits_130_or_143_and_resumes_exactly(world, svi, tmp_path, sig, code):
    run = str(tmp_path / "run")
    proc = start(world["flags"] + ["--out", run], SLOW_SVI_STEP="0.3")
    wait_for(proc, lambda: steps_logged(run))
    assert refused(svi, world["flags"] + ["--out", run]) == (  # a second trainer, started meanwhile
        f"error: {run} is in use: process {proc.pid} is training into it; wait for it to finish or stop it, "
        "or choose another --out"
    )
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    step = step_of(run)
    assert (
        proc.returncode == code
        and 0 < step < STEPS
        and last_line(stderr)
        == (f"stopped at step {step}, last.pt written; resume with: python run/svi.py --resume {run}")
    )
    svi.main(["--resume", run])
    assert same_parameters(run, world["trained"])  # as if it had never stopped
    assert steps_logged(run) == list(range(1, STEPS + 1))


@pytest.mark.parametrize(
    "flag,value,steps,reason", [("--max-steps", "3", 3, "max_steps"), ("--epochs", "1", 4, "epochs")]
)  # 4 steps: epoch 1
def test_a_ctrl_c_on_the_very_last_step_finishes_the_run(
    world, svi, tmp_path, monkeypatch, capsys, flag, value, steps, reason
):
    run, real_step, taken = str(tmp_path / "run"), pyro_vrnn.train.loop.svi_step, []

    def step_then_ctrl_c(*args, **kwargs):
        taken.append(1)
        if len(taken) == steps:
            signal.raise_signal(signal.SIGINT)  # arrives while the step runs
        return real_step(*args, **kwargs)

    monkeypatch.setattr(pyro_vrnn.train.loop, "svi_step", step_then_ctrl_c)
    svi.main(world["flags"] + ["--out", run, flag, value])  # returns: exit status 0
    end = read_log(os.path.join(run, "log.jsonl"))[-1]
    assert end["event"] == "end" and end["reason"] == reason
    assert step_of(run) == steps
    assert "resume" not in capsys.readouterr().err


def test_a_double_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(world, tmp_path):
    run = str(tmp_path / "run")
    proc = start(world["flags"] + ["--out", run], SLOW_SVI_STEP="0.5")
    wait_for(proc, lambda: os.path.exists(os.path.join(run, "last.pt")))
    proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and temporaries(run) == []
    assert last_line(stderr) == "interrupted; what was written before stands (resume a run with --resume RUN_DIR)"
    assert 0 < step_of(run) < STEPS


@pytest.mark.parametrize("ctrl_cs", [1, 2])
def test_a_run_stopped_before_its_first_checkpoint_resumes_or_starts_again(world, svi, tmp_path, ctrl_cs):
    """One Ctrl-C writes last.pt at once; two leave only config.json and the log, which --resume says hold
    nothing to resume and which a new run with the same --out replaces (no --overwrite needed)."""
    run, before_any = str(tmp_path / "run"), ["--checkpoint-every", "100"]  # the epoch ends at step 4
    proc = start(world["flags"] + before_any + ["--out", run], SLOW_SVI_STEP="0.5")
    wait_for(proc, lambda: steps_logged(run))
    for _ in range(ctrl_cs):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    if ctrl_cs == 1:
        assert 0 < step_of(run) < 4
        return
    assert sorted(os.listdir(run)) == [".lock", "config.json", "log.jsonl"]
    assert refused(svi, ["--resume", run]) == (
        f"error: --resume {run}: the run stopped before its first checkpoint, so there is nothing to resume; "
        f"start it again: the same command with --out {run}"
    )
    svi.main(world["flags"] + before_any + ["--out", run])
    assert steps_logged(run) == list(range(1, STEPS + 1)) and step_of(run) == STEPS  # the old log is gone
    foreign = tmp_path / "foreign"  # another program's config.json is not a run to replace, resume or delete
    foreign.mkdir()
    (foreign / "config.json").write_text('{"lr": 1}')
    for extra in ([], ["--overwrite"]):
        assert refused(svi, world["flags"] + ["--out", str(foreign), *extra]) == (
            f"error: {foreign} holds config.json of another program, not of a pyro-vrnn run; choose another --out "
            "(or move those files away)"
        )
    assert os.listdir(foreign) == ["config.json"]


@pytest.mark.parametrize("phase", ["importing torch", "loading the data"])
def test_a_ctrl_c_during_start_up_is_one_line(world, tmp_path, phase):
    run, ready = str(tmp_path / "run"), str(tmp_path / "ready")
    if phase == "importing torch":  # the real script; torch's libraries mapped: its import is under way
        proc = start(world["flags"] + ["--out", run], os.path.join(ROOT, "run", "svi.py"))
        wait_for(proc, lambda: "libtorch" in open(f"/proc/{proc.pid}/maps").read())
        expected = "interrupted while starting; nothing was written"
    else:
        proc = start(world["flags"] + ["--out", run], SLOW_SVI_LOAD="30", SLOW_SVI_READY=ready)
        wait_for(proc, lambda: os.path.exists(ready))
        expected = "interrupted; what was written before stands (resume a run with --resume RUN_DIR)"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and last_line(stderr) == expected
    assert not os.path.exists(run)  # nothing was written, so no run directory is left to trip over


# -- Damaged checkpoints, and a full or failing disk while one is written ------------------------------------


@pytest.mark.parametrize(
    "damage,said",
    [
        pytest.param(lambda state: state.pop("optimizer"), "{path} lacks optimizer: it is damaged", id="a key missing"),
        pytest.param(lambda state: state["data"].pop("kind"), "{path} lacks data['kind']: it is damaged", id="inside"),
        pytest.param(
            lambda state: state["config"].update(hidden=16),
            "the checkpoint's weights do not fit the network its config describes (7 tensor(s) differ; e.g. ",
            id="a config that does not fit its weights",
        ),
    ],
)
@pytest.mark.parametrize("script", ["svi", "evaluate_ll", "sample"])
def test_a_damaged_checkpoint_is_one_line(run, script, damage, said):
    path = os.path.join(run, "last.pt")
    state = load_checkpoint(path)
    damage(state)
    torch.save(state, path)
    before = snapshot(run)
    message = refused(load_script(script), ["--resume", run] if script == "svi" else ["--checkpoint", path])
    assert message.startswith("error: " + said.format(path=path)) and snapshot(run) == before


class RunsCode:
    """What a crafted checkpoint holds: an object whose unpickling calls os.mkdir(marker) (os.system would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("script", ["svi", "evaluate_ll", "analyze"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(run, script, tmp_path):
    path, marker = os.path.join(run, "last.pt"), str(tmp_path / "the-code-ran")
    state = load_checkpoint(path)
    state["progress"]["note"] = RunsCode(marker)
    torch.save(state, path)
    before = snapshot(run)
    message = refused(load_script(script), ["--resume", run] if script == "svi" else ["--checkpoint", path])
    assert message == (
        f"error: refused to load {path}: it holds Python code or objects (posix.mkdir) that loading would run, "
        "and a pyro-vrnn checkpoint holds data only (tensors, numbers, strings): do not use it"
    )
    assert not os.path.exists(marker) and snapshot(run) == before


def test_checkpoints_of_the_older_format_load_and_resume(run, svi):
    """Version 1 (before checkpoints were data only) kept numpy's random state as an array, as np.random.get_state()
    gives it: such a run resumes as it would have. A numpy object elsewhere (no version wrote one) is refused with
    the command that converts a file one trusts."""
    path = os.path.join(run, "last.pt")
    state = load_checkpoint(path)
    assert state["version"] == 2 and all(isinstance(v, torch.Tensor) for v in [state["rng"][0]["numpy"][1]])
    name, keys, *rest = state["rng"][0]["numpy"]
    state["rng"][0]["numpy"] = (name, keys.numpy().astype(np.uint32), *rest)  # as version 1 saved it
    state["version"] = 1
    torch.save(state, path)
    assert load_checkpoint(path)["rng"][0]["numpy"][1].dtype == np.uint32
    svi.main(["--resume", run, "--epochs", "3"])
    assert load_checkpoint(path)["version"] == 2 and steps_logged(run) == list(range(1, 13))

    state = load_checkpoint(path)
    state["progress"]["best_valid"] = np.float64(state["progress"]["best_valid"])
    torch.save(state, path)
    message = refused(svi, ["--resume", run, "--epochs", "4"])
    assert "holds Python code or objects (numpy." in message and "convert it once: python -c 'import" in message
    pyro_vrnn.train.checkpoints.convert_trusted(path)  # what the message says to run
    assert load_checkpoint(path)["version"] == 2


@pytest.mark.parametrize("fault", ["ENOSPC", "EIO"])
def test_a_full_or_failing_disk_while_checkpointing(run, svi, monkeypatch, fault):
    before = snapshot(run)
    if fault == "ENOSPC":  # the disk fills up half-way through the checkpoint

        def full_disk_save(state, f):
            f.write(b"\x80\x02 half a pickle")
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(pyro_vrnn.train.run_directory.torch, "save", full_disk_save)
    else:  # the disk fails to write what was cached, as fsync reports (for the checkpoint, not the log)

        def failing_fsync(fd, fsync=os.fsync):
            if ".pt.tmp" in os.readlink(f"/proc/self/fd/{fd}"):
                raise OSError(errno.EIO, "Input/output error")
            fsync(fd)

        monkeypatch.setattr(pyro_vrnn.train.run_directory.os, "fsync", failing_fsync)
    what = "the disk is full" if fault == "ENOSPC" else "an input/output error (a failing disk?)"
    assert refused(svi, ["--resume", run, "--epochs", "3"]) == (
        f"error: cannot write the checkpoint {run}/last.pt: {what} (the previous one is intact); free some space "
        f"and resume with --resume {run}"
    )
    after = snapshot(run)
    assert all(after[name] == before[name] for name in ("last.pt", "best.pt")) and temporaries(run) == []


# -- Data that blows up the loss; outputs that cannot be written ---------------------------------------------


def test_a_loss_blown_up_by_the_data_points_at_the_data(world, svi, tmp_path, capsys):
    huge = write_data(tmp_path / "huge.h5", scale=5e5)  # under validation's 1e6, far from standardized
    message = refused(svi, train_flags(huge) + ["--out", str(tmp_path / "run")])
    assert message.startswith("error: training diverged (non-finite loss) on a batch with values up to ")
    assert "the data are not standardized; standardize them (mean 0, std 1, statistics from train)" in message
    assert "standardize the data" in capsys.readouterr().out


def test_run_directories_that_cannot_be_written(world, run, svi, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"precious")
    for out, said in (
        (a_file, f"--out {a_file} is a file, not a directory"),
        (a_file / "run", f"cannot create the run directory {a_file}/run: "),
    ):
        with pytest.raises(TrainingError) as error:  # the library's own check (RunDirectory.open)
            pyro_vrnn.train.loop.train(tiny_config(world["a"], out=str(out)), quiet=True)
        assert str(error.value).startswith(said) and "\n" not in str(error.value)
    locked = tmp_path / "locked"
    locked.mkdir()
    before = snapshot(run)
    with read_only(monkeypatch, locked), read_only(monkeypatch, run):
        assert refused(svi, world["flags"] + ["--out", str(locked / "run")]).startswith(
            f"error: --out {locked / 'run'}: cannot write in {locked} (Permission denied)"
        )
        assert refused(svi, ["--resume", run, "--epochs", "3"]) == (
            f"error: cannot write {run}/.lock: permission denied; make {run} writable"
        )
    assert snapshot(run) == before and os.listdir(locked) == [] and a_file.read_bytes() == b"precious"


def test_a_run_that_fails_before_writing_leaves_no_run_behind(world, svi, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file")
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):  # made by the run, or made by the user
        assert "is not a readable HDF5 file" in refused(svi, train_flags(str(bad)) + ["--out", str(out)])
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "empty") == []
    only_lock = tmp_path / "only-lock"  # what an older version left: no run there, so it is not refused
    only_lock.mkdir()
    (only_lock / ".lock").write_text(str(dead_pid()))
    pyro_vrnn.train.loop.train(tiny_config(world["a"], out=str(only_lock)), quiet=True)
    assert steps_logged(str(only_lock)) == [1]


def test_newest_run_is_the_last_checkpoint_written_among_the_models_asked(tmp_path):
    """evaluate_ll.py and write.py's default run: the directory whose best.pt or last.pt was written last, nested
    runs too; with models, only theirs (config.json's model); none there is one line that says what to do."""
    root = tmp_path / "runs"
    for when, (run, model, checkpoint) in enumerate(
        [("a", "cvrnn-gmm", "best.pt"), ("t/b/seed-0", "vrnn-gauss", "last.pt"), ("c", "crnn-gmm", None)]
    ):
        (root / run).mkdir(parents=True)
        (root / run / "config.json").write_text(json.dumps({"model": model}))
        if checkpoint is not None:
            (root / run / checkpoint).write_bytes(b"")
            os.utime(root / run / checkpoint, (1000 + when, 1000 + when))
    newest_run = pyro_vrnn.train.run_directory.newest_run
    assert newest_run(str(root)) == str(root / "t" / "b" / "seed-0")
    assert newest_run(str(root), ("cvrnn-gmm", "crnn-gmm")) == str(root / "a")  # c has no checkpoint
    with pytest.raises(TrainingError, match=r"^no runs of srnn found under .*runs/; train one with run/svi.py --model"):
        newest_run(str(root), ("srnn",))
    with pytest.raises(TrainingError, match=r"^no runs found under .*nowhere/; train one with run/svi.py or pass"):
        newest_run(str(tmp_path / "nowhere"))
