"""Generate from a trained model by ancestral sampling (Chung et al. 2015, eqs. 5-7).

    python run/sample.py --checkpoint runs/RUN/best.pt                    # 6 samples of the data's median length
    python run/sample.py --checkpoint runs/RUN --num 4 --length 300 --temperature 0.7 --seed 1
    python run/sample.py --checkpoint runs/RUN --prime 3 --prime-steps 40  # continue valid sequence 3
    python run/sample.py --checkpoint runs/SHAKESPEARE --prefix "HAMLET. To be, or " --length 200
    python run/sample.py --checkpoint runs/CHESS --prefix "e2e4 c7c5 g1f3" --length 10

At every step z_t is drawn from the prior p(z_t | h_{t-1}), x_t from the emission p(x_t | z_t, h_{t-1}),
and h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}) is updated: the model program of models/ run with its
observations removed (pyro_vrnn/report/sampling.py). Writes, into --out (default RUN/samples/):

    handwriting   samples.png  the lines drawn as pen strokes (the pen lifts where the pen bit is 1)
    speech        samples.png  waveforms, and samples-01.wav ... (16 kHz, 16-bit mono; the samples-NN.wav
                               of an earlier call that this one does not write are removed)
    other real    samples.png  the features against the time step: one line each (a heat map above 16)
    piano rolls   samples.png  one roll per sample
    tokens        samples.txt  the samples as text (characters, or chess moves between spaces), also printed;
                               a prefix or prime, then "|", then the generated tokens
    always        samples.npz  x [num, prime_steps + length, D] in the data's own units (prime_steps, kind)

--temperature scales the emission only (mixture weights sharpened, scales narrowed, Graves 2013);
--prime starts every sample with the first --prime-steps steps of a real sequence (drawn in blue);
--prefix (token data) with the given text: its characters, or its space-separated tokens (chess moves in UCI).
"""

import argparse
import os
import sys

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

from pyro_vrnn.data import DataError
from pyro_vrnn.data.tokens import encode
from pyro_vrnn.report.figures import Run, remove_stale_audio, sample_run, token_sample_texts, write_samples
from pyro_vrnn.train.flag_checks import (
    check_output_dir,
    check_positive_finite,
    check_sample_memory,
    check_seed,
    parse_device,
)
from pyro_vrnn.train.process import TrainingError, resolve_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pt file or a run directory (its best.pt, else last.pt)")
    p.add_argument("--num", type=int, default=None, help="how many samples (default: the run's num_samples_figure, 6)")
    p.add_argument(
        "--length",
        type=int,
        default=None,
        help="time steps to generate, after the prime if any (default: the training data's median length)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="emission temperature: <1 cleaner and more probable, 1 the model itself (default 1)",
    )
    p.add_argument(
        "--prime",
        type=int,
        metavar="INDEX",
        help="start every sample with sequence INDEX of --split (real data), then generate",
    )
    p.add_argument(
        "--prime-steps",
        type=int,
        default=None,
        help="how many steps of the prime to keep (default: half of it; at most all of it)",
    )
    p.add_argument(
        "--split",
        default="valid",
        choices=("train", "valid", "test"),
        help="split the prime comes from (default valid)",
    )
    p.add_argument(
        "--prefix",
        metavar="TEXT",
        help="token data: start every sample with this text (characters; or moves such as 'e2e4 e7e5'), then generate",
    )
    p.add_argument("--data-dir", help="where the dataset's files are, if not where the run found them")
    p.add_argument("--out", help="output directory (default: RUN/samples)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    return p.parse_args(argv)


@one_line_ctrl_c("nothing was written")
def main(argv=None):
    args = parse_args(argv)
    try:
        check_positive_finite(args.temperature, "--temperature")
        check_seed(args.seed)
        parse_device(args.device)
        if args.out is not None:
            check_output_dir(args.out, "--out")
        if (args.num is not None and args.num < 1) or (args.length is not None and args.length < 1):
            raise TrainingError("--num and --length must be at least 1")
        if args.prime_steps is not None and (args.prime is None or args.prime_steps < 1):
            raise TrainingError("--prime-steps needs --prime INDEX and must be at least 1")
        if not os.path.exists(args.checkpoint):
            raise TrainingError(f"no checkpoint at {args.checkpoint}")
        run = Run(args.checkpoint, resolve_device(args.device))
        num = args.num or run.config.num_samples_figure
        length = args.length or run.info["median_length"]
        prime, prime_steps = None, 0
        if args.prime is not None:
            sequence = run.sequence(args.split, args.prime, args.data_dir, flag="--prime")
            prime_steps = args.prime_steps if args.prime_steps is not None else max(1, len(sequence) // 2)
            if prime_steps > len(sequence):  # the whole sequence is the longest prime there is: said, then used
                print(
                    f"--prime-steps {prime_steps}: {args.split} sequence {args.prime} has {len(sequence)} steps; "
                    f"priming with all {len(sequence)}",
                    flush=True,
                )
                prime_steps = len(sequence)
            prime = sequence[:prime_steps]
        if args.prefix is not None:
            if args.prime is not None:
                raise TrainingError("--prefix and --prime both give the start of the samples: pass one of them")
            if run.info["kind"] != "tokens":
                raise TrainingError(
                    f"--prefix is for token data (text, chess moves); this model's data are {run.info['kind']}"
                )
            prime = encode(args.prefix, run.info["vocabulary"])
            if len(prime) == 0:
                raise TrainingError("--prefix is empty: give at least one token")
            prime_steps = len(prime)
        out = args.out or check_output_dir(os.path.join(run.run_dir, "samples"), "--out (default)")
        check_sample_memory(
            num, prime_steps + length, run.info["dim"], run.config, f"--num {num} --length {length}", args.device
        )
        x = sample_run(run, num, prime_steps + length, args.seed, args.temperature, prime)
        title = f"{run.describe()}: {num} samples of {length} steps"
        if args.prefix is not None:
            title += f" after a prefix of {prime_steps} tokens"
        elif prime_steps:
            title += f" after the first {prime_steps} of {args.split} sequence {args.prime}"
        title += f", temperature {args.temperature:g}" if args.temperature != 1 else ""
        written = write_samples(x, run.info, out, suptitle=title, prime_steps=prime_steps)
        stale = remove_stale_audio(out, written)
    except (DataError, TrainingError, ValueError) as error:
        sys.exit(f"error: {error}")
    if run.info["kind"] == "tokens":
        for i, text in enumerate(token_sample_texts(x, run.info["vocabulary"], prime_steps)):
            print(f"--- sample {i + 1}\n{text.rstrip()}")
    for path in written:
        print(f"wrote {path}")
    if stale:  # they would not match samples.npz
        print(
            f"removed {len(stale)} WAV file(s) of an earlier call from {out}: {', '.join(map(os.path.basename, stale))}"
        )
    return written


if __name__ == "__main__":
    main()
