"""run/svi.py exactly as a user runs it (as __main__, its signal handling included), made slower where a
test needs time to send it a signal, and the helpers that start and watch it (tests/test_faults_train.py).
Test-only; the script is set by the environment:

    SLOW_SVI_STEP=S    every SVI step takes S seconds longer (after the step itself)
    SLOW_SVI_LOAD=S    loading the data takes S seconds longer, after creating the file SLOW_SVI_READY
"""

import os
import runpy
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pyro_vrnn.data  # noqa: E402
import pyro_vrnn.train.loop  # noqa: E402


def start(argv, script=os.path.abspath(__file__), **env):
    """This script (or another) in a new process, with `env` added to the environment."""
    return subprocess.Popen(
        [sys.executable, script, *argv],
        cwd=ROOT,
        env=dict(os.environ, **env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(proc, ready, timeout=60):
    """Until ready() (polled), failing with the process's stderr if it ends first or the time is up."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.02)


def then_sleep(function, seconds):
    def call(*args, **kwargs):
        result = function(*args, **kwargs)
        time.sleep(seconds)  # after the step: a signal lands between two steps, as it mostly does
        return result

    return call


def sleep_first(function, seconds, ready):
    def call(*args, **kwargs):
        open(ready, "w").close()  # the test's cue: the signal must land while this runs
        time.sleep(seconds)
        return function(*args, **kwargs)

    return call


if __name__ == "__main__":
    if os.environ.get("SLOW_SVI_STEP"):
        pyro_vrnn.train.loop.svi_step = then_sleep(pyro_vrnn.train.loop.svi_step, float(os.environ["SLOW_SVI_STEP"]))
    if os.environ.get("SLOW_SVI_LOAD"):
        pyro_vrnn.data.load = sleep_first(
            pyro_vrnn.data.load, float(os.environ["SLOW_SVI_LOAD"]), os.environ["SLOW_SVI_READY"]
        )
    script = os.path.join(ROOT, "run", "svi.py")
    sys.argv = [script, *sys.argv[1:]]
    runpy.run_path(script, run_name="__main__")
