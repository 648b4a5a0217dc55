"""Does priming carry a writer's style? (Graves 2013, section 5.3; pyro_vrnn/report/style.py)

    python run/style.py --checkpoint runs/RUN                       # 100 pairs of test lines, bias 0
    python run/style.py --checkpoint runs/RUN --pairs 100 --bias 1 --seed 0

For each of --pairs pairs of test lines (N, M) by two different writers (lines of different forms: a hershey
form is one writer's; on IAM-OnDB one writer may have written two forms, which can only lower the figure),
the model writes a new phrase primed on line N (run/write.py --style N) and the phrase is measured: slant,
letter height and spacing, standardized over the test lines. The pair counts when the written line is nearer
line N's style than line M's. Two controls on the same pairs show what the number means:

    same writer  another real line by N's writer: how often the measure itself tells N's writer from M's
                 (the most priming could reach);
    unprimed     the same phrase written without priming: how often chance puts it nearer N (about half).

Writes OUT/style.json (default RUN/style/): the three fractions, each measure's mean standardized distance to N
and to M, and every pair (its lines, phrase, and the styles measured).
"""

import argparse
import json
import os
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import numpy as np
import pyro
from tqdm import tqdm

from pyro_vrnn.data import DataError
from pyro_vrnn.report.figures import Run
from pyro_vrnn.report.style import Style, closer_to_first, measure, measure_all, style_pairs, writer_of
from pyro_vrnn.report.synthesis import phrases, write_lines
from pyro_vrnn.train.config import CONDITIONAL_MODELS
from pyro_vrnn.train.flag_checks import FlagError, check_bias, check_output_dir, check_seed, parse_device
from pyro_vrnn.train.process import TrainingError, resolve_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--checkpoint", required=True, help=f"a .pt file or run directory of {' or '.join(CONDITIONAL_MODELS)}"
    )
    p.add_argument("--pairs", type=int, default=100, help="pairs of test lines (default 100)")
    p.add_argument("--bias", type=float, default=0.0, help="Graves's sampling bias B >= 0 (default 0: the model)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the pairs, phrases and writing (default 0)")
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them")
    p.add_argument("--out", help="output directory (default: RUN/style)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return p.parse_args(argv)


def in_data_units(line, info):
    return line.numpy() * np.asarray(info["std"]) + np.asarray(info["mean"])


def correlation(a, b):
    keep = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[keep], b[keep])[0, 1]) if keep.sum() > 2 else float("nan")


def compare(run, test, writers, pairs, bias, seed):
    """The written lines' styles against their pairs' and the controls': the result as a dict for style.json."""
    texts = test.texts
    real = measure_all([in_data_units(test[i], run.info) for i in range(len(test))], texts)
    said = phrases(run.vrnn.alphabet, len(pairs), seed, run.config.longest_text)
    primed = []
    for (n, _), phrase in zip(tqdm(pairs, desc="writing primed", leave=False), said):
        lines, _ = write_lines(run, [phrase], bias, prime=test[n], prime_text=texts[n])
        primed.append(measure(lines[0], len(phrase)))
    unprimed_lines, _ = write_lines(run, said, bias)
    unprimed = [measure(line, len(phrase)) for line, phrase in zip(unprimed_lines, said)]
    first, second = real[[n for n, _ in pairs]], real[[m for _, m in pairs]]
    result = {"pairs": len(pairs), "bias": bias, "seed": seed, "checkpoint": run.path, "step": run.step}
    for name, styles in (("primed", np.array(primed)), ("unprimed", np.array(unprimed))):
        closer, to_n, to_m = closer_to_first(styles, first, second, real)
        result[name] = {
            "closer_to_N": float(closer.mean()),
            "mean_distance_to_N": float(np.nanmean(to_n)),
            "mean_distance_to_M": float(np.nanmean(to_m)),
            "unmeasured": int(np.isnan(to_n).sum()),
            # each measure alone: how often it is nearer N's than M's, and how it follows N's over the pairs
            "closer_to_N_by_measure": dict(
                zip(Style._fields, np.mean(np.abs(styles - first) < np.abs(styles - second), 0).tolist())
            ),
            "correlation_with_N": dict(zip(Style._fields, [correlation(styles[:, k], first[:, k]) for k in range(3)])),
        }
    # The ceiling: another real line of N's writer, in the pairs where N's writer has one
    rng = np.random.default_rng(seed)
    same = []
    for k, (n, _) in enumerate(pairs):
        others = [i for i in range(len(test)) if writers[i] == writers[n] and i != n and texts[i]]
        if others:
            same.append((k, int(rng.choice(others))))
    if same:
        ks, lines = [k for k, _ in same], [i for _, i in same]
        closer, _, _ = closer_to_first(real[lines], first[ks], second[ks], real)
        result["same_writer"] = {"closer_to_N": float(closer.mean()), "pairs": len(same)}
    result["measures"] = list(Style._fields)
    result["per_pair"] = [
        dict(N=n, M=m, phrase=phrase, N_style=real[n].tolist(), M_style=real[m].tolist(), primed=p, unprimed=u)
        for (n, m), phrase, p, u in zip(pairs, said, primed, unprimed)
    ]
    return result


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        check_seed(args.seed)
        parse_device(args.device)
        if args.pairs < 1:
            raise TrainingError("--pairs must be at least 1")
        check_bias(args.bias)
        if args.out is not None:
            check_output_dir(args.out, "--out")
        if not os.path.exists(args.checkpoint):
            raise TrainingError(f"no checkpoint at {args.checkpoint}")
        run = Run(args.checkpoint, resolve_device(args.device))
        if run.config.model not in CONDITIONAL_MODELS:
            raise TrainingError(
                f"{run.path} is a {run.config.model}, which cannot be primed with a line's text; pass a run of "
                f"{' or '.join(CONDITIONAL_MODELS)}"
            )
        test = run.dataset("test", args.data_dir)
        # Lines of one form are one writer's; without names, each line is taken as a writer of its own
        writers = [writer_of(n) for n in test.names] if test.names is not None else list(range(len(test)))
        usable = [i for i, text in enumerate(test.texts) if text]  # priming needs the line's text
        pairs = style_pairs(writers, usable, args.pairs, np.random.default_rng(args.seed))
        pyro.set_rng_seed(args.seed)
        result = compare(run, test, writers, pairs, args.bias, args.seed)
        out = args.out or check_output_dir(os.path.join(run.run_dir, "style"), "--out (default)")
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "style.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    except (DataError, TrainingError, FlagError, ValueError) as error:
        sys.exit(f"error: {error}")
    primed, unprimed, same = result["primed"], result["unprimed"], result.get("same_writer")
    print(
        f"{run.describe()}, bias {args.bias:g}: written primed on line N is nearer N's style than M's in "
        f"{primed['closer_to_N']:.0%} of {len(pairs)} pairs (unprimed: {unprimed['closer_to_N']:.0%}"
        + (f"; another real line of N's writer: {same['closer_to_N']:.0%}" if same else "")
        + ")"
    )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
