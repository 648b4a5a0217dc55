"""The paper's Figure 3: real handwriting beside samples of an RNN-GMM and of a VRNN-GMM.

    python run/figure3.py --rnn runs/RNN_RUN/best.pt --vrnn runs/VRNN_RUN/best.pt
    python run/figure3.py --rnn runs/RNN_RUN --vrnn runs/VRNN_RUN --num 6 --temperature 0.8 --out fig3.png

Three columns: `--num` real lines of the validation split (from --first on), then `--num`
samples of each model, of the real lines' median length (or --length). Chung et al. (2015) point at
style: within one VRNN line the slant, size and spacing stay the same, where the RNN's drift. The
two checkpoints must come from the same handwriting data set.
"""

import argparse
import os
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

from pyro_vrnn.data import DataError
from pyro_vrnn.report.figures import Run, figure3
from pyro_vrnn.train.flag_checks import (
    check_output_file,
    check_positive_finite,
    check_sample_memory,
    check_seed,
    parse_device,
)
from pyro_vrnn.train.process import TrainingError, resolve_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rnn", required=True, help="checkpoint (.pt or run directory) of the RNN (e.g. rnn-gmm)")
    p.add_argument("--vrnn", required=True, help="checkpoint (.pt or run directory) of the VRNN (e.g. vrnn-gmm)")
    p.add_argument("--num", type=int, default=4, help="lines per column (default 4)")
    p.add_argument("--length", type=int, help="steps per sample (default: median length of the real lines shown)")
    p.add_argument("--temperature", type=float, default=1.0, help="emission temperature (default 1: the models)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--split",
        default="valid",
        choices=("train", "valid", "test"),
        help="where the real lines come from (default valid)",
    )
    p.add_argument("--first", type=int, default=0, help="index of the first real line (default 0)")
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the runs found them")
    p.add_argument("--out", default="figure3.png", help="the PNG to write (default figure3.png)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return p.parse_args(argv)


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        if args.num < 1 or (args.length is not None and args.length < 1):
            raise TrainingError("--num and --length must be at least 1")
        check_positive_finite(args.temperature, "--temperature")
        check_seed(args.seed)
        parse_device(args.device)
        check_output_file(args.out, "--out", make_folder=True)
        for path in (args.rnn, args.vrnn):
            if not os.path.exists(path):
                raise TrainingError(f"no checkpoint at {path}")
        device = resolve_device(args.device)
        runs = [Run(args.rnn, device), Run(args.vrnn, device)]
        if args.length is not None:  # (the default, the real lines' median length, is short)
            for run in runs:
                check_sample_memory(
                    args.num,
                    args.length,
                    run.info["dim"],
                    run.config,
                    f"--num {args.num} --length {args.length}",
                    args.device,
                )
        if os.path.dirname(args.out):
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
        path = figure3(
            runs, args.out, args.num, args.length, args.split, args.seed, args.temperature, args.data_dir, args.first
        )
    except (DataError, TrainingError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
