"""A run directory: what it holds, who may write it, and how it is written so that nothing is lost.

    RUN/config.json   the resolved configuration
    RUN/log.jsonl     one JSON object per line (train records, an epoch record after each epoch, an end record)
    RUN/last.pt       the latest checkpoint; RUN/best.pt the one with the best validation bound
    RUN/samples.png, RUN/curves.png   the pictures made at the end
    RUN/.lock         held (fcntl) by the process that trains into RUN, with its pid inside

Guarantees: one process trains into a directory at a time (a second one is told which pid holds
it); a new run never writes into a directory that holds another run unless asked to clear it first
(`--overwrite`), but for what a run stopped before its first checkpoint left (its config.json and
log: nothing to resume), which a new run replaces; checkpoints (and config.json, and the log cut
back on resume) are written to a temporary file, flushed to disk and renamed, so a kill or a full
disk leaves the previous one intact; log lines are appended whole, a torn last line (a kill or a
full disk mid-write), or a line no run writes, is dropped when the log is read; temporary files of a
killed writer (NAME.tmpPID of the run's own files, nothing else) are removed the next time the directory is
opened; a run that fails before it writes anything (bad data, a
Ctrl-C at start-up) leaves no directory behind.
"""

import contextlib
import errno
import fnmatch
import glob
import json
import os

import torch

from pyro_vrnn.data.tempfiles import TEMP_NAME
from pyro_vrnn.train.process import TrainingError

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

RUN_FILES = ("config.json", "log.jsonl", "last.pt", "best.pt", "samples.png", "curves.png")
# What the other scripts write into a run directory by default (analyze.py, sample.py into samples/, table1.py's
# evaluations): part of the run, deleted with it by --overwrite.
RUN_OUTPUTS = (
    "figure2-*.png",
    "figure2-*.csv",
    "evaluation-*.json",
    "samples/samples.png",
    "samples/samples.npz",
    "samples/samples-[0-9][0-9]*.wav",
)
CONFIG_KEYS = {"dataset", "model", "checkpoint_every"}  # some of what every config.json of a run holds


def describe_os_error(error, path, doing):
    """One line for an OSError while `doing` `path`: a full disk or a read-only place says so."""
    what = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EIO: "an input/output error (a failing disk?)",
    }.get(error.errno, error.strerror or str(error))
    return f"cannot {doing} {path}: {what}"


