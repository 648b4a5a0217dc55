"""A run directory: what it holds, who may write it, and how it is written so that nothing is lost.

    RUN/config.json   the resolved configuration
    RUN/log.jsonl     one JSON object per line (train records, an epoch record after each epoch, an end record)
    RUN/last.pt       the latest checkpoint; RUN/best.pt the one with the best validation bound
    RUN/samples.png, RUN/curves.png   the pictures made at the end
    RUN/.lock         held (fcntl) by the process that trains into RUN, with its pid inside

Guarantees: one process trains into a directory at a time (a second one is told which pid holds
it); a new run never writes into a directory that holds another run unless asked to clear it first
(`--overwrite`); checkpoints are written to a temporary file, flushed to disk and renamed, so a
kill or a full disk leaves the previous one intact; log lines are appended whole, a torn last line
(a kill or a full disk mid-write) is dropped when the log is read; temporary files of a killed
writer are removed the next time the directory is opened.
"""
import errno
import glob
import json
import os

import torch

from pyro_vrnn.runtime import TrainingError

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

RUN_FILES = ("config.json", "log.jsonl", "last.pt", "best.pt", "samples.png", "curves.png")


def describe_os_error(error, path, doing):
    """One line for an OSError while `doing` `path`: a full disk or a read-only place says so."""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
            errno.EIO: "an input/output error (a failing disk?)"}.get(error.errno, error.strerror or str(error))
    return f"cannot {doing} {path}: {what}"


class RunDirectory:
    """The run directory of one training process (rank 0; other ranks write nothing)."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.lock_file = None

    def file(self, name):
        return os.path.join(self.path, name)

    def holds_a_run(self):
        return any(os.path.exists(self.file(name)) for name in ("config.json", "log.jsonl", "last.pt", "best.pt"))

    def open(self, resuming, overwrite=False):
        """Create (if needed), lock, clean up after killed writers, and refuse to mix two runs."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise TrainingError(f"--out {self.path} is a file, not a directory; pass a directory for the run")
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as error:
            raise TrainingError(describe_os_error(error, self.path, "create the run directory")
                                + "; pass another --out") from None
        self.lock()
        self.remove_stale_temporaries()
        if not resuming and self.holds_a_run():
            if not overwrite:
                raise TrainingError(f"{self.path} holds another run; resume it with --resume {self.path}, "
                                    "choose another --out, or pass --overwrite to delete that run first")
            for name in RUN_FILES:
                if os.path.exists(self.file(name)):
                    os.remove(self.file(name))
        return self

    def lock(self):
        """Hold RUN/.lock for as long as this process lives: a second trainer fails at once, saying who holds it."""
        if fcntl is None:
            return
        path = self.file(".lock")
        try:
            self.lock_file = open(path, "a+")
        except OSError as error:
            raise TrainingError(describe_os_error(error, path, "write") + "; pass an --out you can write to") from None
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.lock_file.seek(0)
            holder = self.lock_file.read().strip() or "another process"
            self.lock_file.close()
            self.lock_file = None
            raise TrainingError(f"{self.path} is in use: process {holder} is training into it; wait for it to "
                                "finish or stop it, or choose another --out") from None
        self.lock_file.seek(0)
        self.lock_file.truncate()
        self.lock_file.write(str(os.getpid()))
        self.lock_file.flush()

    def close(self):
        if self.lock_file is not None:
            fcntl.flock(self.lock_file, fcntl.LOCK_UN)
            self.lock_file.close()
            self.lock_file = None

    def remove_stale_temporaries(self):
        """Temporary files of writers that were killed (we hold the lock: no other writer is alive)."""
        for path in glob.glob(self.file("*.tmp*")):
            os.remove(path)

    # -- checkpoints ---------------------------------------------------------------------------

    def save(self, name, state):
        """torch.save to a temporary file, flushed to disk, then renamed over RUN/name: all or nothing."""
        path, tmp = self.file(name), self.file(f"{name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as error:
            if os.path.exists(tmp):
                os.remove(tmp)
            kept = " (the previous one is intact)" if os.path.exists(path) else ""
            raise TrainingError(describe_os_error(error, path, "write the checkpoint") + kept
                                + f"; free some space and resume with --resume {self.path}") from None

    # -- the log -------------------------------------------------------------------------------

    def log(self, record):
        """Append one JSON line. Written in one call and flushed; a failure is one line naming the file."""
        path = self.file("log.jsonl")
        try:
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as error:
            raise TrainingError(describe_os_error(error, path, "append to the log") + "; the last checkpoint "
                                f"is intact: free some space and resume with --resume {self.path}") from None

    def truncate_log(self, step):
        """On resume: keep the records up to the checkpoint's step (later ones will be written again),
        drop an end record and a torn last line."""
        path = self.file("log.jsonl")
        kept = [json.dumps(r) + "\n" for r in read_log(path) if r.get("step", 0) <= step and r.get("event") != "end"]
        tmp = path + f".tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)


def read_log(path):
    """The records of a log.jsonl; a line that does not parse (torn by a kill or a full disk) is dropped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
