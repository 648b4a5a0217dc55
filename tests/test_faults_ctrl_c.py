"""A Ctrl-C in the entry points other than run/svi.py (whose signals tests/test_faults_train.py sends): while
torch is imported, or while the script works, it ends with one line saying what it stopped and exit status
130, never a traceback."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, fresh_script, snapshot
from svi_slow import start, wait_for

NOTHING = "nothing was written"


@pytest.fixture(scope="module")
def checkpoint(small_handwriting, tmp_path_factory):
    """last.pt of a VRNN-GMM trained for one step on the small handwriting file."""
    run = tmp_path_factory.mktemp("ctrl-c") / "run"
    flags = ["--dataset", "hdf5", "--data-dir", small_handwriting, "--max-steps", "1", "--out", str(run), *TINY]
    fresh_script("svi").main(flags)
    return os.path.join(run, "last.pt")


def ctrl_c(*args, **kwargs):
    signal.raise_signal(signal.SIGINT)  # a real Ctrl-C, while the script is at work


@pytest.mark.parametrize(
    "script,works_in,flags,said",
    [
        ("evaluate_ll", "evaluate_checkpoint", ["--checkpoint", "{ckpt}", "--json", "{out}/ll.json"], NOTHING),
        ("sample", "sample_run", ["--checkpoint", "{ckpt}", "--out", "{out}/samples"], NOTHING),
        ("analyze", "figure2", ["--checkpoint", "{ckpt}", "--out", "{out}"], NOTHING),
        ("figure3", "figure3", ["--rnn", "{ckpt}", "--vrnn", "{ckpt}", "--out", "{out}/f3.png"], NOTHING),
        (
            "benchmark",
            "bench_training",
            ["--quick", "--json", "{out}/b.json"],
            "the rows measured so far are in the --json file, if one was given",
        ),
    ],
)
def test_a_ctrl_c_while_a_script_works_is_one_line(
    checkpoint, tmp_path, monkeypatch, capsys, script, works_in, flags, said
):
    module = fresh_script(script)
    monkeypatch.setattr(module, works_in, ctrl_c)
    with pytest.raises(SystemExit) as stop:
        try:
            module.main([flag.format(ckpt=checkpoint, out=tmp_path) for flag in flags])
        except KeyboardInterrupt:  # not the suite's to stop
            pytest.fail("the Ctrl-C left main() as a KeyboardInterrupt: a traceback")
    err = capsys.readouterr().err
    assert stop.value.code == 130 and "Traceback" not in err and err.strip().splitlines()[-1] == f"interrupted; {said}"
    assert not any(snapshot(tmp_path).values())  # no file: at most the folders the flags name


def test_a_ctrl_c_while_evaluating_is_one_line(checkpoint, tmp_path):
    """As the user saw it: run/evaluate_ll.py with many samples, a real SIGINT once its progress bar is up."""
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "run", "evaluate_ll.py"), "--checkpoint", checkpoint, "-k", "100000"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=f,
        )
    deadline = time.time() + 120
    while "evaluating" not in err.read_text():
        assert proc.poll() is None and time.time() < deadline, err.read_text()[-2000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    text = err.read_text()
    assert (
        proc.returncode == 130
        and "Traceback" not in text
        and text.strip().splitlines()[-1] == f"interrupted; {NOTHING}"
    )


@pytest.mark.parametrize("script", ["evaluate_ll", "sample", "analyze", "figure3", "table1", "benchmark"])
def test_a_ctrl_c_while_importing_torch_is_one_line(script):
    proc = start([], os.path.join(ROOT, "run", f"{script}.py"))
    wait_for(proc, lambda: "libtorch" in open(f"/proc/{proc.pid}/maps").read())  # torch's import is under way
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.strip() == "interrupted while starting; nothing was written", stderr
