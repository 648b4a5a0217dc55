"""Checks of the run scripts' flags, made at the top of main() before any expensive work.

Each raises FlagError (a ValueError) with one line that names the flag and says what to give
instead; the scripts print it as "error: ..." and exit. config.check_config applies the seed and
device checks to every run configuration.
"""

import math
import os
import re
import tempfile

import torch

SEED_LIMIT = 2**32  # numpy's: pyro.set_rng_seed seeds numpy, random and torch with the same number
DEVICES = "auto, cpu, cuda or cuda:N"


class FlagError(ValueError):
    """A command-line value no run can use; the message is one line that names the flag."""


def check_seed(seed, flag="--seed", processes=1):
    """0 <= seed and, with `processes` ranks seeded seed, seed + 1, ..., seed + processes - 1 < 2**32."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_LIMIT - processes:
        extra = f" with {processes} processes (each takes seed + its rank)" if processes > 1 else ""
        raise FlagError(f"{flag} is {seed}; it must be a whole number from 0 to {SEED_LIMIT - processes}{extra}")
    return seed


def check_bias(bias, flag="--bias"):
    """Graves's sampling bias (pyro_vrnn/report/synthesis.py): a finite number, 0 or more. Returns it."""
    if not (bias >= 0 and math.isfinite(bias)):
        raise FlagError(f"{flag} is {bias}; it must be a finite number, 0 or more")
    return bias


def parse_device(name, flag="--device"):
    """The device name, checked: auto, cpu, cuda or cuda:N for a GPU that torch sees. Returns it."""
    text = str(name)
    if text in ("auto", "cpu"):
        return text
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise FlagError(f"{flag} {text!r} is not a device; choose {DEVICES} (a GPU's number)")
    if not torch.cuda.is_available():
        raise FlagError(
            f"{flag} {text}: torch {torch.__version__} sees no CUDA GPU on this machine; use --device cpu (or auto)"
        )
    count = torch.cuda.device_count()
    # Under torchrun, plain "cuda" means cuda:LOCAL_RANK (process.resolve_device).
    index = int(match[1]) if match[1] is not None else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= count:
        raise FlagError(
            f"{flag} {text}: GPU {index} does not exist, torch sees {count} "
            f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}); choose one of those, cpu or auto"
        )
    return text


def check_at_least_one(value, flag):
    """A size or count flag (an int) that must be 1 or more; the message is config.check_config's."""
    if value < 1:
        raise FlagError(f"{flag} is {value}; it must be at least 1")
    return value


def check_positive_finite(value, flag):
    """A float flag that must be a finite number above 0 (nan and inf pass `value <= 0` tests)."""
    if not (math.isfinite(value) and value > 0):
        raise FlagError(f"{flag} is {value}; it must be a finite number above 0")
    return value


def _writable(folder, flag, path):
    """One line unless a file can be created in `folder` (tried: access bits say nothing to root)."""
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".pyro-vrnn-write-test-")
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise FlagError(
            f"{flag} {path}: cannot write in {folder} ({error.strerror or error}); choose a writable place"
        ) from None


def check_output_dir(path, flag="--out"):
    """A folder that files will be written into (created if missing): not a file, and writable."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(full) and not os.path.isdir(full):
        raise FlagError(f"{flag} {path} is a file; give a folder (files are written into it; it is created if missing)")
    existing = full
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise FlagError(f"{flag} {path}: {existing} is a file, so no folder can be made there")
    _writable(existing, flag, path)
    return path


def check_output_file(path, flag, make_folder=False):
    """A file that will be written: not a folder; its folder exists (or is made, if make_folder) and
    is writable; an existing file at `path` is writable."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        raise FlagError(f"{flag} {path} is a folder; give a file name in it")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        if not make_folder:
            raise FlagError(f"{flag} {path}: the folder {folder} does not exist; create it or choose another")
        check_output_dir(folder, flag)
        return path
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise FlagError(f"{flag} {path}: the file exists and is not writable; choose another name")
    _writable(folder, flag, path)
    return path


# ---------------------------------------------------------------------------------------------
# Memory for sampling (run/sample.py, run/figure3.py)
# ---------------------------------------------------------------------------------------------

# Bytes per generated step whatever the number of samples: the trace's Python objects (sites,
# distributions; about 15 KB measured with pyro 1.9).
STEP_BOOKKEEPING = 16 << 10


def sample_bytes(num, steps, dim, hidden, z_dim, components):
    """About how many bytes `num` samples of `steps` steps take: for each sample and step the trace
    keeps x_t, z_t, the prior's and the emission's parameters and the LSTM state (float32); the
    result is stacked, converted to data units (float64) and saved (float32); plus the bookkeeping."""
    kept = dim * (1 + 2 * components) + components + 3 * z_dim + 2 * hidden
    out = dim * (4 + 8 + 4)
    return steps * (num * (4 * kept + out) + STEP_BOOKKEEPING)


def available_memory():
    """Bytes of memory available to a new allocation on this machine, or None where it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def size_text(n):
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} KB"


def check_sample_memory(num, steps, dim, config, what, device="cpu", available=None):
    """One line, before anything is allocated, when sampling would need more memory than there is.

    `config`: the run's Config (its hidden, z_dim, components); `what`: the flags, for the message."""
    need = sample_bytes(num, steps, dim, config.hidden, config.z_dim, config.components)
    have = available_memory() if available is None else available
    if have is not None and need > have:
        raise FlagError(
            f"{what}: sampling would need about {size_text(need)} of memory, and {size_text(have)} "
            f"is available; ask for fewer samples (--num) or fewer steps (--length)"
        )
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        on_gpu = need - steps * (num * dim * 12 + STEP_BOOKKEEPING)  # the trace's tensors
        if on_gpu > free:
            raise FlagError(
                f"{what}: sampling would need about {size_text(on_gpu)} on {device}, which has "
                f"{size_text(free)} free; ask for fewer samples or steps, or use --device cpu"
            )
    return need
