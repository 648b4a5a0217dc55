"""Write any text as handwriting with a model conditioned on text (Graves 2013, section 5;
pyro_vrnn/report/synthesis.py).

    python run/write.py "the quick fox"                                 # the newest cvrnn-gmm / crnn-gmm run
    python run/write.py "the quick fox" --checkpoint runs/RUN --num 4 --bias 1 --seed 2
    python run/write.py "the quick fox" --checkpoint runs/RUN --style 3  # in the style of test line 3
    python run/write.py "the quick fox" --checkpoint runs/RUN --style 3 40 97 --num 1   # in three styles

Each sample writes the whole text once: z_t from the prior, x_t from the emission, the window moving along the
text, until it has passed the last character (Graves's criterion: phi(t, U + 1) above phi(t, u) for every
u <= U), or --max-steps. Writes, into --out (default RUN/write/):

    write.png         the samples, one line each (with --style, each priming line before its samples)
    write-01.npy ...  each sample's strokes: [T, 3] rows (pen, dx, dy) in the data's own units, pen = 1 at the
                      last point of a stroke (pyro_vrnn/data/iam.py)

--bias B is Graves's sampling bias: mixture weights sharpened by (1 + B), scales divided by e^B; 0 is the model
itself, 1 to 3 writes more neatly and with less variety. --style N primes the model with test line N and its
text: the guide runs over that line with its text followed by the new one, and the writing goes on from there;
several lines N give --num samples in each one's style.
"""

import argparse
import os
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import numpy as np
import pyro

from pyro_vrnn.data import DataError
from pyro_vrnn.report import plots
from pyro_vrnn.report.figures import Run, check_index
from pyro_vrnn.report.synthesis import write_lines
from pyro_vrnn.train.config import CONDITIONAL_MODELS
from pyro_vrnn.train.flag_checks import check_bias, check_output_dir, check_seed, parse_device
from pyro_vrnn.train.process import TrainingError, resolve_device
from pyro_vrnn.train.run_directory import newest_run

DEFAULT_RUNS = "runs"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", help="what to write")
    p.add_argument(
        "--checkpoint", help=f"a .pt file or run directory of {' or '.join(CONDITIONAL_MODELS)} (default: the newest)"
    )
    p.add_argument("--num", type=int, default=4, help="samples of the text (default 4)")
    p.add_argument("--bias", type=float, default=0.0, help="Graves's sampling bias B >= 0 (default 0: the model)")
    p.add_argument(
        "--style", type=int, nargs="+", metavar="N", help="write in the style of test line N (priming); several: each"
    )
    p.add_argument("--max-steps", type=int, help="steps a sample may take at most (default 40 a character)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them (--style)")
    p.add_argument("--out", help="output directory (default: RUN/write)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return p.parse_args(argv)


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        check_seed(args.seed)
        parse_device(args.device)
        if args.num < 1 or (args.max_steps is not None and args.max_steps < 1):
            raise TrainingError("--num and --max-steps must be at least 1")
        check_bias(args.bias)
        if args.out is not None:
            check_output_dir(args.out, "--out")
        checkpoint = args.checkpoint or newest_run(DEFAULT_RUNS, CONDITIONAL_MODELS)
        if not os.path.exists(checkpoint):
            raise TrainingError(f"no checkpoint at {checkpoint}")
        run = Run(checkpoint, resolve_device(args.device))
        if run.config.model not in CONDITIONAL_MODELS:
            raise TrainingError(
                f"{run.path} is a {run.config.model}, which writes no given text; pass a run of "
                f"{' or '.join(CONDITIONAL_MODELS)}"
            )
        primes = [None]  # (index, line, text) of each priming line
        if args.style is not None:
            test = run.dataset("test", args.data_dir)
            for n in args.style:
                check_index(test, n, "test", "--style")
            primes = [(n, test[n], test.texts[n]) for n in args.style]
        pyro.set_rng_seed(args.seed)
        writings = []  # (prime, lines, finished) for each style
        for prime in primes:
            line, text = (None, None) if prime is None else prime[1:]
            writings.append((prime, *write_lines(run, [args.text] * args.num, args.bias, args.max_steps, line, text)))
        out = args.out or check_output_dir(os.path.join(run.run_dir, "write"), "--out (default)")
        os.makedirs(out, exist_ok=True)
        written = draw(writings, run, args, out)
        finished = [done for _, _, done_each in writings for done in done_each]
    except (DataError, TrainingError, ValueError) as error:
        sys.exit(f"error: {error}")
    for path in written:
        print(f"wrote {path}")
    if not all(finished):
        print(f"{finished.count(False)} sample(s) stopped at the step cap before the window passed the text's end")
    return written


def draw(writings, run, args, out):
    """write.png and write-NN.npy (numbered on across styles); returns their paths."""
    written, rows, titles = [], [], []
    for prime, lines, finished in writings:
        if prime is not None:
            n, line, text = prime
            rows.append(line.numpy() * np.asarray(run.info["std"]) + np.asarray(run.info["mean"]))
            titles.append(f"test line {n}: {text!r} (the style)")
        for line, done in zip(lines, finished):
            path = os.path.join(out, f"write-{len(written) + 1:02d}.npy")
            np.save(path, line.astype(np.float32))
            written.append(path)
            # after a priming line, whose last row lifts the pen, the first offset moves the pen up: not drawn
            rows.append(line if prime is None else line[1:])
            titles.append(f"sample {len(written)}" + ("" if done else " (stopped at the step cap)"))
    suptitle = f"{args.text!r}, {run.describe()}" + (f", bias {args.bias:g}" if args.bias else "")
    picture = os.path.join(out, "write.png")
    plots.plot_handwriting(rows, picture, titles, suptitle, same_scale=True)
    return [picture] + written


if __name__ == "__main__":
    main()
