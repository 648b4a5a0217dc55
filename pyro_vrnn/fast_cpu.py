"""The two process settings that pay on a CPU, for training, evaluation and the benchmark: `fast_cpu()`.

Nothing here is about the VRNN; both are settings of the process that the Pyro programs and the plain
forms run in alike, and each was measured on and off on the main job and the benchmark (docs/speed.md).

- Subnormal floats are zero. IWAE and FIVO weight each particle's gradient by its normalized importance
  weight, and a particle far behind the best has a weight like exp(-100): its gradient runs back through
  every network as subnormal numbers (below 1.2e-38 in float32), which x86 processors compute 10 to 100
  times slower than normal ones. Numbers that small count for nothing next to the other particles'.
- Freed memory stays in the heap. A big emission (20 components over 200 dimensions, K = 100 particles)
  allocates and frees tensors of several MB at every time step. By default glibc maps such blocks fresh
  from the system and unmaps them when freed, or trims the top of its heap, so each new tensor's pages are
  faulted in and zeroed by the kernel again. Inside, blocks of up to 32 MiB (glibc's most) come from the
  heap, and the heap is never trimmed; the price is a resident set that stays at its peak.
"""

import contextlib
import ctypes

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MALLOC_DEFAULT = 128 * 1024  # glibc's starting value of both


def mallopt(parameter, value):
    """glibc's mallopt(3); False where the C library has none (macOS, musl: their own allocators' ways)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(parameter, value))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def subnormals_flushed():
    """Inside, the CPU treats subnormal floats as zero; the mode before is restored on the way out. Yields whether
    the processor can (x86 with SSE3 can). The mode belongs to a thread: intra-op threads that PyTorch started
    before (with --threads above 1) keep theirs."""
    was_on = (torch.tensor([1e-39]) * 1.0).item() == 0
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        if supported and not was_on:
            torch.set_flush_denormal(False)


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


@contextlib.contextmanager
def fast_cpu():
    """Both settings of the module docstring, for the duration of a training run, an evaluation or a benchmark."""
    with subnormals_flushed(), freed_memory_kept():
        yield
