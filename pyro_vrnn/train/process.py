"""The process a run lives in: its device, its torchrun group, its threads, its signals, its random state.

Nothing here is about the VRNN itself; it is what every entry point (training, evaluation, the
benchmark) needs around the Pyro programs, in one place.
"""

import contextlib
import os
import re
import signal
import sys
import traceback

import numpy as np
import pyro.util
import torch
import torch.distributed as dist

from pyro_vrnn.train.config import NETWORK_SIZES
from pyro_vrnn.train.flag_checks import FlagError, parse_device, size_text


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says what to do."""


class Interrupted(TrainingError):
    """A run stopped by SIGINT or SIGTERM, its last.pt written; exit_code is 130 or 143 as shells expect."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):  # pickled whole, as a worker process of table1.py --jobs hands it back
        return type(self), (str(self), self.exit_code)


def resolve_device(name="auto", local_rank=0):
    """A torch.device from --device: auto (cuda when a GPU is visible), cpu, cuda (cuda:LOCAL_RANK under
    torchrun), cuda:N; checked by flag_checks.parse_device, whose one line becomes a TrainingError."""
    try:
        name = parse_device(name)
    except FlagError as error:
        raise TrainingError(str(error)) from None
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def setup_distributed(device_name):
    """(rank, world_size, device). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; plain python sets none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def close_process_group():
    """End a torchrun process's group, if it has one; True if it had."""
    if not dist.is_initialized():
        return False
    dist.destroy_process_group()
    return True


def exit_at_once(stop=None):
    """Leave a torchrun process as `raise stop` would (None: status 0; SystemExit: its status, or its message on
    stderr and status 1; KeyboardInterrupt: 130; anything else: its traceback and status 1), but with os._exit,
    skipping the shutdown of the interpreter, where gloo can abort a finished run.

    Why: after DistributedDataParallel has run, destroy_process_group leaves the gloo group alive (references
    to it remain), and with it gloo's worker threads. A worker that frees a finished collective after the
    interpreter has begun its shutdown must take the GIL, to free a Python object in the work's saved
    thread-local state; Python ends such a thread, and ending it inside a C++ destructor calls std::terminate:
    "terminate called without an active exception", SIGABRT, status -6 after a run that had finished (the
    stack seen in gdb on a core dump; about one torchrun in ten on 2 busy cores). Whatever the run writes is
    closed by then; stdout and stderr are flushed.
    """
    status = 0
    if isinstance(stop, SystemExit) and isinstance(stop.code, int):
        status = stop.code
    elif isinstance(stop, SystemExit) and stop.code is not None:
        print(stop.code, file=sys.stderr)  # sys.exit("error: ...")
        status = 1
    elif isinstance(stop, KeyboardInterrupt):  # a Ctrl-C on the way out: what was written stands
        status = 130
    elif stop is not None and not isinstance(stop, SystemExit):
        traceback.print_exception(stop)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def out_of_memory(error):
    """Whether `error` is a failed allocation: torch.OutOfMemoryError (CUDA's), or the RuntimeError of the CPU
    allocator ("DefaultCPUAllocator: can't allocate memory") or of another backend ("MPS backend out of memory")."""
    text = str(error)
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in text or "out of memory" in text


@contextlib.contextmanager
def network_fits(config, device, saved=False):
    """Inside, an allocation that fails (building the network, moving it to `device`) becomes one line, a
    TrainingError naming the sizes to reduce (or, for a `saved` run's network, where to load it), in place of a
    traceback from inside torch. Nothing is estimated beforehand: what fits depends on the allocator, the
    device and what else runs there."""
    try:
        yield
    except RuntimeError as error:
        if not out_of_memory(error):
            raise
        # The network is built on the CPU and then moved: the CPU allocator's failure is the CPU's, whatever --device.
        where = "cpu" if "CPUAllocator" in str(error) else device
        # The size of the allocation that failed, as the CPU ("... 160000000000 bytes") or CUDA ("20.00 GiB") says it
        asked = re.search(r"tried to allocate (?:(\d+) bytes|([\d.]+ [KMGT]iB))", str(error), re.IGNORECASE)
        amount = (
            "" if asked is None else f" (an allocation of {size_text(int(asked[1])) if asked[1] else asked[2]} failed)"
        )
        sizes = " ".join(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in NETWORK_SIZES)
        advice = (
            f"load it on a machine with more memory{'' if where == 'cpu' else ', or with --device cpu'} ({sizes})"
            if saved
            else f"choose smaller sizes (now {sizes})"
        )
        raise TrainingError(
            f"the {config.model} network{' of this run' if saved else ''} does not fit in the memory of "
            f"{where}{amount}; {advice}"
        ) from None


def set_threads(threads):
    """CPU intra-op threads (0: PyTorch's default). Tiny matrices gain nothing from more threads, and
    OpenMP threads that wait on each other make every op cost milliseconds on a shared machine."""
    if threads > 0:
        torch.set_num_threads(threads)


def any_rank(flag, device):
    """True on every rank if `flag` is True on any (a signal may reach the ranks at different steps)."""
    if not dist.is_initialized():
        return bool(flag)
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def all_reduce_sum(values, device):
    """Sum a list of floats over the process group (identity in a single process)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal: what shells report for a stopped job


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop reads between steps: it finishes the step, checkpoints and
    stops. A second signal stops at once (KeyboardInterrupt; the last checkpoint is kept). `signal_number`
    says which signal came, so that the process can exit with 130 or 143 as shells expect."""

    def __init__(self):
        self.signal_number = None

    @property
    def requested(self):
        return self.signal_number is not None

    def __enter__(self):
        self.previous = {}
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self.previous[s] = signal.signal(s, self.handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = {}
        return self

    def handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.signal_number = signum

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def get_rng_state():
    """Every random state of this process (Python, numpy, torch, and CUDA when present), as tensors, numbers
    and tuples: data that a checkpoint holds and torch.load(weights_only=True) reads (numpy's own state is an
    array; its keys go in a tensor)."""
    state = pyro.util.get_rng_state()
    state["numpy"] = numpy_state_as_data(state["numpy"])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def numpy_state_as_data(numpy_state):
    """np.random.get_state()'s tuple with its keys (a uint32 array) as an int64 tensor."""
    name, keys, position, has_gauss, cached_gaussian = numpy_state
    keys = torch.as_tensor(np.asarray(keys, dtype=np.int64))
    return str(name), keys, int(position), int(has_gauss), float(cached_gaussian)


def set_rng_state(state):
    """Restore get_rng_state's dict (numpy's keys as a tensor, or as an array in a version-1 checkpoint)."""
    state = dict(state)
    name, keys, *rest = state["numpy"]
    state["numpy"] = (name, np.asarray(keys, dtype=np.uint32), *rest)
    cuda = state.pop("cuda", None)
    pyro.util.set_rng_state(state)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
