"""A Ctrl-C (or a SIGTERM) in a run/ script: one line saying what it stopped, and exit status 130 (143) as
shells expect, never a traceback. Only signal and sys are imported, so that a script can take this up before
torch and Pyro, whose import takes seconds.

    from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

    if __name__ == "__main__":
        while_starting()                 # until main() begins: "interrupted while starting; ..."

    @one_line_ctrl_c("nothing was written")
    def main(argv=None): ...             # inside: "interrupted; nothing was written" ("terminated; ...")

(Training says more: it checkpoints first, pyro_vrnn/train/process.StopRequest, run/svi.py.)
"""

import functools
import signal
import sys


def exit_interrupted(line, status=130):
    """End the process with `line` on stderr (on a line of its own, after a progress bar) and `status`: 130
    after SIGINT, 143 after SIGTERM."""
    print("\n" + line, file=sys.stderr, flush=True)
    sys.exit(status)


def _starting(signum, frame):
    exit_interrupted("interrupted while starting; nothing was written")


def while_starting():
    """Until main() begins, a Ctrl-C ends the script with one line; left alone where the shell has us ignore
    SIGINT (a background job). Call it only when the script runs as __main__, not when a test imports it."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, _starting)


def main_takes_over():
    """From here a Ctrl-C is a KeyboardInterrupt again, for main() to say what it stopped."""
    if signal.getsignal(signal.SIGINT) is _starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class Terminated(KeyboardInterrupt):
    """A SIGTERM, raised where the script is at work as a Ctrl-C's KeyboardInterrupt is: the same way out."""


def _terminated(signum, frame):
    raise Terminated()


def exit_status(stop):
    """What a shell expects after the interrupt `stop`: 143 (128 + SIGTERM) for a SIGTERM, 130 for a Ctrl-C."""
    return 143 if isinstance(stop, Terminated) else 130


def one_line_ctrl_c(said, sigterm=True):
    """Decorate a script's main(): a Ctrl-C in it ends the process with `interrupted; <said>` and status 130, and
    (with `sigterm`, where nothing else handles SIGTERM) a SIGTERM with `terminated; <said>` and 143."""

    def decorate(main):
        @functools.wraps(main)
        def run(*args, **kwargs):
            main_takes_over()
            take_sigterm = sigterm and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            if take_sigterm:
                signal.signal(signal.SIGTERM, _terminated)
            try:
                return main(*args, **kwargs)
            except KeyboardInterrupt as stop:
                exit_interrupted(
                    f"{'terminated' if isinstance(stop, Terminated) else 'interrupted'}; {said}", exit_status(stop)
                )
            finally:
                if take_sigterm:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)

        return run

    return decorate
