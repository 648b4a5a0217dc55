"""Train a Table 1 model with SVI on the ELBO (Chung et al. 2015).

    python run/svi.py                                   # VRNN-GMM on the embedded handwriting set
    python run/svi.py --dataset iam --data-dir ~/iam    # the paper's IAM-OnDB setting
    python run/svi.py --resume runs/RUN                 # continue a stopped or killed run
    torchrun --nproc_per_node 4 run/svi.py ...          # the same training on 4 processes

Writes to the run directory: log.jsonl, config.json, last.pt, best.pt, and at the end
samples.png (generated lines) and curves.png (training curves).
"""

import argparse
import sys

from pyro_vrnn.train.interrupts import main_takes_over, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

from pyro_vrnn.data import DATASETS, DataError
from pyro_vrnn.data.tempfiles import TEMP_NAME
from pyro_vrnn.report.figures import end_of_run_figures
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.config import (
    MODEL_NAMES,
    PARTICLE_BOUNDS,
    check_config,
    config_from_dict,
    make_config,
)
from pyro_vrnn.train.flag_checks import check_output_dir
from pyro_vrnn.train.flags import add_config_flags, overrides as flag_overrides
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.process import Interrupted, TrainingError, close_process_group, exit_at_once
from pyro_vrnn.train.run_directory import describe_os_error, resume_path

# Flags that may change when a run is resumed (the optimization's: e.g. a lower --lr after a
# divergence); everything else must match the checkpoint.
RESUMABLE = {
    "epochs",
    "max_steps",
    "patience",
    "device",
    "threads",
    "checkpoint_every",
    "log_every",
    "data_dir",
    "lr",
    "clip",
    "kl_anneal_epochs",
    "elbo",
    "particles",
    "scoring",
    "free_bits",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), help="data set (default hershey: embedded, no download)")
    p.add_argument(
        "--model",
        choices=MODEL_NAMES,
        help="a Table 1 model, an SRNN (Fraccaro et al. 2016), or one conditioned on each line's text "
        "(cvrnn-gmm, crnn-gmm: run/write.py writes with it); default vrnn-gmm",
    )
    p.add_argument("--data-dir", help="where the dataset's files are (licensed sets)")
    p.add_argument("--out", help="run directory (default runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run that --out holds before training into it (default: refuse)",
    )
    add_config_flags(p)
    return p.parse_args(argv)


def config_for(args):
    overrides = flag_overrides(args, exclude=("dataset",))
    if args.resume is not None and args.dataset is not None:
        overrides["dataset"] = args.dataset
    if args.resume is None:
        return make_config(args.dataset or "hershey", **overrides)
    config = config_from_dict(load_checkpoint(resume_path(args.resume))["config"])
    for key, value in overrides.items():
        if key in RESUMABLE:
            setattr(config, key, value)
        elif value != getattr(config, key):
            raise TrainingError(
                f"--{key.replace('_', '-')} {value} differs from the resumed run's "
                f"{getattr(config, key)}; drop it or start a new run"
            )
    if "elbo" in overrides:  # another objective: what served the run's gives way unless given, as in make_config
        if config.elbo in PARTICLE_BOUNDS:  # no KL term to anneal or grant free bits (e.g. chorales' preset)
            for lever in ("kl_anneal_epochs", "free_bits"):
                if lever not in overrides:
                    setattr(config, lever, 0.0)
        elif "particles" not in overrides:
            config.particles = 1  # the ELBOs take one sample
    check_config(config)
    return config


def after_training(run_dir):
    """Pictures at the end of every run: generated samples and the training curves. A full disk is one line: the
    run is trained, and --resume draws what is missing."""
    try:
        written = end_of_run_figures(run_dir)
    except OSError as error:
        where = TEMP_NAME.sub(r"\g<target>", error.filename) if isinstance(error.filename, str) else run_dir
        raise TrainingError(
            describe_os_error(error, where, "write")
            + f"; the run is trained and its checkpoints are intact: free some space and draw its pictures with "
            f"python run/svi.py --resume {run_dir}"
        ) from None
    for path in written:
        print(f"wrote {path}")


def main(argv=None):
    """Train; exit 0 when the run is done, 130 / 143 when SIGINT / SIGTERM stopped it (last.pt written),
    1 with a one-line error otherwise."""
    try:
        args = parse_args(argv)
        if args.resume is not None and args.overwrite:
            raise TrainingError("--overwrite deletes the run in --out and --resume continues one; pass one of them")
        try:
            if args.out is not None:
                check_output_dir(args.out, "--out")
            config = config_for(args)  # checks --seed and --device too (config.check_config)
        except ValueError as error:  # a bad flag combination, said in one line
            raise TrainingError(str(error)) from None
        train(
            config,
            resume=args.resume,
            after_training=after_training,
            overwrite=args.overwrite,
            passed=set(flag_overrides(args)),  # noted where the model or its data has no use for them
        )
    except Interrupted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started: the last checkpoint stands
        print(
            "\ninterrupted; what was written before stands (resume a run with --resume RUN_DIR)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)
    except (DataError, TrainingError) as error:
        sys.exit(f"error: {error}")
    finally:
        if close_process_group():  # a torchrun process leaves here, at once (process.exit_at_once says why)
            exit_at_once(sys.exc_info()[1])


if __name__ == "__main__":
    main_takes_over()  # from here main() says what a Ctrl-C stopped
    try:
        main()
    except KeyboardInterrupt:  # a Ctrl-C while the process was already on its way out
        sys.exit(130)
