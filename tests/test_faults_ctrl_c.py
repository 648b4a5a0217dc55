"""A Ctrl-C in the entry points other than run/svi.py (whose signals tests/test_faults_train.py sends): while
torch is imported, or while the script works, it ends with one line saying what it stopped and exit status
130 (143 for a SIGTERM, in a script at work or in a training), never a traceback."""

import glob
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY, fresh_script, snapshot
from svi_slow import start, wait_for

import pyro_vrnn.train.loop
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.run_directory import read_log

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


def sigterm(*args, **kwargs):
    signal.raise_signal(signal.SIGTERM)  # kill PID, or a scheduler's preemption


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
@pytest.mark.parametrize("signal_at_work,code,word", [(ctrl_c, 130, "interrupted"), (sigterm, 143, "terminated")])
def test_a_ctrl_c_while_a_script_works_is_one_line(
    checkpoint, tmp_path, monkeypatch, capsys, script, works_in, flags, said, signal_at_work, code, word
):
    """And a SIGTERM: the same line with "terminated" and 143; SIGTERM is as it was after main()."""
    module = fresh_script(script)
    monkeypatch.setattr(module, works_in, signal_at_work)
    with pytest.raises(SystemExit) as stop:
        try:
            module.main([flag.format(ckpt=checkpoint, out=tmp_path) for flag in flags])
        except KeyboardInterrupt:  # not the suite's to stop
            pytest.fail("the signal left main() as a KeyboardInterrupt: a traceback")
    err = capsys.readouterr().err
    assert stop.value.code == code and "Traceback" not in err and err.strip().splitlines()[-1] == f"{word}; {said}"
    assert not any(snapshot(tmp_path).values())  # no file: at most the folders the flags name
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_ctrl_c_while_evaluating_is_one_line(checkpoint, tmp_path, sig, code, word):
    """As the user saw it: run/evaluate_ll.py with many samples, a real SIGINT (or SIGTERM) once its progress bar
    is up."""
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
    proc.send_signal(sig)
    proc.wait(timeout=60)
    text = err.read_text()
    assert proc.returncode == code and "Traceback" not in text and text.strip().splitlines()[-1] == f"{word}; {NOTHING}"


@pytest.mark.parametrize("script", ["evaluate_ll", "sample", "analyze", "figure3", "table1", "benchmark"])
def test_a_ctrl_c_while_importing_torch_is_one_line(script):
    proc = start([], os.path.join(ROOT, "run", f"{script}.py"))
    wait_for(proc, lambda: "libtorch" in open(f"/proc/{proc.pid}/maps").read())  # torch's import is under way
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.strip() == "interrupted while starting; nothing was written", stderr


