"""Benchmark: the Pyro VRNN against the faster of two plain-PyTorch forms of the same quantities, as ratios.

    python run/benchmark.py                                # the default table (a few minutes on 2 CPU cores)
    python run/benchmark.py --steps 200 --models vrnn-gmm  # one row
    python run/benchmark.py --device cuda --json gpu.json  # on a GPU
    python run/benchmark.py --quick                        # tiny sizes: checks that it runs (the test suite)
    python run/benchmark.py --hidden 1200 --z-dim 50 --features 250 --batch 20 --steps 200 --no-is
                                                           # near the authors' IAM-OnDB sizes
    python run/benchmark.py --objectives iwae fivo smc --models vrnn-gmm --steps 200   # the particle bounds

For each model of Table 1, data dimension (3: handwriting (pen, dx, dy); 200: speech frames; V100: token data,
one of a vocabulary of 100 a step, as characters of text, its categorical emission a softmax over V) and
sequence length T it measures, in one process and back to back:

  train  one training step of the Pyro programs, exactly as pyro_vrnn/train/loop.py takes it
         (svi_step: svi.make_elbo's ELBO, with --scoring batched StackedTrace_ELBO or, for meanfield,
         FreeBitsELBO(0), as an ELBOModule over Program(model), Program(guide), with the guide's Record;
         backward, clip_grad_norm_, Adam), against the same
         step on each of benchmarks/plain_forms.py's two hand-written forms of the same ELBO with the same
         networks: `per_step` (every term at its step) and `batched` (the recurrence in a loop, then
         every term in one call over time); tests/test_reference.py checks that all give the same loss
         and gradients;
  is     the importance-sampled log p(x) with K particles (pyro_vrnn/infer/evaluate.py's
         estimate_log_likelihood, vectorized over particles, chunked over K to bound memory) against
         both plain forms with the same chunks; seconds per sequence, and the peak memory of the Pyro
         estimate, of the faster plain form and of the per-step one (CPU: the high-water mark of a
         forked child's resident set; CUDA: torch.cuda.max_memory_allocated).

and, with --objectives iwae fivo smc, the K-particle bounds (pyro_vrnn/infer/objectives.py, pyro_vrnn/infer/smc.py):

  iwae   one training step on IWAEELBO with --particles K (a vectorized particle plate over the Pyro
         programs) against plain_forms.py's two forms of the same bound with K particles and gradients;
  fivo   one training step on FIVOELBO (smc.particle_filter through the VRNN's stepper) against
         reference.fivo_loss, the same filter inlined into one loop over the networks;
  smc    evaluation's particle-filter estimate with --num-samples particles (no gradients) against
         reference.smc_log_evidence; seconds per sequence, --is-batch sequences a batch, and the peak
         memory of each (both hold one step of the particles: flat in T but for the features of x).

--memory-budget MIB sizes the IS chunks as evaluate_ll.py --memory-budget does: the peak of the Pyro
estimate against the plain per-step form's, at a budget that bounds it (docs/speed.md, long sequences).

The floor is the faster plain form of each repeat: `ratio` is the median over repeats of Pyro's time
over it, and `ratio_per_step`, `ratio_batched` the same against each form. Repeats rotate the order
of the three. On CPU the times are the process's CPU time (one intra-op thread): on a machine shared
with other jobs that is far steadier than wall time, which is also recorded in the JSON.
"""

import argparse
import json
import math
import os
from typing import NamedTuple, Optional

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import pyro
import torch

from pyro_vrnn import models
from pyro_vrnn.benchmarks import plain_forms as reference
from pyro_vrnn.benchmarks.timing import Clock, compare, machine, no_validation, peak_memory
from pyro_vrnn.infer import evaluate
from pyro_vrnn.infer.smc import particle_filter
from pyro_vrnn.train.allocator import freed_memory_kept
from pyro_vrnn.train.config import TABLE1_MODELS, make_config
from pyro_vrnn.train.flag_checks import FlagError, check_at_least_one, check_output_file, check_seed, parse_device
from pyro_vrnn.train.process import resolve_device
from pyro_vrnn.train.svi_step import Program, make_elbo, svi_step

