"""Measuring Pyro against plain PyTorch, the machinery of run/benchmark.py: a clock (CPU time of this process on
CPU, steady on a shared machine; synchronized wall time on CUDA), `compare` (repeats in rotating order, ratio to
the faster plain form of each repeat), peak memory (CUDA's allocator, or a forked child's resident high-water
mark on CPU), torch.distributions' argument checks off as in Pyro's hot path, and a description of the machine.
"""

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import time

import pyro
import torch
from torch.distributions import Distribution

from pyro_vrnn.train.allocator import M_MMAP_THRESHOLD, mallopt


@contextlib.contextmanager
def no_validation():
    """torch.distributions' argument and support checks off, as they are in Pyro's hot path (a fair race)."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


class Clock:
    """CPU time of this process on CPU (steady on a shared machine); wall time, synchronized, on CUDA."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn):
        if self.cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {"time": wall if self.cuda else cpu, "wall": wall}


def compare(clock, pyro_fn, plain_fns, repeats):
    """Time the Pyro callable and each plain form `repeats` times, rotating their order; per repeat, Pyro's
    time over the faster plain form (the floor) and over each form; medians of all of them."""
    names = ["pyro"] + list(plain_fns)
    fns = dict(pyro=pyro_fn, **plain_fns)
    times = {name: [] for name in names}
    for i in range(repeats):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            times[name].append(clock(fns[name]))
    med = statistics.median
    seconds = {name: [t["time"] for t in times[name]] for name in names}
    floor = [min(seconds[name][i] for name in plain_fns) for i in range(repeats)]
    ratios = [p / f for p, f in zip(seconds["pyro"], floor)]
    result = {
        "pyro_s": med(seconds["pyro"]),
        "torch_s": med(floor),
        "pyro_wall_s": med([t["wall"] for t in times["pyro"]]),
        "ratio": med(ratios),
        "ratios": ratios,
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
        "faster_form": min(plain_fns, key=lambda name: med(seconds[name])),
    }
    for name in plain_fns:
        result[f"{name}_s"] = med(seconds[name])
        result[f"ratio_{name}"] = med([p / t for p, t in zip(seconds["pyro"], seconds[name])])
    return result


def release_free_memory():
    """Give the C heap's free pages back to the OS (glibc), so that a resident-set high-water mark counts
    every page a computation touches."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fixed_mmap_threshold(size=2**18):
    """glibc serves allocations of at least `size` bytes from their own mappings and unmaps them when freed.
    By default it raises that threshold each time it frees such a mapping, after which big tensors come from
    the heap, whose freed holes a later tensor may not fit: the resident set then doubles now and then
    for the same computation, a property of the allocator's history, not of what the computation holds."""
    mallopt(M_MMAP_THRESHOLD, size)  # also stops its adjustment


def resident_kib(field):
    """VmRSS (resident set now) or VmHWM (its high-water mark) of this process, in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(fn, device, repeats=3):
    """Peak memory (bytes) that fn adds: CUDA's allocator statistics, or on CPU the least high-water mark of
    the resident set over `repeats` forked children that each run fn once (None where fork is not available,
    or the mark cannot be reset). The least, because now and then the C heap grows past what a computation
    holds (one child in ten here, with the same seeds and the same calls: 230 MiB where the others peak at
    100); that noise only adds."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    if not hasattr(os, "fork") or not os.path.exists("/proc/self/clear_refs"):
        return None
    peaks = [resident_peak_in_child(fn) for _ in range(repeats)]
    return None if None in peaks else min(peaks)


def resident_peak_in_child(fn):
    """The growth of a forked child's resident set while it runs fn once, at its highest (bytes); None where
    the high-water mark cannot be reset."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            gc.freeze()  # a collection would write to every inherited object, copying all their pages
            os.close(read_end)
            release_free_memory()  # or the child would reuse the parent's freed pages unseen
            fixed_mmap_threshold()
            # The child's high-water mark starts at the resident set it inherits, free heap pages included;
            # "5" resets it to the resident set now, after the trim (Linux 4.0+).
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            # fork copies only this thread: a parallel region of the parent's OpenMP pool would wait forever
            # on threads the child does not have (--threads > 1). Memory barely depends on the thread count.
            torch.set_num_threads(1)
            rss = resident_kib("VmRSS")
            # Where "5" is accepted but ignored (some sandboxed kernels), the mark would still hold the parent's
            # peak: no figure is better than that one.
            if resident_kib("VmHWM") <= rss + 1024:
                fn()
                os.write(write_end, str(max(0, resident_kib("VmHWM") - rss) * 1024).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return int(text) if text else None


def machine(device):
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
