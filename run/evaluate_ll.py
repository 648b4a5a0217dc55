"""Evaluate a trained model the way Table 1 does (Chung et al. 2015): average log-likelihood per sequence.

    python run/evaluate_ll.py                                    # the newest run under runs/, test split (or valid)
    python run/evaluate_ll.py --checkpoint runs/RUN/best.pt --split valid --num-samples 100
    python run/evaluate_ll.py --checkpoint runs/RUN --json ll.json

Prints, in nats of the normalized data, the mean ELBO per sequence (Table 1's ">=" rows) and the mean
importance-sampled log p(x) (the "~" rows, K particles from the guide, log (1/K) sum_k p(x, z^k) / q(z^k | x)),
each with its standard error across sequences, the same per time step; the ELBO's KL term (how much the
latent variables carry), the gap between the estimate and the bound (how far the guide is from the
posterior), and the effective sample size of the importance weights. For the RNN baselines log p(x) is
exact and no sampling is done.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pyro_vrnn.checks import FlagError, check_output_file, check_seed, parse_device  # noqa: E402
from pyro_vrnn.data import DataError  # noqa: E402
from pyro_vrnn.evaluate import evaluate_checkpoint  # noqa: E402
from pyro_vrnn.runtime import TrainingError, resolve_device  # noqa: E402

DEFAULT_RUNS = "runs"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a .pt file or a run directory (its best.pt, else last.pt); "
                                        f"default: the newest run under {DEFAULT_RUNS}/")
    p.add_argument("--split", choices=("train", "valid", "test"),
                   help="default: test, or valid where the data set has none (IAM-OnDB, as the paper)")
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per sequence (default 100)")
    p.add_argument("--batch-size", type=int, help="sequences per batch (default: the run's batch size)")
    p.add_argument("--chunk-size", type=int,
                   help="particles per vectorized pass (default: as many as fit 256 MiB, or a quarter "
                        "of the GPU's free memory)")
    p.add_argument("--device", default="auto", help="auto (cuda if available; the default), cpu, cuda, cuda:1")
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them")
    p.add_argument("--seed", type=int, default=0, help="seed of the particles (default 0)")
    p.add_argument("--json", metavar="FILE", help="also write the figures (and per-sequence numbers) here")
    return p.parse_args(argv)


def newest_run(root=DEFAULT_RUNS):
    """The most recently written checkpoint under `root` (run directories may be nested, as table1's)."""
    checkpoints = [p for name in ("best.pt", "last.pt") for p in glob.glob(os.path.join(root, "**", name),
                                                                              recursive=True)]
    if not checkpoints:
        raise TrainingError(f"no runs found under {root}/; train one with run/svi.py or pass --checkpoint")
    newest = max(checkpoints, key=os.path.getmtime)
    return os.path.dirname(newest)  # its best.pt is preferred over last.pt


def fmt(value, stderr=None, digits=2):
    text = f"{value:.{digits}f}"
    return text if stderr is None else f"{text} +- {stderr:.{digits}f}"


def report(s):
    """A compact, readable report of evaluate_checkpoint's summary."""
    how = "exact (no latent variables)" if s["exact"] else f"importance sampling, K = {s['num_samples']}"
    lines = [
        f"{s['model']} on {s['dataset']} {s['split']}: {s['sequences']} sequences, {s['steps']} time steps",
        f"  checkpoint {s['checkpoint']} (step {s['step']}), {how}, {s['device']}",
        f"  {'':14}{'per sequence':>22}{'per time step':>22}",
        f"  {'ELBO (>=)':14}{fmt(s['elbo_per_seq'], s['elbo_per_seq_stderr']):>22}"
        f"{fmt(s['elbo_per_step'], s['elbo_per_step_stderr'], 4):>22}",
        f"  {'log p(x) (~)':14}{fmt(s['log_px_per_seq'], s['log_px_per_seq_stderr']):>22}"
        f"{fmt(s['log_px_per_step'], s['log_px_per_step_stderr'], 4):>22}",
    ]
    if not s["exact"]:
        lines += [f"  {'KL term':14}{fmt(s['kl_per_seq'], s['kl_per_seq_stderr']):>22}"
                  f"{fmt(s['kl_per_step'], s['kl_per_step_stderr'], 4):>22}",
                  f"  {'IS - ELBO':14}{fmt(s['gap_per_seq'], s['gap_per_seq_stderr']):>22}"
                  f"{fmt(s['gap_per_step'], s['gap_per_step_stderr'], 4):>22}",
                  f"  effective sample size of the weights: mean {s['ess_mean']:.1f}, "
                  f"min {s['ess_min']:.1f} of {s['num_samples']}"]
    lines.append(f"  nats of the normalized data, +- one standard error across sequences; {s['seconds']:.1f} s")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    try:
        check_seed(args.seed)
        parse_device(args.device)
        if args.json:  # before the evaluation, which may take hours, not after it
            check_output_file(args.json, "--json")
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = newest_run()
            print(f"evaluating the newest run: {checkpoint}")
        elif not os.path.exists(checkpoint):
            raise TrainingError(f"no checkpoint at {checkpoint}")
        summary, per_sequence = evaluate_checkpoint(
            checkpoint, split=args.split, num_samples=args.num_samples, batch_size=args.batch_size,
            chunk_size=args.chunk_size, device=resolve_device(args.device), data_dir=args.data_dir,
            seed=args.seed, progress=True)
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