KINDS = {3: "handwriting", 200: "real"}  # data dimension -> kind: IAM-OnDB strokes, speech frames


class Data(NamedTuple):
    """What a row's batches hold: the kind, the width D of x_t, and V for token data (else None)."""

    kind: str
    dim: int
    vocabulary: Optional[int] = None

    def __str__(self):  # the table's "dim" column: D, or V100 for tokens over a vocabulary of 100
        return f"V{self.vocabulary}" if self.kind == "tokens" else str(self.dim)


def data_rows(args):
    """The data of the rows: --dims (handwriting or real frames), then token data of each --vocabulary size."""
    return [Data(KINDS.get(d, "real"), d) for d in args.dims] + [Data("tokens", 1, v) for v in args.vocabulary]


def row_data(data):
    """A row's data in the JSON: dim, and vocabulary (None but for tokens)."""
    return {"dim": data.dim, "vocabulary": data.vocabulary}


OBJECTIVES = ("elbo", "is", "iwae", "fivo", "smc")  # rows: ELBO and IWAE / FIVO training steps; IS and SMC estimates
# --quick's values: they replace the defaults, not the flags given with it
QUICK = dict(
    steps=[4, 7], dims=[3, 6], vocabulary=[7], batch=3, hidden=8, z_dim=2, features=5, components=3, particles=3
)
QUICK.update(repeats=1, is_repeats=1, num_samples=5, is_batch=2, is_steps=[5], objectives=list(OBJECTIVES))
QUICK["models"] = [m for m in TABLE1_MODELS if m in ("rnn-gmm", "vrnn-gmm", "vrnn-i-gauss")]
COUNTS = ("steps", "dims", "vocabulary", "batch", "hidden", "z_dim", "features", "components", "repeats", "num_samples")
COUNTS += ("is_batch", "is_steps", "is_repeats", "chunk_size", "memory_budget", "particles", "threads")  # each >= 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    # the VRNN family only: benchmarks/plain_forms.py's plain forms are the VRNN's (not the SRNN's)
    p.add_argument("--models", nargs="+", default=list(TABLE1_MODELS), choices=TABLE1_MODELS)
    p.add_argument("--steps", nargs="+", type=int, default=[50, 200, 800], help="sequence lengths T")
    p.add_argument(
        "--dims",
        nargs="+",
        type=int,
        default=[3, 200],
        help="data dimension: 3 = handwriting (pen, dx, dy), anything else = real-valued frames",
    )
    p.add_argument(
        "--vocabulary",
        nargs="*",
        type=int,
        default=[100],
        help="token rows: vocabulary sizes V (about 100 for characters); give none to leave them out",
    )
    p.add_argument("--batch", type=int, default=32, help="sequences per training batch")
    p.add_argument("--hidden", type=int, default=256, help="LSTM units")
    p.add_argument("--z-dim", type=int, default=32)
    p.add_argument("--features", type=int, default=64, help="width of phi_x, phi_z, phi_enc, phi_prior, phi_dec")
    p.add_argument("--components", type=int, default=20, help="mixture components of the GMM emissions")
    p.add_argument("--elbo", choices=("trace", "meanfield"), default="trace")
    p.add_argument(
        "--scoring",
        choices=("batched", "steps"),
        default="batched",
        help="batched (as training runs by default): the batched model, StackedTrace_ELBO or FreeBitsELBO(0); "
        "steps: the step-by-step model under Trace_ELBO or TraceMeanField_ELBO themselves",
    )
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    p.add_argument("--repeats", type=int, default=7, help="timed training steps of each kind")
    p.add_argument("--num-samples", type=int, default=100, help="K, particles of the importance-sampled estimate")
    p.add_argument("--is-batch", type=int, default=4, help="sequences per importance-sampling batch")
    p.add_argument("--is-steps", nargs="+", type=int, help="lengths for the IS rows (default: --steps)")
    p.add_argument("--is-repeats", type=int, default=3)
    p.add_argument("--chunk-size", type=int, help="particles per vectorized pass (default: evaluate's, from memory)")
    p.add_argument(
        "--memory-budget",
        type=int,
        metavar="MIB",
        help="the peak of one pass that sizes the IS chunks, as evaluate_ll.py --memory-budget (default: evaluate's)",
    )
    p.add_argument(
        "--objectives",
        nargs="+",
        choices=OBJECTIVES,
        default=["elbo", "is"],
        help="rows to measure: elbo and iwae / fivo training steps, is and smc estimates (--quick: all)",
    )
    p.add_argument("--particles", type=int, default=4, help="K of the iwae and fivo training steps")
    p.add_argument("--no-train", action="store_true", help="skip the training-step rows (--objectives without elbo)")
    p.add_argument("--no-is", action="store_true", help="skip the importance-sampling rows (--objectives without is)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one repeat, every objective: a smoke test (the sizes and flags given with it still count)",
    )
    args = p.parse_args(argv)
    if args.quick:  # parsed again with QUICK as the defaults, so that a flag given with --quick keeps its value
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    try:
        check_flags(args)
    except FlagError as error:  # one line and argparse's exit status for a bad flag, before anything is timed
        p.exit(2, f"error: {error}\n")
    args.objectives = [
        o for o in dict.fromkeys(args.objectives) if not (o == "elbo" and args.no_train or o == "is" and args.no_is)
    ]
    return args


