"""Evaluate a trained model the way Table 1 does (Chung et al. 2015): average log-likelihood per sequence.

    python run/evaluate_ll.py                                    # the newest run under runs/, test split (or valid)
    python run/evaluate_ll.py --checkpoint runs/RUN/best.pt --split valid --num-samples 100
    python run/evaluate_ll.py --checkpoint runs/RUN --json ll.json
    python run/evaluate_ll.py --estimators elbo iwae smc is --iwae-particles 8 --smc-particles 100

Prints, in nats (of the normalized data, unless binary), the mean ELBO per sequence (Table 1's ">=" rows) and the mean
importance-sampled log p(x) (the "~" rows, K particles from the guide, log (1/K) sum_k p(x, z^k) / q(z^k | x)),
each with its standard error across sequences, the same per time step; the ELBO's KL term (how much the
latent variables carry; in closed form at each step along the guide's draws, so never negative), the gap
between the estimate and the bound (how far the guide is from the posterior), and the effective sample
size of the importance weights. For the RNN baselines log p(x) is
exact and no sampling is done.

--estimators picks among elbo, iwae (the importance-weighted bound with --iwae-particles K'), smc (the
particle filter's log p^(x) with --smc-particles, resampling each sequence when its ESS falls below K/2:
FIVO's bound in expectation) and is (pyro_vrnn/infer/evaluate.py). IWAE with K particles is the IS estimate
with K particles, the same number: with --iwae-particles unset (or equal to --num-samples) it is computed
once and reported under both names.

Per time step is the music literature's measure (Boulanger-Lewandowski et al. 2012, STORN, the SRNN, the DMM
and Pyro's examples/dmm.py, FIVO): the sum over the split's sequences divided by their total number of steps.
"""

import argparse
import json
import os
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

from pyro_vrnn.data import DataError
from pyro_vrnn.infer.evaluate import DEFAULT_ESTIMATORS, ESTIMATORS, evaluate_checkpoint
from pyro_vrnn.train.flag_checks import FlagError, check_output_file, check_seed, parse_device
from pyro_vrnn.train.process import TrainingError, resolve_device
from pyro_vrnn.train.run_directory import newest_run

DEFAULT_RUNS = "runs"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--checkpoint",
        help="a .pt file or a run directory (its best.pt, else last.pt); "
        f"default: the newest run under {DEFAULT_RUNS}/",
    )
    p.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        help="default: test, or valid where the data set has none (IAM-OnDB, as the paper)",
    )
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per sequence (default 100)")
    p.add_argument(
        "--estimators",
        nargs="+",
        choices=ESTIMATORS,
        default=list(DEFAULT_ESTIMATORS),
        help="what to report (default: elbo is): elbo, iwae, smc (particle filter), is",
    )
    p.add_argument("--iwae-particles", type=int, help="K' of the IWAE bound (default --num-samples: the IS number)")
    p.add_argument("--smc-particles", type=int, help="particles of the SMC estimate (default --num-samples)")
    p.add_argument("--batch-size", type=int, help="sequences per batch (default: the run's batch size)")
    p.add_argument(
        "--chunk-size",
        type=int,
        help="particles per vectorized pass (default: as many as fit 256 MiB, or a quarter of the GPU's free memory)",
    )
    p.add_argument(
        "--memory-budget",
        type=int,
        metavar="MIB",
        help="MiB one vectorized pass may take at its peak: the particles are drawn in chunks, and long sequences "
        "evaluated a few at a time, to fit it (default: an eighth of the free memory, 256 MiB to 4 GiB; a quarter "
        "of a GPU's)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available; the default), cpu, cuda, cuda:1")
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them")
    p.add_argument("--seed", type=int, default=0, help="seed of the particles (default 0)")
    p.add_argument("--json", metavar="FILE", help="also write the figures (and per-sequence numbers) here")
    return p.parse_args(argv)


def fmt(value, stderr=None, digits=2):
    text = f"{value:.{digits}f}"
    return text if stderr is None else f"{text} +- {stderr:.{digits}f}"


def row(s, label, key):
    return (
        f"  {label:18}{fmt(s[f'{key}_per_seq'], s[f'{key}_per_seq_stderr']):>22}"
        f"{fmt(s[f'{key}_per_step'], s[f'{key}_per_step_stderr'], 4):>22}"
    )


def estimator_rows(s):
    """(label, summary key) of each estimator asked for, in --estimators' order."""
    k = s["num_samples"]
    labels = {
        "elbo": ("ELBO (>=)", "elbo"),
        "iwae": (f"IWAE K={s['iwae_particles']}", "iwae"),
        "smc": (f"SMC K={s['smc_particles']}", "smc"),
        "is": (f"log p(x) IS K={k}", "log_px"),
    }
    return [labels[name] for name in s.get("estimators", DEFAULT_ESTIMATORS)]


def report(s):
    """A compact, readable report of evaluate_checkpoint's summary."""
    if s["exact"]:
        how, rows = "exact (no latent variables)", [row(s, "log p(x) (exact)", "log_px")]
    else:
        how, rows = f"estimators {' '.join(s['estimators'])}", [row(s, *r) for r in estimator_rows(s)]
    lines = [
        f"{s['model']} on {s['dataset']} {s['split']}: {s['sequences']} sequences, {s['steps']} time steps",
        f"  checkpoint {s['checkpoint']} (step {s['step']}), {how}, {s['device']}",
        f"  {'':18}{'per sequence':>22}{'per time step':>22}  (per step: sum over sequences / total steps)",
        *rows,
    ]
    if not s["exact"] and "kl_per_seq" in s:
        lines += [row(s, "KL term", "kl")]
    if not s["exact"] and "gap_per_seq" in s:
        lines += [
            row(s, "IS - ELBO", "gap"),
            f"  effective sample size of the IS weights: mean {s['ess_mean']:.1f}, "
            f"min {s['ess_min']:.1f} of {s['num_samples']}",
        ]
    if not s["exact"] and s.get("iwae_particles") == s["num_samples"] and {"iwae", "is"} <= set(s["estimators"]):
        lines.append(f"  IWAE K={s['num_samples']} is the IS estimate with K={s['num_samples']}: the same particles")
    if not s["exact"] and "smc_resamples_per_seq" in s:
        lines.append(f"  SMC resampled {s['smc_resamples_per_seq']:.1f} times a sequence (when its ESS < K/2)")
    lines.append(f"  {s.get('units', 'nats')}, +- one standard error across sequences; {s['seconds']:.1f} s")
    return "\n".join(lines)


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        check_seed(args.seed)
        parse_device(args.device)
        if args.json:  # before the evaluation, which may take hours, not after it
            check_output_file(args.json, "--json")
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = newest_run(DEFAULT_RUNS)
            print(f"evaluating the newest run: {checkpoint}")
        elif not os.path.exists(checkpoint):
            raise TrainingError(f"no checkpoint at {checkpoint}")
        summary, per_sequence = evaluate_checkpoint(
            checkpoint,
            split=args.split,
            num_samples=args.num_samples,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
            device=resolve_device(args.device),
            data_dir=args.data_dir,
            seed=args.seed,
            progress=True,
            estimators=args.estimators,
            iwae_particles=args.iwae_particles,
            smc_particles=args.smc_particles,
            memory_budget_bytes=None if args.memory_budget is None else args.memory_budget * 2**20,
        )
    except (DataError, TrainingError, FlagError) as error:
        sys.exit(f"error: {error}")
    print(report(summary))
    if args.json:
        record = dict(summary, per_sequence={k: v.tolist() for k, v in per_sequence.items()})
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
