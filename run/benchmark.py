"""Benchmark: the Pyro VRNN against the faster of two plain-PyTorch forms of the same quantities, as ratios.

    python run/benchmark.py                                # the default table (a few minutes on 2 CPU cores)
    python run/benchmark.py --steps 200 --models vrnn-gmm  # one row
    python run/benchmark.py --device cuda --json gpu.json  # on a GPU
    python run/benchmark.py --quick                        # tiny sizes: checks that it runs (the test suite)
    python run/benchmark.py --hidden 1200 --z-dim 50 --features 250 --batch 20 --steps 200 --no-is
                                                           # near the authors' IAM-OnDB sizes

For each model of Table 1, data dimension (3: handwriting (pen, dx, dy); 200: speech frames) and
sequence length T it measures, in one process and back to back:

  train  one training step of the Pyro programs, exactly as pyro_vrnn/train.py takes it
         (svi_step: Trace_ELBO or TraceMeanField_ELBO as an ELBOModule over Program(model),
         Program(guide), with the guide's Record; backward, clip_grad_norm_, Adam), against the same
         step on each of pyro_vrnn/reference.py's two hand-written forms of the same ELBO with the same
         networks: `per_step` (every term at its step) and `batched` (the recurrence in a loop, then
         every term in one call over time); tests/test_reference.py checks that all give the same loss
         and gradients;
  is     the importance-sampled log p(x) with K particles (pyro_vrnn/evaluate.py's
         estimate_log_likelihood, vectorized over particles, chunked over K to bound memory) against
         both plain forms with the same chunks; seconds per sequence, and the peak memory of the Pyro
         estimate and of the faster plain form (CPU: the high-water mark of a forked child's resident
         set; CUDA: torch.cuda.max_memory_allocated).

The floor is the faster plain form of each repeat: `ratio` is the median over repeats of Pyro's time
over it, and `ratio_per_step`, `ratio_batched` the same against each form. Repeats rotate the order
of the three. On CPU the times are the process's CPU time (one intra-op thread): on a machine shared
with other jobs that is far steadier than wall time, which is also recorded in the JSON.
"""
import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import pyro  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Distribution  # noqa: E402

import models  # noqa: E402
from pyro_vrnn import evaluate, reference  # noqa: E402
from pyro_vrnn.config import TABLE1_MODELS, make_config  # noqa: E402
from pyro_vrnn.runtime import frozen_heap, resolve_device  # noqa: E402
from pyro_vrnn.svi import Program, make_elbo, svi_step  # noqa: E402