def check_flags(args):
    """FlagError, one line naming the flag, for a value no benchmark can use: made at start-up, not after
    an hour of timing (a --json path that cannot be written would lose every figure)."""
    for name in COUNTS:
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            if value is not None:  # --is-steps and --chunk-size default to None: --steps, evaluate's choice
                check_at_least_one(value, "--" + name.replace("_", "-"))
    check_seed(args.seed)
    parse_device(args.device)
    if args.json:
        check_output_file(args.json, "--json")


def make_batch(data, batch, steps, device, seed):
    """Random data of the right kind, lengths between 3T/4 and T (a length-bucketed batch), on the device."""
    g = torch.Generator().manual_seed(seed)
    if data.kind == "tokens":
        x = torch.randint(0, data.vocabulary, (batch, steps, 1), generator=g).float()
    elif data.kind == "handwriting":
        x = torch.cat(
            [
                torch.bernoulli(torch.full((batch, steps, 1), 0.2), generator=g),
                torch.randn(batch, steps, 2, generator=g),
            ],
            dim=-1,
        )
    else:
        x = torch.randn(batch, steps, data.dim, generator=g)
    lengths = torch.randint(max(1, 3 * steps // 4), steps + 1, (batch,), generator=g)
    lengths[0] = steps
    mask = torch.arange(steps) < lengths[:, None]
    return x.to(device), mask.to(device)  # once per batch, as train.py does


def build(name, data, args, device):
    w = args.features
    config = make_config(
        "benchmark",
        model=name,
        hidden=args.hidden,
        z_dim=args.z_dim,
        x_features=w,
        z_features=w,
        enc_hidden=w,
        prior_hidden=w,
        dec_hidden=w,
        components=args.components,
        elbo=args.elbo,
        scoring=args.scoring,
        cell=args.cell,
    )
    torch.manual_seed(args.seed)
    model, guide, vrnn = models.build(config, data.kind, data.dim, data.vocabulary)
    return model, guide, vrnn.to(device)


def bench_training(name, data, steps, args, device, clock):
    model, guide, vrnn = build(name, data, args, device)
    x, mask = make_batch(data, args.batch, steps, device, args.seed)
    num_train = 1000 * args.batch  # the plate scales the batch to a data set of this size
    loss_module = make_elbo(args.elbo, scoring=args.scoring)(Program(model, vrnn), Program(guide, vrnn))
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=1e-4)

    def pyro_step(validate=False):  # the very step of pyro_vrnn/train/loop.py
        svi_step(loss_module, optimizer, x, mask, num_train, kl_scale=1.0, clip=5.0, validate=validate)

    def torch_step(form):  # the same update around a plain-PyTorch form of the loss
        def step():
            with no_validation():
                loss = reference.elbo_loss(
                    vrnn, x, mask, num_train, 1.0, analytic_kl=args.elbo == "meanfield", form=form
                )
            loss = loss / num_train
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vrnn.parameters(), 5.0).item()
            loss.item()
            optimizer.step()

        return step

    plain = {form: torch_step(form) for form in reference.FORMS}
    pyro_step(validate=True)  # as train.py's first step, with Pyro's checks; a warm-up
    for step in plain.values():
        step()
    return compare(clock, pyro_step, plain, args.repeats)


