"""glibc's allocator, set to keep freed memory in the heap: `freed_memory_kept()`, for training, evaluation and
the benchmark. Nothing here is about the VRNN; it is a setting of the process that the Pyro programs and the
plain forms run in alike.

A big emission (a 20-component mixture over 200 dimensions, or K = 100 particles) allocates and frees tensors
of several MB at every time step. By default glibc maps such blocks fresh from the system and unmaps them when
freed, or trims the top of its heap, so each new tensor's pages are faulted in and zeroed by the kernel again.
Inside `freed_memory_kept()`, blocks of up to 32 MiB (glibc's most) come from the heap and the heap is never
trimmed, so those pages are faulted in once (docs/speed.md has what it saves). The price is a resident set
that stays at its peak.
"""

import contextlib
import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MALLOC_DEFAULT = 128 * 1024  # glibc's starting value of both


def mallopt(parameter, value):
    """glibc's mallopt(3); False where the C library has none (macOS, musl: their own allocators' ways)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(parameter, value))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def freed_memory_kept():
    """Inside, glibc serves blocks of up to 32 MiB from its heap and never trims it; on the way out both settings are
    glibc's default sizes again (its sliding threshold stays off). Yields whether the C library has mallopt."""
    if not mallopt(M_MMAP_THRESHOLD, 32 * 2**20):
        yield False
        return
    mallopt(M_TRIM_THRESHOLD, -1)  # -1: never trim (mallopt(3))
    try:
        yield True
    finally:
        mallopt(M_MMAP_THRESHOLD, MALLOC_DEFAULT)
        mallopt(M_TRIM_THRESHOLD, MALLOC_DEFAULT)