class RunDirectory:
    """The run directory of one training process (rank 0; other ranks write nothing)."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.lock_file = None
        self.created = self.created_lock = False  # by open(): what close(abandon=True) may remove
        self.previous_holder = ""  # what .lock held before we took it

    def file(self, name):
        return os.path.join(self.path, name)

    def holds_a_run(self):
        return any(os.path.exists(self.file(name)) for name in ("config.json", "log.jsonl", "last.pt", "best.pt"))

    def checkpointed(self):
        return any(os.path.exists(self.file(name)) for name in ("last.pt", "best.pt"))

    def run_config_here(self):
        """Whether config.json is a run's (a dict with CONFIG_KEYS), not another program's."""
        try:
            with open(self.file("config.json")) as f:
                config = json.load(f)
        except (OSError, ValueError):  # missing, unreadable, or not JSON: not a run's
            return False
        return isinstance(config, dict) and CONFIG_KEYS <= set(config)

    def never_checkpointed(self):
        """True for what a run stopped before its first checkpoint (two Ctrl-Cs, a kill, a full disk) leaves: its
        config.json and log.jsonl, no last.pt or best.pt. Nothing there can be resumed, so a new run may replace it
        without --overwrite. Files that are not a run's (another program's config.json) do not count as one."""
        return self.holds_a_run() and not self.checkpointed() and self.run_config_here()

    def foreign_files(self):
        """The run's file names here that another program wrote (a config.json that is not a run's, a log with
        no config.json, and no checkpoint): not a run to resume, replace or delete."""
        if self.checkpointed() or self.run_config_here():
            return []
        return [name for name in ("config.json", "log.jsonl") if os.path.exists(self.file(name))]

    def open(self, resuming, overwrite=False):
        """Create (if needed), lock, clean up after killed writers, and refuse to mix two runs."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise TrainingError(f"--out {self.path} is a file, not a directory; pass a directory for the run")
        self.created = not os.path.exists(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise TrainingError(
                describe_os_error(error, self.path, "create the run directory") + "; pass another --out"
            ) from None
        try:
            self.lock(resuming)
            self.remove_stale_temporaries()
            foreign = self.foreign_files()
            if not resuming and foreign:
                raise TrainingError(
                    f"{self.path} holds {' and '.join(foreign)} of another program, not of a pyro-vrnn run; "
                    "choose another --out (or move those files away)"
                )
            if not resuming and self.holds_a_run() and not overwrite and not self.never_checkpointed():
                raise TrainingError(
                    f"{self.path} holds another run; resume it with --resume {self.path}, "
                    "choose another --out, or pass --overwrite to delete that run first"
                )
        except BaseException:
            self.close(abandon=True)
            raise
        return self

    def clear(self):
        """Delete the run that is here (--overwrite): called once the new run has its data and network, so
        that a new run that cannot start (bad data, a Ctrl-C) leaves the old one as it was."""
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.file(name))
        for pattern in RUN_OUTPUTS:
            for path in glob.glob(self.file(pattern)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
        with contextlib.suppress(OSError):  # only if empty: a file of the user's stays, and the folder with it
            os.rmdir(self.file("samples"))

    def lock(self, resuming=False):
        """Hold RUN/.lock for as long as this process lives, our pid inside: a second trainer fails at once,
        saying who holds it."""
        if fcntl is None:
            return
        path = self.file(".lock")
        created = not os.path.exists(path)
        try:
            self.lock_file = open(path, "a+")
        except OSError as error:
            fix = f"make {self.path} writable" if resuming else "pass an --out you can write to"
            raise TrainingError(describe_os_error(error, path, "write") + f"; {fix}") from None
        self.lock_file.seek(0)
        previous = self.lock_file.read()
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.lock_file.close()
            self.lock_file = None
            holder = f"process {previous.strip()}" if previous.strip() else "another process"
            raise TrainingError(
                f"{self.path} is in use: {holder} is training into it; wait for it to finish "
                "or stop it, or choose another --out"
            ) from None
        self.created_lock, self.previous_holder = created, previous
        try:
            self.write_lock(str(os.getpid()))
        except OSError as error:  # a full disk: nothing of ours is in the directory yet
            self.close(abandon=True)
            fix = "free some space and resume again" if resuming else "free some space or pass another --out"
            raise TrainingError(describe_os_error(error, path, "write") + f"; {fix}") from None

    def write_lock(self, text):
        self.lock_file.seek(0)
        self.lock_file.truncate()
        self.lock_file.write(text)
        self.lock_file.flush()

    def close(self, abandon=False):
        """Release the lock. abandon: the run was refused or failed before writing anything (bad data, a
        Ctrl-C at start-up): what open() created (.lock, the directory) goes, and a .lock that was there
        gets its old content back, so that the directory is as it was."""
        if self.lock_file is None:
            return
        if abandon:
            with contextlib.suppress(OSError):  # while still held: no one else can be using the lock file
                if self.created_lock and (not self.holds_a_run() or self.foreign_files()):
                    os.remove(self.file(".lock"))
                    if self.created:
                        os.rmdir(self.path)  # only if empty: never anyone else's files
                else:
                    self.write_lock(self.previous_holder)
        fcntl.flock(self.lock_file, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):  # the pid that a full disk did not take is dropped: the lock is released
            self.lock_file.close()
        self.lock_file = None

    def remove_stale_temporaries(self):
        """Temporary files of writers that were killed (we hold the lock: no other writer is alive): NAME.tmpPID of
        the files a run writes (RUN_FILES, RUN_OUTPUTS), and nothing else (a user's notes.tmp.txt stays)."""
        for entry in os.listdir(self.path):
            match = TEMP_NAME.match(entry)
            if match and (
                match["target"] in RUN_FILES
                or any(fnmatch.fnmatchcase(match["target"], pattern) for pattern in RUN_OUTPUTS if "/" not in pattern)
            ):
                with contextlib.suppress(OSError):  # a read-only run: the next writable start removes it
                    os.remove(self.file(entry))

    # -- checkpoints ---------------------------------------------------------------------------

    def replace_file(self, name, write, binary=False):
        """RUN/name written by `write(file)` into a temporary file, flushed to disk, then renamed over it: all
        or nothing. A failure (a full or failing disk, a second Ctrl-C) leaves the old file and no temporary."""
        path, tmp = self.file(name), self.file(f"{name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise

    def save(self, name, state):
        """A checkpoint, written atomically; an OSError is one line saying the previous one is intact."""
        path = self.file(name)
        try:
            self.replace_file(name, lambda f: torch.save(state, f), binary=True)
        except OSError as error:
            kept = " (the previous one is intact)" if os.path.exists(path) else ""
            raise TrainingError(describe_os_error(error, path, "write the checkpoint") + kept + self.go_on()) from None

    def go_on(self):
        """How to go on after a full disk: resume from last.pt, or, before the first one, start again."""
        if os.path.exists(self.file("last.pt")):
            return f"; free some space and resume with --resume {self.path}"
        again = " with --overwrite" if os.path.exists(self.file("best.pt")) else ""
        return (
            "; no last.pt was written yet, so there is nothing to resume: free some space and start the run "
            f"again, the same command{again}"
        )

    # -- the log -------------------------------------------------------------------------------

    def log(self, record):
        """Append one JSON line. Written in one call and flushed; a failure is one line naming the file."""
        path = self.file("log.jsonl")
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as error:
            advice = (  # the same as go_on's, with what is kept
                f"; the last checkpoint is intact: free some space and resume with --resume {self.path}"
                if os.path.exists(self.file("last.pt"))
                else self.go_on()
            )
            raise TrainingError(describe_os_error(error, path, "append to the log") + advice) from None

    def truncate_log(self, step):
        """On resume: keep the records up to the checkpoint's step (later ones will be written again),
        drop an end record and a torn last line."""
        path = self.file("log.jsonl")
        kept = [json.dumps(r) + "\n" for r in read_log(path) if r.get("step", 0) <= step and r.get("event") != "end"]
        self.write_text("log.jsonl", "".join(kept))

    def write_config(self, config):
        self.write_text("config.json", json.dumps(config, indent=2))

    def write_text(self, name, text):
        try:
            self.replace_file(name, lambda f: f.write(text))
        except OSError as error:
            raise TrainingError(
                describe_os_error(error, self.file(name), "write") + "; free some space (or make "
                f"{self.path} writable) and run again"
            ) from None


def read_log(path):
    """The records of a log.jsonl: JSON objects with an "event" and a whole-number "step", as a run writes them; a
    line that does not parse (torn by a kill or a full disk) or is no such record (42, [1, 2], a step of null) is
    dropped. A log that cannot be read (a folder in its place) is one line."""
    if not os.path.lexists(path):
        return []
    records = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if (
                    isinstance(record, dict)
                    and isinstance(record.get("event"), str)
                    and type(record.get("step")) is int
                ):
                    records.append(record)
    except (OSError, UnicodeDecodeError) as error:
        what = error.strerror or str(error) if isinstance(error, OSError) else "it is not text"
        raise TrainingError(
            f"cannot read the log {path} ({what}); a run's log.jsonl is a file of JSON lines: move it away "
            "(the run then starts a new log) and run again"
        ) from None
    return records


def resume_command(run_dir, world_size):
    if world_size == 1:
        return f"python run/svi.py --resume {run_dir}"
    return f"the same torchrun command ({world_size} processes in all) with --resume {run_dir}"


def resume_path(resume):
    """The last.pt that --resume names: a run directory or its last.pt. best.pt is refused: resuming from
    it would rewind last.pt to an earlier step and cut the log."""
    if not os.path.exists(resume):
        raise TrainingError(
            f"--resume {resume}: no such run directory or last.pt; pass a directory that run/svi.py wrote"
        )
    path = os.path.join(resume, "last.pt") if os.path.isdir(resume) else resume
    if os.path.isdir(resume) and RunDirectory(resume).never_checkpointed():
        raise TrainingError(
            f"--resume {resume}: the run stopped before its first checkpoint, so there is nothing to resume; "
            f"start it again: the same command with --out {resume}"
        )
    folder = os.path.dirname(path) or "."
    if os.path.basename(path) == "best.pt":
        raise TrainingError(
            f"--resume continues a run from its last.pt; {path} is not one (resuming from best.pt "
            f"would rewind the run and cut its log): pass the run directory {folder}"
        )
    if os.path.basename(path) != "last.pt":  # config.json, the log, a picture
        raise TrainingError(
            f"--resume takes a run directory or its last.pt, and {path} is neither: pass the run directory {folder}"
        )
    return path


def newest_run(root, models=None):
    """The run directory under `root` (nested ones too, as table1.py's) whose best.pt or last.pt was written last;
    with `models`, the newest of the runs of those models (their config.json's "model"). The scripts' default
    --checkpoint (evaluate_ll.py, write.py)."""
    checkpoints = [
        path for name in ("best.pt", "last.pt") for path in glob.glob(os.path.join(root, "**", name), recursive=True)
    ]
    if models is not None:
        checkpoints = [path for path in checkpoints if run_model(os.path.dirname(path)) in models]
    if not checkpoints:
        which, train = (
            ("runs", "run/svi.py")
            if models is None
            else (
                f"runs of {' or '.join(models)}",
                f"run/svi.py --model {models[0]}",
            )
        )
        raise TrainingError(f"no {which} found under {root}/; train one with {train} or pass --checkpoint")
    return os.path.dirname(max(checkpoints, key=os.path.getmtime))


def run_model(run_dir):
    """The model of the run in `run_dir` (its config.json's "model"), or None where config.json is not a run's."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config.get("model") if isinstance(config, dict) else None