def optimizer_step(loss, vrnn, optimizer):
    """The rest of svi_step around a plain loss (already divided by the data set's size)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vrnn.parameters(), 5.0).item()
    loss.item()
    optimizer.step()


def bench_bound_training(objective, name, data, steps, args, device, clock):
    """One training step on IWAEELBO or FIVOELBO (svi_step, as train.py takes it) against its plain forms."""
    model, guide, vrnn = build(name, data, args, device)
    x, mask = make_batch(data, args.batch, steps, device, args.seed)
    num_train, k = 1000 * args.batch, args.particles
    loss_module = make_elbo(objective, particles=k)(Program(model, vrnn), Program(guide, vrnn))
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=1e-4)

    def pyro_step(validate=False):
        svi_step(loss_module, optimizer, x, mask, num_train, kl_scale=1.0, clip=5.0, validate=validate)

    def plain_step(loss_fn):
        def step():
            with no_validation():
                optimizer_step(loss_fn() / num_train, vrnn, optimizer)

        return step

    if objective == "iwae":
        plain = {
            form: plain_step(lambda form=form: reference.iwae_loss(vrnn, x, mask, k, num_train, form))
            for form in reference.FORMS
        }
    else:
        plain = {"inline": plain_step(lambda: reference.fivo_loss(vrnn, x, mask, k, num_train))}
    pyro_step(validate=True)
    for step in plain.values():
        step()
    return dict(compare(clock, pyro_step, plain, args.repeats), particles=k)


def bench_smc(name, data, steps, args, device, clock):
    """Evaluation's SMC estimate (smc.particle_filter through the stepper) against the inlined filter."""
    _, _, vrnn = build(name, data, args, device)
    vrnn.eval()
    x, mask = make_batch(data, args.is_batch, steps, device, args.seed + 1)
    k = args.num_samples

    @torch.no_grad()
    def ours():
        with no_validation():  # as evaluate_dataset, under pyro.validation_enabled(False)
            particle_filter(vrnn.stepper(x, mask, "filtering"), k).log_evidence.sum().item()

    @torch.no_grad()
    def inline():
        with no_validation():
            reference.smc_log_evidence(vrnn, x, mask, k).sum().item()

    ours()
    inline()
    result = compare(clock, ours, {"inline": inline}, args.is_repeats)
    for key in ("pyro_s", "torch_s", "pyro_wall_s", "inline_s"):
        result[key[: -len("_s")] + "_s_per_seq"] = result.pop(key) / x.shape[0]
    if not args.no_memory:
        result["pyro_peak_bytes"] = peak_memory(ours, device)
        result["torch_peak_bytes"] = peak_memory(inline, device)
    return dict(result, particles=k, sequences=x.shape[0])


