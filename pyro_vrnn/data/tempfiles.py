"""Every file or folder the data layer builds is written as TARGET.tmpPID, then renamed into place.

A reader never sees half a cache, and a build killed half-way (a preparation stopped by a signal,
a full disk) leaves only TARGET.tmpPID behind, which the next start removes: here for a target's
own leftovers (remove_orphaned_temps: those of processes that no longer run), and in the package's
`prepare` for the cache folder as a whole (TEMP_NAME, remove_path, under each dataset's lock).
"""

import os
import re
import shutil

TEMP_NAME = re.compile(r"^(?P<target>.+)\.tmp(?P<pid>\d+)$")


def temp_path(target):
    """Where `target` is built before it is moved into place (one name per process)."""
    return f"{target}.tmp{os.getpid()}"


def process_running(pid):
    """Whether process `pid` runs on this machine; True when that cannot be told (then nothing is removed)."""
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it runs, as another user
        return True
    return True


def remove_path(path):
    """Remove a file or a folder tree; True if it is gone (a read-only disk keeps it: False)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def remove_orphaned_temps(target):
    """Remove TARGET.tmpPID left beside `target` by processes that no longer run (killed during a
    build); those of running processes may still be written, and stay. Returns the paths removed."""
    folder, base = os.path.split(os.path.abspath(target))
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = TEMP_NAME.match(entry)
        if (
            match
            and match["target"] == base
            and int(match["pid"]) != os.getpid()
            and not process_running(int(match["pid"]))
            and remove_path(os.path.join(folder, entry))
        ):
            removed.append(os.path.join(folder, entry))
    return removed
