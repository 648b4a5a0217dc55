"""Evaluate a model of token data (--dataset shakespeare, chess, or a "tokens" file of one's own): per token.

    python run/evaluate_tokens.py --checkpoint runs/RUN                      # test split
    python run/evaluate_tokens.py --checkpoint runs/RUN --particles 32 --max-sequences 500 --json out.json

Prints, per token of the split (each of its characters or moves scored once):
  log p(x)   the exact log-likelihood (RNN), or a bootstrap particle filter's estimate with --particles K
             (pyro_vrnn/infer/next_token.py): in bits per character for character data, nats per move otherwise
  ELBO, KL   the ELBO (one draw of the guide) and its KL term: how much the latent variables carry
  top-1      how often the most probable next token, p(x_t | x_{<t}), is the one that came
and for chess the fraction of sampled moves that are legal in their position (--samples games of the data's
median length from the initial position, each played up to and with its first illegal move).
"""

import argparse
import json
import math
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import numpy as np
import pyro
import torch

from pyro_vrnn.data import DataError, pad_batch
from pyro_vrnn.data.tokens import characters, decode
from pyro_vrnn.infer.next_token import next_token_predictions
from pyro_vrnn.infer.objectives import elbo_terms
from pyro_vrnn.report.figures import Run, sample_run
from pyro_vrnn.train.flag_checks import check_output_file, check_seed
from pyro_vrnn.train.process import TrainingError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a .pt file or a run directory (its best.pt, else last.pt)")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--particles", type=int, default=16, help="particles of the filter for latent models (16)")
    p.add_argument("--max-sequences", type=int, default=None, help="score the first N sequences of the split only")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--samples", type=int, default=200, help="chess: games sampled for the legality figure (200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them")
    p.add_argument("--json", help="also write the figures to this file")
    return p.parse_args(argv)


def evaluate(run, dataset, particles, max_sequences=None, batch_size=64):
    """Sums over the split's tokens: log p(x), ELBO, KL, correct top-1 predictions; and the token count."""
    count = len(dataset) if max_sequences is None else min(max_sequences, len(dataset))
    totals = dict.fromkeys(("log_px", "elbo", "kl", "correct", "tokens"), 0.0)
    for start in range(0, count, batch_size):
        x, mask = pad_batch([dataset[i] for i in range(start, min(count, start + batch_size))])
        log_probs, predictions = next_token_predictions(run.vrnn, run.latent, x, mask, particles)
        log_likelihood, kl = elbo_terms(run.model, run.guide, run.vrnn, x, mask)
        totals["log_px"] += log_probs.sum().item()
        totals["elbo"] += (log_likelihood - kl).sum().item()
        totals["kl"] += kl.sum().item()
        totals["correct"] += ((predictions == x[..., 0].long()) & mask).sum().item()
        totals["tokens"] += mask.sum().item()
    return totals


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        check_seed(args.seed)
        if args.json:  # before the evaluation, not after it
            check_output_file(args.json, "--json")
        if args.particles < 1 or args.batch_size < 1 or args.samples < 0:
            raise TrainingError("--particles and --batch-size must be at least 1, --samples 0 or more")
        run = Run(args.checkpoint)
        if run.info["kind"] != "tokens":
            raise TrainingError(f"{run.path} models {run.info['kind']} data; run/evaluate_ll.py evaluates it")
        dataset = run.dataset(args.split, args.data_dir)
        vocabulary = run.info["vocabulary"]
        torch.set_num_threads(max(1, run.config.threads or torch.get_num_threads()))
        pyro.set_rng_seed(args.seed)
        totals = evaluate(run, dataset, args.particles, args.max_sequences, args.batch_size)
        legal = None
        if run.config.dataset == "chess" and args.samples:
            from pyro_vrnn.data.chess import legal_fraction

            x = sample_run(run, args.samples, run.info["median_length"], args.seed)
            legal = legal_fraction([decode(sample, vocabulary).split() for sample in x])
    except (DataError, TrainingError, ValueError) as error:
        sys.exit(f"error: {error}")
    n = totals["tokens"]
    unit, scale = ("bits/char", 1 / math.log(2)) if characters(vocabulary) else ("nats/token", 1.0)
    figures = {
        "checkpoint": run.path,
        "model": run.config.model,
        "dataset": run.config.dataset,
        "split": args.split,
        "tokens": int(n),
        "unit": unit,
        "neg_log_px": -totals["log_px"] / n * scale,
        "neg_elbo": -totals["elbo"] / n * scale,
        "kl": totals["kl"] / n * scale,
        "top1": totals["correct"] / n,
        "particles": args.particles if run.latent else None,
        "legal_moves": None if legal is None else legal[0] / max(1, legal[1]),
        "sampled_moves": None if legal is None else legal[1],
    }
    estimate = "exact" if not run.latent else f"filter, K={args.particles}"
    print(
        f"{run.describe()}, {args.split} ({int(n):,} tokens): -log p(x) {figures['neg_log_px']:.4f} {unit} "
        f"({estimate}), -ELBO {figures['neg_elbo']:.4f}, KL {figures['kl']:.4f} {unit}, top-1 {figures['top1']:.2%}"
        + (f", legal sampled moves {figures['legal_moves']:.2%} of {legal[1]}" if legal is not None else "")
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1, default=lambda v: float(np.asarray(v)))
    return figures


if __name__ == "__main__":
    main()