def bench_importance(name, data, steps, args, device, clock):
    model, guide, vrnn = build(name, data, args, device)
    vrnn.eval()
    x, mask = make_batch(data, args.is_batch, steps, device, args.seed + 1)
    k = args.num_samples
    chunk = args.chunk_size
    budget = None
    if chunk is None:  # as evaluate_dataset chooses it
        budget = args.memory_budget * 2**20 if args.memory_budget else evaluate.memory_budget(device)
        chunk = evaluate.default_chunk_size(k, x.shape[0], steps, vrnn, budget)

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
    result = compare(clock, pyro_estimate, plain, args.is_repeats)
    for key in ("pyro_s", "torch_s", "pyro_wall_s", *(f"{form}_s" for form in reference.FORMS)):
        result[key[: -len("_s")] + "_s_per_seq"] = result.pop(key) / x.shape[0]
    result.update(num_samples=k, chunk_size=chunk, sequences=x.shape[0], memory_budget_bytes=budget)
    if not args.no_memory:  # each plain form's: the per-step one keeps no tensor over all steps
        result["pyro_peak_bytes"] = peak_memory(pyro_estimate, device)
        for form, estimate in plain.items():
            result[f"{form}_peak_bytes"] = peak_memory(estimate, device)
        result["torch_peak_bytes"] = result[f"{result['faster_form']}_peak_bytes"]
    return result


def mib(n):
    return "-" if n is None else f"{n / 2**20:.0f}"


def over_budget(row):
    """The budget that sized an IS row's chunks, in MiB, marked "(over)" where the Pyro pass went past it."""
    budget, peak = row.get("memory_budget_bytes"), row.get("pyro_peak_bytes")
    if budget is None:
        return "-"
    return mib(budget) + (" (over)" if peak is not None and peak > budget else "")


@one_line_ctrl_c("the rows measured so far are in the --json file, if one was given")
def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    pyro.settings.set(module_local_params=True)  # as train.py
    with freed_memory_kept():  # as training and evaluation run, for both sides
        return measure(args, device)


def measure(args, device):
    """Every row that args asks for, printed as it comes; the results, also written to --json."""
    clock = Clock(device)
    unit = "s (wall)" if device.type == "cuda" else "s (CPU)"
    results = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "device": str(device),
        "machine": machine(device),
        "train": [],
        "importance": [],
        "bounds": [],
    }
    print(
        f"device {device}, batch {args.batch}, hidden {args.hidden}, z {args.z_dim}, features {args.features}, "
        f"{args.components} components, {args.elbo} ELBO, {torch.get_num_threads()} thread(s)"
    )
    if "elbo" in args.objectives:
        print(
            f"\ntraining step ({args.repeats} repeats, medians; ratio = Pyro / the faster plain form of each "
            f"repeat, its lowest and highest over the repeats, and against each form; extra = Pyro's extra time "
            f"per time step)"
        )
        print(
            f"{'model':14s} {'dim':>4s} {'T':>5s} {'pyro ' + unit:>14s} {'floor ' + unit:>15s} {'faster':>8s} "
            f"{'ratio':>6s} {'range':>10s} {'/step':>6s} {'/batch':>6s} {'extra ms/step':>14s}"
        )
        for data in data_rows(args):
            for steps in args.steps:
                for name in args.models:
                    r = bench_training(name, data, steps, args, device, clock)
                    r["extra_s_per_step"] = (r["pyro_s"] - r["torch_s"]) / steps  # Pyro's cost per time step
                    results["train"].append({"model": name, **row_data(data), "steps": steps, **r})
                    save(results, args.json)
                    print(
                        f"{name:14s} {str(data):>4s} {steps:5d} {r['pyro_s']:14.4f} {r['torch_s']:15.4f} "
                        f"{r['faster_form']:>8s} {r['ratio']:6.2f} {r['ratio_low']:5.2f}-{r['ratio_high']:4.2f} "
                        f"{r['ratio_per_step']:6.2f} {r['ratio_batched']:6.2f} "
                        f"{1000 * r['extra_s_per_step']:14.3f}",
                        flush=True,
                    )
    latent = [m for m in args.models if models.MODELS[m].latent]
    if "is" in args.objectives and latent:
        print(
            f"\nimportance-sampled log p(x), K = {args.num_samples} ({args.is_repeats} repeats, "
            f"{args.is_batch} sequences a batch; per sequence; peak memory in MiB, and the budget that sized the "
            f"chunks, which the Pyro pass should keep within)"
        )
        print(
            f"{'model':14s} {'dim':>4s} {'T':>5s} {'chunk':>5s} {'pyro s/seq':>11s} {'floor s/seq':>12s} "
            f"{'faster':>8s} {'ratio':>6s} {'/step':>6s} {'/batch':>6s} {'pyro MiB':>9s} {'torch MiB':>10s} "
            f"{'per-step MiB':>13s} {'budget MiB':>11s}"
        )
        for data in data_rows(args):
            for steps in args.is_steps or args.steps:
                for name in latent:
                    r = bench_importance(name, data, steps, args, device, clock)
                    results["importance"].append({"model": name, **row_data(data), "steps": steps, **r})
                    save(results, args.json)
                    print(
                        f"{name:14s} {str(data):>4s} {steps:5d} {r['chunk_size']:5d} {r['pyro_s_per_seq']:11.4f} "
                        f"{r['torch_s_per_seq']:12.4f} {r['faster_form']:>8s} {r['ratio']:6.2f} "
                        f"{r['ratio_per_step']:6.2f} {r['ratio_batched']:6.2f} {mib(r.get('pyro_peak_bytes')):>9s} "
                        f"{mib(r.get('torch_peak_bytes')):>10s} {mib(r.get('per_step_peak_bytes')):>13s} "
                        f"{over_budget(r):>11s}",
                        flush=True,
                    )
    bounds = [o for o in args.objectives if o in ("iwae", "fivo", "smc")]
    if bounds and latent:
        bench_bounds(bounds, latent, args, device, clock, results, unit)
    if args.json:
        print(f"\nwrote {args.json}")
    return results


