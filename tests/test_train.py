"""Training on the embedded handwriting data: the loss falls, a killed run resumes exactly,
divergence stops cleanly, and the command line reports bad input in one line."""

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time

import pyro
import pytest
import torch
from conftest import SMALL_SIZES, TINY_SIZES, flags, fresh_script, one_line_error

from pyro_vrnn import data as datasets, models
from pyro_vrnn.data.schema import write_h5
from pyro_vrnn.train import loop as train_module
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.config import make_config, unused_flags
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.process import TrainingError, network_fits
from pyro_vrnn.train.svi_step import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = dict(SMALL_SIZES, hidden=24)


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def same_parameters(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_fifty_steps_lower_the_loss(tmp_path, hershey_cache):
    config = make_config(
        "hershey", model="vrnn-gmm", out=str(tmp_path / "run"), epochs=100, max_steps=50, log_every=5, **SIZES
    )
    splits = datasets.load("hershey")
    pyro.set_rng_seed(config.seed)
    model, guide, vrnn = models.build(config, splits["valid"].kind, splits["valid"].dim)
    before = validate(model, guide, vrnn, splits["valid"], config.batch_size, torch.device("cpu"), 0, 1)
    run_dir = train(config, quiet=True)
    state = load_checkpoint(os.path.join(run_dir, "last.pt"))
    assert state["progress"]["step"] == 50
    vrnn.load_state_dict(state["model"])
    after = validate(model, guide, vrnn, splits["valid"], config.batch_size, torch.device("cpu"), 0, 1)
    # The validation ELBO per sequence rises by a clear margin (it starts around -1000 nats).
    assert after["elbo_per_seq"] > before["elbo_per_seq"] + 0.3 * abs(before["elbo_per_seq"])
    # Batches are bucketed by length, so compare the training bound per time step.
    train_elbo = [r["elbo_per_step"] for r in read_log(run_dir) if r["event"] == "train"]
    assert len(train_elbo) == 10
    assert sum(train_elbo[-3:]) / 3 > sum(train_elbo[:3]) / 3 + 0.5


def run_cli(*args, cwd=ROOT, **kw):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "run", "svi.py"), *args], capture_output=True, text=True, cwd=cwd, **kw
    )