KINDS = {3: "handwriting", 200: "real"}  # data dimension -> kind: IAM-OnDB strokes, speech frames


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # the VRNN family only: pyro_vrnn/reference.py's plain forms are the VRNN's (not the SRNN's)
    p.add_argument("--models", nargs="+", default=list(TABLE1_MODELS), choices=TABLE1_MODELS)
    p.add_argument("--steps", nargs="+", type=int, default=[50, 200, 800], help="sequence lengths T")
    p.add_argument("--dims", nargs="+", type=int, default=[3, 200],
                   help="data dimension: 3 = handwriting (pen, dx, dy), anything else = real-valued frames")
    p.add_argument("--batch", type=int, default=32, help="sequences per training batch")
    p.add_argument("--hidden", type=int, default=256, help="LSTM units")
    p.add_argument("--z-dim", type=int, default=32)
    p.add_argument("--features", type=int, default=64, help="width of phi_x, phi_z, phi_enc, phi_prior, phi_dec")
    p.add_argument("--components", type=int, default=20, help="mixture components of the GMM emissions")
    p.add_argument("--elbo", choices=("trace", "meanfield"), default="trace")
    p.add_argument("--scoring", choices=("batched", "steps"), default="batched",
                   help="the model program's form (training and evaluation use batched)")
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    p.add_argument("--repeats", type=int, default=7, help="timed training steps of each kind")
    p.add_argument("--num-samples", type=int, default=100, help="K, particles of the importance-sampled estimate")
    p.add_argument("--is-batch", type=int, default=4, help="sequences per importance-sampling batch")
    p.add_argument("--is-steps", nargs="+", type=int, help="lengths for the IS rows (default: --steps)")
    p.add_argument("--is-repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, help="particles per vectorized pass (default: evaluate's, from memory)")
    p.add_argument("--no-train", action="store_true", help="skip the training-step rows")
    p.add_argument("--no-is", action="store_true", help="skip the importance-sampling rows")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.dims, args.batch, args.hidden, args.z_dim = [4, 7], [3, 6], 3, 8, 2
        args.features, args.components, args.repeats, args.is_repeats = 5, 3, 1, 1
        args.num_samples, args.is_batch, args.is_steps = 5, 2, [5]
        args.models = [m for m in args.models if m in ("rnn-gmm", "vrnn-gmm", "vrnn-i-gauss")] or args.models
    return args


def make_batch(dim, batch, steps, device, seed):
    """Random data of the right kind, lengths between 3T/4 and T (a length-bucketed batch), on the device."""
    g = torch.Generator().manual_seed(seed)
    if KINDS.get(dim, "real") == "handwriting":
        x = torch.cat([torch.bernoulli(torch.full((batch, steps, 1), 0.2), generator=g),
                       torch.randn(batch, steps, 2, generator=g)], dim=-1)
    else:
        x = torch.randn(batch, steps, dim, generator=g)
    lengths = torch.randint(max(1, 3 * steps // 4), steps + 1, (batch,), generator=g)
    lengths[0] = steps
    mask = torch.arange(steps) < lengths[:, None]
    return x.to(device), mask.to(device)  # once per batch, as train.py does


def build(name, dim, args, device):
    w = args.features
    config = make_config("benchmark", model=name, hidden=args.hidden, z_dim=args.z_dim, x_features=w,
                         z_features=w, enc_hidden=w, prior_hidden=w, dec_hidden=w, components=args.components,
                         elbo=args.elbo, scoring=args.scoring, cell=args.cell)
    torch.manual_seed(args.seed)
    model, guide, vrnn = models.build(config, KINDS.get(dim, "real"), dim)
    return model, guide, vrnn.to(device)


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
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            times[name].append(clock(fns[name]))
    med = statistics.median
    seconds = {name: [t["time"] for t in times[name]] for name in names}
    floor = [min(seconds[name][i] for name in plain_fns) for i in range(repeats)]
    ratios = [p / f for p, f in zip(seconds["pyro"], floor)]
    result = {"pyro_s": med(seconds["pyro"]), "torch_s": med(floor), "pyro_wall_s": med([t["wall"] for t in times["pyro"]]),
              "ratio": med(ratios), "ratios": ratios, "ratio_low": min(ratios), "ratio_high": max(ratios),
              "faster_form": min(plain_fns, key=lambda name: med(seconds[name]))}
    for name in plain_fns:
        result[f"{name}_s"] = med(seconds[name])
        result[f"ratio_{name}"] = med([p / t for p, t in zip(seconds["pyro"], seconds[name])])
    return result


def bench_training(name, dim, steps, args, device, clock):
    model, guide, vrnn = build(name, dim, args, device)
    x, mask = make_batch(dim, args.batch, steps, device, args.seed)
    num_train = 1000 * args.batch  # the plate scales the batch to a data set of this size
    loss_module = make_elbo(args.elbo)(Program(model, vrnn), Program(guide, vrnn))
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=1e-4)

    def pyro_step(validate=False):  # the very step of pyro_vrnn/train.py
        svi_step(loss_module, optimizer, x, mask, num_train, kl_scale=1.0, clip=5.0, validate=validate)

    def torch_step(form):  # the same update around a plain-PyTorch form of the loss
        def step():
            with no_validation():
                loss = reference.elbo_loss(vrnn, x, mask, num_train, 1.0, analytic_kl=args.elbo == "meanfield",
                                           form=form)
            loss = loss / num_train
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vrnn.parameters(), 5.0).item()
            loss.item()
            optimizer.step()
        return step

    plain = {form: torch_step(form) for form in reference.FORMS}
    pyro_step(validate=True)  # train.py validates the first step only; warms up every path
    for step in plain.values():
        step()
    with frozen_heap():  # as train.py's loop runs
        return compare(clock, pyro_step, plain, args.repeats)


def release_free_memory():
    """Give the C heap's free pages back to the OS (glibc), so that a resident-set high-water mark counts
    every page a computation touches."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resident_kib(field):
    """VmRSS (resident set now) or VmHWM (its high-water mark) of this process, in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def peak_memory(fn, device):
    """Peak memory (bytes) that fn adds: CUDA's allocator statistics, or on CPU the high-water mark of the
    resident set of a forked child that runs fn once (None where fork is not available)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    if not hasattr(os, "fork") or not os.path.exists("/proc/self/clear_refs"):
        return None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            gc.freeze()  # a collection would write to every inherited object, copying all their pages
            os.close(read_end)
            release_free_memory()  # or the child would reuse the parent's freed pages unseen
            # The child's high-water mark starts at the resident set it inherits, free heap pages included;
            # "5" resets it to the resident set now, after the trim (Linux 4.0+).
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            # fork copies only this thread: a parallel region of the parent's OpenMP pool would wait forever
            # on threads the child does not have (--threads > 1). Memory barely depends on the thread count.
            torch.set_num_threads(1)
            rss = resident_kib("VmRSS")
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


def bench_importance(name, dim, steps, args, device, clock):
    model, guide, vrnn = build(name, dim, args, device)
    vrnn.eval()
    x, mask = make_batch(dim, args.is_batch, steps, device, args.seed + 1)
    k = args.num_samples
    chunk = args.chunk_size
    if chunk is None:  # as evaluate_dataset chooses it
        chunk = evaluate.default_chunk_size(k, x.shape[0], steps, vrnn, evaluate.memory_budget(device))

    def pyro_estimate():
        with pyro.validation_enabled(False):  # as evaluate_dataset
            evaluate.estimate_log_likelihood(model, guide, vrnn, x, mask, k, chunk, latent=True)["log_px"].sum().item()

    def torch_estimate(form):
        def estimate():
            with no_validation():
                log_w = reference.importance_log_weights(vrnn, x, mask, k, chunk, form=form)
                (torch.logsumexp(log_w, 0) - math.log(k)).sum().item()
        return estimate

    plain = {form: torch_estimate(form) for form in reference.FORMS}
    pyro_estimate()  # warm-up
    for estimate in plain.values():
        estimate()
    with frozen_heap():  # as evaluate_dataset runs
        result = compare(clock, pyro_estimate, plain, args.is_repeats)
    for key in ("pyro_s", "torch_s", "pyro_wall_s", *(f"{form}_s" for form in reference.FORMS)):
        result[key[:-len("_s")] + "_s_per_seq"] = result.pop(key) / x.shape[0]
    result.update(num_samples=k, chunk_size=chunk, sequences=x.shape[0])
    if not args.no_memory:
        result["pyro_peak_bytes"] = peak_memory(pyro_estimate, device)
        result["torch_peak_bytes"] = peak_memory(plain[result["faster_form"]], device)
    return result


def machine(device):
    info = {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__,
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def mib(n):
    return "-" if n is None else f"{n / 2 ** 20:.0f}"


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    pyro.settings.set(module_local_params=True)  # as train.py
    clock = Clock(device)
    unit = "s (wall)" if device.type == "cuda" else "s (CPU)"
    results = {"settings": {k: v for k, v in vars(args).items() if k != "json"}, "device": str(device),
               "machine": machine(device), "train": [], "importance": []}
    print(f"device {device}, batch {args.batch}, hidden {args.hidden}, z {args.z_dim}, features {args.features}, "
          f"{args.components} components, {args.elbo} ELBO, {torch.get_num_threads()} thread(s)")
    if not args.no_train:
        print(f"\ntraining step ({args.repeats} repeats, medians; ratio = Pyro / the faster plain form of each "
              f"repeat, its lowest and highest over the repeats, and against each form; extra = Pyro's extra time "
              f"per time step)")
        print(f"{'model':14s} {'dim':>4s} {'T':>5s} {'pyro ' + unit:>14s} {'floor ' + unit:>15s} {'faster':>8s} "
              f"{'ratio':>6s} {'range':>10s} {'/step':>6s} {'/batch':>6s} {'extra ms/step':>14s}")
        for dim in args.dims:
            for steps in args.steps:
                for name in args.models:
                    r = bench_training(name, dim, steps, args, device, clock)
                    r["extra_s_per_step"] = (r["pyro_s"] - r["torch_s"]) / steps  # Pyro's cost per time step
                    results["train"].append({"model": name, "dim": dim, "steps": steps, **r})
                    save(results, args.json)
                    print(f"{name:14s} {dim:4d} {steps:5d} {r['pyro_s']:14.4f} {r['torch_s']:15.4f} "
                          f"{r['faster_form']:>8s} {r['ratio']:6.2f} {r['ratio_low']:5.2f}-{r['ratio_high']:4.2f} "
                          f"{r['ratio_per_step']:6.2f} {r['ratio_batched']:6.2f} "
                          f"{1000 * r['extra_s_per_step']:14.3f}", flush=True)
    latent = [m for m in args.models if models.MODELS[m].latent]
    if not args.no_is and latent:
        print(f"\nimportance-sampled log p(x), K = {args.num_samples} ({args.is_repeats} repeats, "
              f"{args.is_batch} sequences a batch; per sequence; peak memory in MiB)")
        print(f"{'model':14s} {'dim':>4s} {'T':>5s} {'chunk':>5s} {'pyro s/seq':>11s} {'floor s/seq':>12s} "
              f"{'faster':>8s} {'ratio':>6s} {'/step':>6s} {'/batch':>6s} {'pyro MiB':>9s} {'torch MiB':>10s}")
        for dim in args.dims:
            for steps in args.is_steps or args.steps:
                for name in latent:
                    r = bench_importance(name, dim, steps, args, device, clock)
                    results["importance"].append({"model": name, "dim": dim, "steps": steps, **r})
                    save(results, args.json)
                    print(f"{name:14s} {dim:4d} {steps:5d} {r['chunk_size']:5d} {r['pyro_s_per_seq']:11.4f} "
                          f"{r['torch_s_per_seq']:12.4f} {r['faster_form']:>8s} {r['ratio']:6.2f} "
                          f"{r['ratio_per_step']:6.2f} {r['ratio_batched']:6.2f} {mib(r.get('pyro_peak_bytes')):>9s} "
                          f"{mib(r.get('torch_peak_bytes')):>10s}", flush=True)
    if args.json:
        print(f"\nwrote {args.json}")
    return results


def save(results, path):
    """Write the figures so far (after every row: a long benchmark stopped early keeps what it measured)."""
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
