"""The paper's Figure 2 for a trained VRNN: what its latent variables do along one real sequence.

    python run/analyze.py --checkpoint runs/RUN/best.pt                  # valid sequence 0
    python run/analyze.py --checkpoint runs/RUN --split test --index 7 --particles 16

The guide q(z_t | x_<=t, z_<t) is run over the sequence and the model replayed on its draws, so
that at every step t both Gaussians are at hand (pyro_vrnn/report/figures.py, `latent_activity`):

    delta_t = sum_j (mu_z,t^j - mu_z,t-1^j)^2        how far the posterior mean moves (delta_1 = 0)
    KL_t    = KL( q(z_t | x_<=t, z_<t) || p(z_t | x_<t, z_<t) )     what step t costs the ELBO in z

and both are drawn in time above the signal: the waveform for speech (Chung et al. 2015, Fig. 2:
the latent changes line up with changes of the waveform's mode), the features against the time step
for other real-valued data, the pen offsets with the pen lifts marked and the line itself for
handwriting, the roll for piano rolls. A model conditioned on text (cvrnn-gmm) reads the line with the
text it writes, as in training. Writes figure2-SPLIT-INDEX.png
and .csv (t, delta, kl, and the data) into --out (default: the run directory).
"""

import argparse
import os
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import pyro

from pyro_vrnn.data import DataError
from pyro_vrnn.report.figures import Run, check_index, figure2
from pyro_vrnn.train.checkpoints import resolve_checkpoint
from pyro_vrnn.train.config import CONDITIONAL_MODELS
from pyro_vrnn.train.flag_checks import FlagError, check_output_dir, check_seed, parse_device
from pyro_vrnn.train.process import TrainingError, resolve_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pt file or a run directory (its best.pt, else last.pt)")
    p.add_argument("--split", default="valid", choices=("train", "valid", "test"), help="default: valid")
    p.add_argument("--index", type=int, default=0, help="which sequence of the split (default 0)")
    p.add_argument(
        "--particles",
        type=int,
        default=1,
        help="average delta_t and KL_t over this many draws of the guide (default 1, as the paper)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the guide's draws (default 0)")
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them")
    p.add_argument("--out", help="output directory (default: the run directory)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return p.parse_args(argv)


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        if args.particles < 1:
            raise TrainingError("--particles must be at least 1")
        check_seed(args.seed)
        parse_device(args.device)
        if not os.path.exists(args.checkpoint):
            raise TrainingError(f"no checkpoint at {args.checkpoint}")
        out = args.out or os.path.dirname(os.path.abspath(resolve_checkpoint(args.checkpoint)))
        check_output_dir(out, "--out" if args.out else "--out (default: the run directory)")
        run = Run(args.checkpoint, resolve_device(args.device))
        if not run.latent:
            raise TrainingError(
                f"{run.config.model} has no latent variables: Figure 2 needs a VRNN "
                "(vrnn-gmm, vrnn-gauss or vrnn-i-gauss) or an SRNN (srnn, srnn-gmm)"
            )
        data = run.dataset(args.split, args.data_dir)
        check_index(data, args.index, args.split, "--index")
        sequence = data[args.index]
        text = data.texts[args.index] if run.config.model in CONDITIONAL_MODELS else None
        os.makedirs(out, exist_ok=True)
        pyro.set_rng_seed(args.seed)
        title = f"{run.describe()}: {args.split} sequence {args.index} ({len(sequence)} steps)"
        title += f", {text!r}" if text is not None else ""
        written, numbers = figure2(
            run, sequence, os.path.join(out, f"figure2-{args.split}-{args.index}.png"), args.particles, title, text
        )
    except (DataError, TrainingError, FlagError) as error:
        sys.exit(f"error: {error}")
    print(
        f"{title}: KL {numbers['kl'].sum():.2f} nats in all, largest at step {numbers['kl'].argmax() + 1}; "
        f"largest change of the posterior mean at step {numbers['delta'].argmax() + 1}"
    )
    for path in written:
        print(f"wrote {path}")
    return written


if __name__ == "__main__":
    main()