@pytest.mark.parametrize("sig,code,out", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_a_table_stopped_says_to_run_its_command_again(
    small_handwriting, tmp_path, monkeypatch, capsys, sig, code, out
):
    """A signal in a training: 130 or 143 and table1.py's own command (with the default --out spelled out, or
    it would start a new table); a Ctrl-C while evaluating: 130 and the same. Run again, the table resumes."""
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", "hdf5", "--data-dir", small_handwriting, "--models", "rnn-gauss", "--seeds", "0"]
    argv += ["--epochs", "1", "-k", "2", "--log-every", "1", "--quiet", *TINY] + (["--out", "t"] if out else [])
    table1, real_step = fresh_script("table1"), pyro_vrnn.train.loop.svi_step

    def step_then_signal(*args, **kwargs):
        signal.raise_signal(sig)  # arrives while the first step runs
        return real_step(*args, **kwargs)

    def stopped(works_in, value):
        with monkeypatch.context() as patch, pytest.raises(SystemExit) as stop:
            patch.setattr(*works_in, value)
            table1.main(argv)
        return stop.value.code, capsys.readouterr().err.strip().rpartition("\n")[2]  # the code, the last line

    status, line = stopped((pyro_vrnn.train.loop, "svi_step"), step_then_signal)
    table = "t" if out else glob.glob("runs/table1-hdf5-*")[0]
    again = "python run/table1.py " + shlex.join(argv + ([] if out else ["--out", table]))
    assert (status, line) == (code, f"stopped, last.pt written; resume the table with: {again}")
    run = os.path.join(table, "rnn-gauss", "seed-0")
    assert load_checkpoint(os.path.join(run, "last.pt"))["progress"]["step"] == 1
    argv = shlex.split(again)[2:]
    assert stopped((table1, "evaluate_checkpoint"), ctrl_c) == (
        130,
        f"interrupted; finished runs and evaluations stand; resume the table with: {again}",
    )
    table1.main(argv)  # the advice, followed: the run goes on from its step, once each
    steps = [r["step"] for r in read_log(os.path.join(run, "log.jsonl")) if r["event"] == "train"]
    assert (
        steps == list(range(1, len(steps) + 1)) and len(steps) > 1 and os.path.exists(os.path.join(table, "table1.md"))
    )


def a_table_of_two_jobs_in_training(small_handwriting, tmp_path):
    """(proc, argv, table, running): table1.py --jobs 2 over four runs, started in a session of its own (its own
    process group, as a terminal's foreground job; its processes can be found after it exits), once both running
    trainings have taken steps. rnn-gauss's two seeds run; vrnn-gauss's two are queued."""
    table = tmp_path / "t"
    argv = ["--dataset", "hdf5", "--data-dir", small_handwriting, "--models", "rnn-gauss", "vrnn-gauss"]
    argv += ["--seeds", "0", "1", "--epochs", "1000", "--jobs", "2", "--log-every", "1", "--out", str(table), *TINY]
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "run", "table1.py"), *argv],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    running = [table / "rnn-gauss" / f"seed-{seed}" for seed in (0, 1)]
    wait_for(proc, lambda: all((run / "log.jsonl").exists() for run in running), timeout=120)
    time.sleep(1)  # into the training steps
    return proc, argv, table, running


def test_a_ctrl_c_stops_a_table_of_several_jobs_and_starts_none_of_the_queued_runs(small_handwriting, tmp_path):
    """table1.py --jobs 2: a Ctrl-C at the terminal (to the whole process group) stops the two running trainings,
    each with its last.pt, and the two queued runs never start; the table exits 130, in one line saying how to
    go on. (A worker waiting for a job ignores the Ctrl-C: run_job's share_stop.)"""
    proc, _, table, running = a_table_of_two_jobs_in_training(small_handwriting, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    assert "resume the table with: python run/table1.py" in err.strip().splitlines()[-1]
    assert all((run / "last.pt").exists() for run in running)
    assert not (table / "vrnn-gauss").exists()  # the queued runs


def session_processes(session):
    """The live processes of a session (its leader's pid): the table and every worker it started."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()  # after the command name: state, ppid, pgrp, session
        except (OSError, ValueError):
            continue
        if entry.isdigit() and fields[0] != "Z" and int(fields[3]) == session:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("to_group", [False, True], ids=["to the table alone", "to its process group"])
def test_a_sigterm_stops_a_table_of_several_jobs_as_a_ctrl_c_does(small_handwriting, tmp_path, to_group):
    """table1.py --jobs 2 and a scheduler's SIGTERM, to the table's process alone or to its whole group: the running
    trainings checkpoint and stop, the queued runs never start, the table says how to go on and exits 143, and no
    worker is left behind (they had trained and evaluated every remaining job after a SIGTERM to the table alone)."""
    proc, argv, table, running = a_table_of_two_jobs_in_training(small_handwriting, tmp_path)
    (os.killpg if to_group else os.kill)(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"stopped, last.pt written; resume the table with: python run/table1.py {shlex.join(argv)}"
    )
    assert all((run / "last.pt").exists() for run in running)
    assert not (table / "vrnn-gauss").exists()  # the queued runs
    deadline = time.time() + 10  # multiprocessing's resource tracker ends once it sees the table gone
    while session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    left = {pid: open(f"/proc/{pid}/cmdline").read().replace("\0", " ") for pid in session_processes(proc.pid)}
    assert left == {}
