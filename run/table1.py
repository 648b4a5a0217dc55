"""Table 1 of Chung et al. (2015): train the five models with one budget, then compare their log-likelihoods.

    python run/table1.py                                   # the embedded handwriting set, preset epochs
    python run/table1.py --dataset iam --data-dir ~/iam --epochs 20
    python run/table1.py --max-steps 200 --models rnn-gauss vrnn-gauss

Each model is trained as run/svi.py would (into RUN/<model>/), then evaluated on --split (valid, as the
paper for IAM-OnDB): the ELBO (the paper's ">=" numbers) and the importance-sampled log p(x) ("~"),
average per sequence in nats; the RNN baselines' log-likelihood is exact. The table is printed and
written to RUN/table1.md and RUN/table1.json.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pyro_vrnn.checks import check_output_dir, check_seed, parse_device  # noqa: E402
from pyro_vrnn.config import MODEL_NAMES, make_config  # noqa: E402
from pyro_vrnn.data import DATASETS, DataError  # noqa: E402
from pyro_vrnn.evaluate import evaluate_checkpoint  # noqa: E402
from pyro_vrnn.runtime import TrainingError, resolve_device  # noqa: E402
from pyro_vrnn.train import train  # noqa: E402

PAPER_NAMES = {"rnn-gauss": "RNN-Gauss", "rnn-gmm": "RNN-GMM", "vrnn-i-gauss": "VRNN-I-Gauss",
               "vrnn-gauss": "VRNN-Gauss", "vrnn-gmm": "VRNN-GMM"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="hershey", choices=sorted(DATASETS), help="default: hershey (embedded)")
    p.add_argument("--data-dir", help="where the dataset's files are (licensed sets)")
    p.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES, metavar="MODEL",
                   help="a subset of the five models (default: all)")
    p.add_argument("--epochs", type=int, help="training epochs per model (default: the dataset's preset)")
    p.add_argument("--max-steps", type=int, help="stop each model after this many optimizer steps")
    p.add_argument("--split", default="valid", choices=("valid", "test"), help="default: valid, as the paper")
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per sequence (default 100)")
    p.add_argument("--batch-size", type=int, help="sequences per evaluation batch (default: the run's)")
    p.add_argument("--device", default="auto", help="auto (cuda if available; the default), cpu, cuda, cuda:1")
    p.add_argument("--seed", type=int, default=0, help="training and evaluation seed (default 0)")
    p.add_argument("--out", help="run directory (default runs/table1-<dataset>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no training progress")
    return p.parse_args(argv)


def cell(row, key):
    value, stderr = row[f"{key}_per_seq"], row[f"{key}_per_seq_stderr"]
    return f"{value:.1f}" + ("" if stderr is None else f" ± {stderr:.1f}")


def markdown(rows, title):
    """The paper's layout: a row per model, the bound and the estimate side by side."""
    lines = [f"**{title}**", "",
             "| model | ELBO (>=) | log p(x) (~) | log p(x) per step | ESS (mean / K) |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        if "error" in row:
            lines.append(f"| {PAPER_NAMES[name]} | failed: {row['error']} | | | |")
        elif row["exact"]:
            lines.append(f"| {PAPER_NAMES[name]} | {cell(row, 'log_px')} | = (exact) | "
                         f"{row['log_px_per_step']:.4f} | - |")
        else:
            lines.append(f"| {PAPER_NAMES[name]} | >= {cell(row, 'elbo')} | ~ {cell(row, 'log_px')} | "
                         f"{row['log_px_per_step']:.4f} | {row['ess_mean']:.1f} / {row['num_samples']} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    run_dir = args.out or os.path.join("runs", f"table1-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    rows = {}
    try:
        check_seed(args.seed)
        check_output_dir(run_dir, "--out")
        device = resolve_device(parse_device(args.device))
        os.makedirs(run_dir, exist_ok=True)
        for name in args.models:
            config = make_config(args.dataset, model=name, data_dir=args.data_dir, epochs=args.epochs,
                                 max_steps=args.max_steps, device=args.device, seed=args.seed,
                                 out=os.path.join(run_dir, name))
            print(f"== {PAPER_NAMES[name]}: training into {config.out}", flush=True)
            try:
                model_dir = train(config, quiet=args.quiet)
            except TrainingError as error:  # one diverged model leaves the others' rows standing
                print(f"error: {error}", flush=True)
                rows[name] = {"error": str(error).split(";")[0]}
                continue
            rows[name], _ = evaluate_checkpoint(model_dir, split=args.split, num_samples=args.num_samples,
                                                batch_size=args.batch_size, device=device, data_dir=args.data_dir,
                                                seed=args.seed, progress=not args.quiet)
            print(f"   {args.split}: ELBO {cell(rows[name], 'elbo')}, log p(x) {cell(rows[name], 'log_px')}"
                  + (" (exact)" if rows[name]["exact"] else ""), flush=True)
    except (DataError, TrainingError, ValueError) as error:
        sys.exit(f"error: {error}")
    budget = (f"{args.epochs} epochs" if args.epochs else "preset epochs") + \
        (f", at most {args.max_steps} steps" if args.max_steps else "")
    title = (f"Table 1 on {args.dataset} {args.split}: average log-likelihood per sequence (nats, normalized data, "
             f"± one standard error; {budget}; K = {args.num_samples})")
    table = markdown(rows, title)
    print("\n" + table)
    with open(os.path.join(run_dir, "table1.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(run_dir, "table1.json"), "w") as f:
        json.dump({"dataset": args.dataset, "split": args.split, "epochs": args.epochs, "max_steps": args.max_steps,
                   "num_samples": args.num_samples, "models": rows}, f, indent=2)
    print(f"wrote {os.path.join(run_dir, 'table1.md')} and table1.json")
    return rows


if __name__ == "__main__":
    main()
