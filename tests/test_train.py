"""Training on the embedded handwriting data: the loss falls, a killed run resumes exactly,
divergence stops cleanly, and the command line reports bad input in one line."""
import gc
import json
import os
import signal
import subprocess
import sys
import time

import pyro
import pytest
import torch

import models
from pyro_vrnn import data as datasets
from pyro_vrnn.config import make_config
from pyro_vrnn.train import TrainingError, frozen_heap, load_checkpoint, train, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden=24, z_dim=4, x_features=16, z_features=16, enc_hidden=16, prior_hidden=16,
            dec_hidden=16, components=3, batch_size=16, lr=3e-3)


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def same_parameters(a, b):
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_fifty_steps_lower_the_loss(tmp_path, hershey_cache):
    config = make_config("hershey", model="vrnn-gmm", out=str(tmp_path / "run"), epochs=100,
                         max_steps=50, log_every=5, **TINY)
    splits = datasets.load("hershey")
    pyro.set_rng_seed(config.seed)
    model, guide, vrnn = models.build(config, splits["valid"].kind, splits["valid"].dim)
    before = validate(model, guide, vrnn, splits["valid"], config, torch.device("cpu"), 0, 1)
    run_dir = train(config, quiet=True)
    state = load_checkpoint(os.path.join(run_dir, "last.pt"))
    assert state["progress"]["step"] == 50
    vrnn.load_state_dict(state["model"])
    after = validate(model, guide, vrnn, splits["valid"], config, torch.device("cpu"), 0, 1)
    # The validation ELBO per sequence rises by a clear margin (it starts around -1000 nats).
    assert after["elbo_per_seq"] > before["elbo_per_seq"] + 0.3 * abs(before["elbo_per_seq"])
    # Batches are bucketed by length, so compare the training bound per time step.
    train_elbo = [r["elbo_per_step"] for r in read_log(run_dir) if r["event"] == "train"]
    assert len(train_elbo) == 10
    assert sum(train_elbo[-3:]) / 3 > sum(train_elbo[:3]) / 3 + 0.5


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, os.path.join(ROOT, "run", "svi.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, **kw)


def tiny_flags():
    return [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]


def test_killed_run_resumes_to_the_same_parameters(tmp_path, small_handwriting):
    """An uninterrupted run and a run killed with SIGKILL mid-epoch then resumed end identical."""
    common = ["--dataset", "hdf5", "--data-dir", small_handwriting, "--model", "vrnn-gauss",
              "--epochs", "5", "--checkpoint-every", "2", "--patience", "5", *tiny_flags()]
    straight = run_cli("--out", str(tmp_path / "straight"), *common)
    assert straight.returncode == 0, straight.stderr[-2000:]

    killed_dir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "run", "svi.py"),
                             "--out", str(killed_dir), *common], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    run = run_cli("--dataset", "hdf5", "--data-dir", small_handwriting, "--out", str(tmp_path / "r"),
                  "--max-steps", "2", *tiny_flags())
    assert run.returncode == 0, run.stderr[-2000:]
    bad = run_cli("--resume", str(tmp_path / "r"), "--hidden", "99")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: --hidden 99 differs")


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, hershey_cache, monkeypatch):
    config = make_config("hershey", model="vrnn-gauss", out=str(tmp_path / "run"), max_steps=8,
                         checkpoint_every=2, **TINY)
    adam_step = torch.optim.Adam.step
    steps = {"n": 0}

    def poisoned_step(self, *args, **kwargs):  # the 5th update writes a NaN into a weight
        out = adam_step(self, *args, **kwargs)
        steps["n"] += 1
        if steps["n"] == 5:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoned_step)
    with pytest.raises(TrainingError, match="diverged"):
        train(config, quiet=True)
    state = load_checkpoint(str(tmp_path / "run" / "last.pt"))
    assert state["progress"]["step"] == 4  # the checkpoint before the NaN, not after
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    log = read_log(str(tmp_path / "run"))
    assert log[-1] == {**log[-1], "event": "end", "reason": "nan"}


def test_missing_iam_data_is_one_clear_line(tmp_path):
    run = run_cli("--dataset", "iam", "--data-dir", str(tmp_path / "nowhere"))
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "IAM-OnDB" in lines[0]


def test_the_frozen_heap_skips_old_objects_collects_new_garbage_and_thaws():
    class Node:
        pass

    def cycle():  # garbage that only the collector can free
        a, b = Node(), Node()
        a.other, b.other = b, a
        return id(a)

    assert gc.get_freeze_count() == 0
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # torch and Pyro alone make this many
        cycle()
        assert gc.collect() >= 2  # made inside: collected as usual
        assert not any(type(o) is Node for o in gc.get_objects())
    assert gc.get_freeze_count() == 0  # everything handed back