def test_killed_run_resumes_to_the_same_parameters(tmp_path, small_handwriting):
    """An uninterrupted run and a run killed with SIGKILL mid-epoch then resumed end identical."""
    common = [
        "--dataset",
        "hdf5",
        "--data-dir",
        small_handwriting,
        "--model",
        "vrnn-gauss",
        "--epochs",
        "5",
        "--checkpoint-every",
        "2",
        "--patience",
        "5",
        *flags(SIZES),
    ]
    straight = run_cli("--out", str(tmp_path / "straight"), *common)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run", "svi.py"), "--out", str(killed_dir), *common],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed_dir / "last.pt").exists():
            step = load_checkpoint(str(killed_dir / "last.pt"))["progress"]["step"]
            if step >= 4:  # inside epoch 1 (6 steps an epoch)
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(str(killed_dir / "last.pt"))["progress"]
    assert 0 < killed_at["step"]

    resumed = run_cli("--resume", str(killed_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_checkpoint(str(tmp_path / "straight" / "last.pt"))
    b = load_checkpoint(str(killed_dir / "last.pt"))
    assert a["progress"]["step"] == b["progress"]["step"] == 30  # 5 epochs of 6 batches
    assert killed_at["step"] < 30  # the kill did interrupt training
    assert same_parameters(a["model"], b["model"])
    # The log holds each step once, as an uninterrupted run's does.
    assert read_log(str(tmp_path / "straight"))[-1]["reason"] == read_log(str(killed_dir))[-1]["reason"]
    steps = [r["step"] for r in read_log(str(killed_dir)) if r["event"] == "train"]
    assert steps == sorted(set(steps))
    assert (killed_dir / "samples.png").stat().st_size > 1000


def test_resume_with_a_different_size_is_refused(tmp_path, small_handwriting):
    run = run_cli(
        "--dataset",
        "hdf5",
        "--data-dir",
        small_handwriting,
        "--out",
        str(tmp_path / "r"),
        "--max-steps",
        "2",
        *flags(SIZES),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    bad = run_cli("--resume", str(tmp_path / "r"), "--hidden", "99")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --hidden 99 differs")


def poison_adam(monkeypatch, at_update):
    """The `at_update`-th Adam update writes a NaN into a weight."""
    adam_step = torch.optim.Adam.step
    steps = {"n": 0}

    def poisoned_step(self, *args, **kwargs):
        out = adam_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == at_update:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, hershey_cache, monkeypatch, capsys):
    config = make_config(
        "hershey", model="vrnn-gauss", out=str(tmp_path / "run"), max_steps=8, checkpoint_every=2, **SIZES
    )
    poison_adam(monkeypatch, 5)
    with pytest.raises(TrainingError, match="diverged"):
        train(config)
    state = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert state["progress"]["step"] == 4  # the checkpoint before the NaN, not after
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    log = read_log(str(tmp_path / "run"))
    assert log[-1] == {**log[-1], "event": "end", "reason": "nan"}
    said = capsys.readouterr().out
    assert "non-finite at step 6" in said and "last.pt holds the last good checkpoint" in said
    assert f"--resume {tmp_path / 'run'} --lr" in said


FREED_MEMORY_SCRIPT = """
import ctypes, sys, torch
sys.path.insert(0, {root!r})
from pyro_vrnn.train.allocator import freed_memory_kept

class MallInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks".split()]
    _fields_ += [(n, ctypes.c_size_t) for n in ("fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo
with freed_memory_kept() as kept:
    before = libc.mallinfo2()
    tensor = torch.ones(3 * 2**20)  # 12 MiB, as a big emission's temporaries at one step
    alive = libc.mallinfo2()
    del tensor
    freed = libc.mallinfo2()
print(kept, alive.hblkhd - before.hblkhd, alive.arena - before.arena, freed.arena - alive.arena)
"""


def test_freed_memory_stays_in_the_heap_for_the_next_tensors():
    """allocator.freed_memory_kept, in a new process (the allocator's state of its own): a 12 MiB tensor comes from
    the heap, not a mapping of its own (glibc's default: 128 KiB and up are mapped, and faulted in afresh each
    time), and freeing it does not shrink the heap (it is not trimmed back to the system)."""
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later")
    run = subprocess.run(
        [sys.executable, "-c", FREED_MEMORY_SCRIPT.format(root=ROOT)], capture_output=True, text=True, timeout=120
    )
    kept, mapped, heap_grew, heap_shrank = run.stdout.split()
    assert kept == "True", run.stderr[-2000:]
    assert int(mapped) == 0 and int(heap_shrank) == 0, run.stdout  # served by the heap (grown by heap_grew), kept


def test_nan_loss_before_any_checkpoint_says_to_start_again(tmp_path, hershey_cache, monkeypatch, capsys):
    config = make_config("hershey", model="vrnn-gauss", out=str(tmp_path / "run"), max_steps=8, **SIZES)
    poison_adam(monkeypatch, 1)
    with pytest.raises(TrainingError, match="diverged"):
        train(config)
    said = capsys.readouterr().out
    assert "before the first checkpoint; start again with a lower --lr" in said and "--resume" not in said
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "flag,value,need",
    [
        ("batch_size", 0, "at least 1"),
        ("mlp_layers", 0, "at least 1"),
        ("components", 0, "at least 1"),
        ("z_dim", 0, "at least 1"),
        ("lr", -1e-3, "above 0"),
        ("lr", float("nan"), "above 0"),
        ("kl_anneal_epochs", -1, "0 or more"),
        ("min_scale", float("inf"), "a finite number"),
        ("lr", float("inf"), "a finite number"),
    ],
)
def test_settings_no_run_can_use_are_refused_in_one_line(flag, value, need):
    with pytest.raises(ValueError, match=f"^--{flag.replace('_', '-')} is {value}; it must be {need}$"):
        make_config("hershey", **{flag: value})


def test_flags_a_model_has_no_use_for_get_a_note_each():
    """config.unused_flags: what the user set and the model ignores is named (a note: table1.py passes one set of
    flags to every model); what the model uses, or what a preset set, is not."""
    passed = {"guide", "free_bits", "srnn_resq", "components", "hidden", "lr"}
    notes = unused_flags(make_config("hershey", model="rnn-gauss"), passed)
    assert sorted(n.split()[1] for n in notes) == ["--components", "--free-bits", "--guide", "--srnn-resq"]
    assert "note: --free-bits does not apply to rnn-gauss, which has no latent variables; it is ignored" in notes
    assert unused_flags(make_config("hershey", model="vrnn-gmm"), passed) == [
        "note: --srnn-resq does not apply to vrnn-gmm, which is not an SRNN; it is ignored"
    ]
    assert unused_flags(make_config("hershey", model="srnn-gmm"), {"srnn_resq", "components", "free_bits"}) == []
    assert unused_flags(make_config("chorales", model="rnn-gauss"), set()) == []  # the preset's levers: no note


def test_another_objective_on_resume_drops_what_served_the_old_one(tmp_path, hershey_cache):
    """--elbo may change on resume (run/svi.py's RESUMABLE): the run's free bits give way to --elbo iwae, as a
    preset's do for a new run, and --particles returns to 1 for an ELBO; a KL lever passed with iwae is refused."""
    svi_script, run = fresh_script("svi"), str(tmp_path / "run")
    svi_script.main(["--out", run, "--max-steps", "1", "--free-bits", "0.05", *flags(TINY_SIZES)])
    assert load_checkpoint(os.path.join(run, "last.pt"))["config"]["free_bits"] == 0.05
    svi_script.main(["--resume", run, "--elbo", "iwae", "--particles", "2", "--max-steps", "2"])
    state = load_checkpoint(os.path.join(run, "last.pt"))
    c = state["config"]
    assert state["progress"]["step"] == 2 and (c["elbo"], c["particles"], c["free_bits"]) == ("iwae", 2, 0)
    assert svi_script.config_for(svi_script.parse_args(["--resume", run, "--elbo", "trace"])).particles == 1
    with pytest.raises(SystemExit) as stop:
        svi_script.main(["--resume", run, "--elbo", "iwae", "--free-bits", "0.05"])
    assert stop.value.code == "error: --free-bits weighs the KL term, which --elbo iwae does not have"


def test_resume_checks_the_data_and_says_when_there_is_nothing_left(tmp_path, small_handwriting):
    """A relative --data-dir is saved as an absolute path (the run resumes from anywhere); resuming with
    data of another shape or size is refused; a run at its --max-steps takes no step; --lr may change."""
    data = tmp_path / "data.h5"
    data.write_bytes(open(small_handwriting, "rb").read())
    first = run_cli(
        "--dataset",
        "hdf5",
        "--data-dir",
        "data.h5",
        "--out",
        "r",
        "--max-steps",
        "2",
        "--log-every",
        "1",
        *flags(SIZES),
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    run_dir = tmp_path / "r"
    with open(run_dir / "config.json") as f:
        assert json.load(f)["data_dir"] == str(data)
    log_before = read_log(str(run_dir))

    again = run_cli("--resume", str(run_dir))  # from another directory
    assert again.returncode == 0, again.stderr[-2000:]
    assert "nothing to do" in again.stdout and "has taken its 2 steps (--max-steps)" in again.stdout
    assert load_checkpoint(str(run_dir / "last.pt"))["progress"]["step"] == 2 and read_log(str(run_dir)) == log_before

    more = run_cli("--resume", str(run_dir), "--max-steps", "4", "--lr", "1e-4")
    assert more.returncode == 0, more.stderr[-2000:]
    state = load_checkpoint(str(run_dir / "last.pt"))
    assert state["progress"]["step"] == 4 and state["optimizer"]["param_groups"][0]["lr"] == 1e-4
    times = [r["time"] for r in read_log(str(run_dir)) if r["event"] == "train"]
    assert len(times) == 4 and times == sorted(times)  # the clock goes on across the resume

    splits = datasets.load("hdf5", data_dir=str(data), verbose=False)
    fewer = str(tmp_path / "fewer.h5")
    write_h5(
        fewer,
        {s: [splits[s][i].numpy() for i in range(8)] for s in ("train", "valid", "test")},
        kind="handwriting",
        name="fewer",
        mean=splits["train"].mean,
        std=splits["train"].std,
        source="tests",
    )
    other = str(tmp_path / "other.h5")
    write_h5(
        other,
        {s: [splits[s][i].numpy()[:, 1:] for i in range(8)] for s in ("train", "valid", "test")},
        kind="real",
        name="other",
        mean=[0, 0],
        std=[1, 1],
        source="tests",
    )
    for path, message in (
        (fewer, "hdf5 train has 8 sequences, the run was trained on 96"),
        (other, "trained on handwriting data of dimension 3, but hdf5 train is real of dimension 2"),
    ):
        refused = run_cli("--resume", str(run_dir), "--max-steps", "6", "--data-dir", path)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode != 0 and len(lines) == 1 and message in lines[0], refused.stderr[-2000:]

    zero = run_cli("--resume", str(run_dir), "--batch-size", "0")
    assert zero.returncode != 0 and zero.stderr.strip().splitlines()[-1].startswith("error: --batch-size 0 differs")


def test_missing_iam_data_is_one_clear_line(tmp_path):
    run = run_cli("--dataset", "iam", "--data-dir", str(tmp_path / "nowhere"))
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "IAM-OnDB" in lines[0]


def test_a_network_too_big_for_the_memory_is_one_line(tmp_path):
    """Ten million LSTM units: the 4H x H recurrent weights alone take 1.6 PB, which no allocator gives. The failed
    allocation is said in one line and no run is left behind; CUDA's out-of-memory error reads the same."""
    data = str(tmp_path / "data.h5")
    splits = {s: [torch.randn(6, 2).numpy() for _ in range(4)] for s in ("train", "valid", "test")}
    write_h5(data, splits, kind="real", name="tiny", mean=[0, 0], std=[1, 1], source="tests")
    sizes = dict(TINY_SIZES, hidden=10**7)
    env = dict(os.environ, PYRO_VRNN_CACHE=str(tmp_path / "cache"))
    run = run_cli(
        "--dataset", "hdf5", "--data-dir", data, "--device", "cpu", "--out", "run", *flags(sizes), env=env, cwd=tmp_path
    )
    line = one_line_error(run.stderr.strip())
    assert run.returncode == 1 and line.startswith(
        "error: the vrnn-gmm network does not fit in the memory of cpu (an allocation of "
    ), run.stderr[-2000:]
    assert line.endswith(
        " failed); choose smaller sizes (now --hidden 10000000 --z-dim 2 --x-features 4 --z-features 4 "
        "--enc-hidden 4 --prior-hidden 4 --dec-hidden 4 --mlp-layers 1 --components 2)"
    )
    assert not (tmp_path / "run").exists()
    config = make_config("hershey")
    with pytest.raises(TrainingError) as error, network_fits(config, torch.device("cuda:0")):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of")
    assert str(error.value).startswith(
        "the vrnn-gmm network does not fit in the memory of cuda:0 (an allocation of 20.00 GiB failed); choose "
        "smaller sizes (now --hidden 128 --z-dim 16 "
    )
    with pytest.raises(RuntimeError, match="^mat1 and mat2 shapes"), network_fits(config, "cpu"):  # not memory: as is
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


def test_a_saved_run_too_big_for_this_machine_is_one_line_in_evaluation_and_sampling(tmp_path, capsys):
    """A checkpoint from a machine with more memory (here: its config asks for ten million LSTM units): evaluate_ll.py
    and sample.py say in one line that its network does not fit, and where to load it, instead of a traceback."""
    data = str(tmp_path / "data.h5")
    splits = {s: [torch.randn(6, 2).numpy() for _ in range(4)] for s in ("train", "valid", "test")}
    write_h5(data, splits, kind="real", name="tiny", mean=[0, 0], std=[1, 1], source="tests")
    run_dir = train(
        make_config("hdf5", data_dir=data, max_steps=1, out=str(tmp_path / "run"), **TINY_SIZES), quiet=True
    )
    state = load_checkpoint(os.path.join(run_dir, "last.pt"))
    state["config"]["hidden"] = 10**7
    big = str(tmp_path / "big.pt")
    torch.save(state, big)
    for script, argv in (
        ("evaluate_ll", ["--device", "cpu"]),
        ("sample", ["--num", "1", "--out", str(tmp_path / "s")]),
    ):
        with pytest.raises(SystemExit) as stop:
            fresh_script(script).main(["--checkpoint", big, *argv])
        message = str(stop.value.code)
        assert message.startswith("error: the vrnn-gmm network of this run does not fit in the memory of cpu"), message
        assert "; load it on a machine with more memory (--hidden 10000000 --z-dim 2 " in message, message


@pytest.mark.parametrize(
    "settings,said,objective",
    [
        (dict(model="vrnn-gauss"), "train ELBO/seq -", "ELBO"),
        (dict(model="vrnn-gauss", free_bits=0.5), " with free bits, valid ELBO/seq", "ELBO with free bits"),
        (dict(model="vrnn-gauss", kl_anneal_epochs=2), " with KL weight, valid ELBO/seq", "ELBO with KL weight"),
        (dict(model="rnn-gauss", free_bits=0.5), "train ELBO/seq -", "ELBO"),  # no KL term: the ELBO itself
        (dict(model="vrnn-gauss", elbo="iwae", particles=2), "train IWAE(K=2)/seq -", "IWAE(K=2)"),
    ],
)
def test_the_epoch_line_names_what_training_maximized(tmp_path, small_handwriting, capsys, settings, said, objective):
    """And so does the log's epoch record, which labels the training curve of curves.png's panel (b)."""
    settings = {**TINY_SIZES, "free_bits": 0, "kl_anneal_epochs": 0, **settings}
    config = make_config("hdf5", data_dir=small_handwriting, out=str(tmp_path / "run"), epochs=1, **settings)
    run_dir = train(config)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1: train"))
    assert said in line and ("with" in said) == (" with " in line), line
    epochs = [r for r in read_log(run_dir) if r["event"] == "epoch"]
    assert [r["objective"] for r in epochs] == [objective]


@pytest.mark.parametrize("changes,afresh", [(dict(lr=1e-4), False), (dict(elbo="iwae", particles=2), True)])
def test_a_new_objective_on_resume_starts_the_best_score_afresh(tmp_path, small_handwriting, changes, afresh):
    """best_valid (what best.pt and early stopping go by) is the trained objective's validation score: the ELBO, or
    the IWAE / FIVO bound; resumed with another, the old best is not comparable and counts for nothing."""
    run = str(tmp_path / "run")
    sizes = {**TINY_SIZES, "free_bits": 0, "kl_anneal_epochs": 0}
    train(make_config("hdf5", data_dir=small_handwriting, out=run, epochs=1, model="vrnn-gauss", **sizes), quiet=True)
    saved = load_checkpoint(os.path.join(run, "last.pt"))
    assert saved["progress"]["best_valid"] > -1e9
    config = make_config("hdf5", data_dir=small_handwriting, out=run, epochs=2, model="vrnn-gauss", **sizes, **changes)
    trainer = train_module.Trainer(config, resume=run, quiet=True)
    try:
        best = trainer.progress.best_valid
    finally:
        trainer.close()
    assert best == (-math.inf if afresh else saved["progress"]["best_valid"])