def bench_bounds(objectives, latent, args, device, clock, results, unit):
    """The rows of the K-particle bounds, printed as they come and saved in results["bounds"]."""
    print(
        f"\nK-particle bounds: iwae / fivo training steps with K = {args.particles} (batch {args.batch}, "
        f"{args.repeats} repeats), smc estimates with K = {args.num_samples} ({args.is_batch} sequences a batch, "
        f"{args.is_repeats} repeats, per sequence); ratio = ours / the faster plain form, its range over the repeats"
    )
    print(
        f"{'row':5s} {'model':14s} {'dim':>4s} {'T':>5s} {'K':>4s} {'ours ' + unit:>14s} {'floor ' + unit:>15s} "
        f"{'faster':>8s} {'ratio':>6s} {'range':>10s} {'ours MiB':>9s} {'floor MiB':>10s}"
    )
    for objective in objectives:
        for data in data_rows(args):
            for steps in (args.is_steps or args.steps) if objective == "smc" else args.steps:
                for name in latent:
                    if objective == "smc":
                        r = bench_smc(name, data, steps, args, device, clock)
                        ours, floor = r["pyro_s_per_seq"], r["torch_s_per_seq"]
                    else:
                        r = bench_bound_training(objective, name, data, steps, args, device, clock)
                        ours, floor = r["pyro_s"], r["torch_s"]
                    results["bounds"].append(
                        {"objective": objective, "model": name, **row_data(data), "steps": steps, **r}
                    )
                    save(results, args.json)
                    print(
                        f"{objective:5s} {name:14s} {str(data):>4s} {steps:5d} {r['particles']:4d} {ours:14.4f} "
                        f"{floor:15.4f} {r['faster_form']:>8s} {r['ratio']:6.2f} "
                        f"{r['ratio_low']:5.2f}-{r['ratio_high']:4.2f} {mib(r.get('pyro_peak_bytes')):>9s} "
                        f"{mib(r.get('torch_peak_bytes')):>10s}",
                        flush=True,
                    )


def save(results, path):
    """Write the figures so far (after every row: a long benchmark stopped early keeps what it measured)."""
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
