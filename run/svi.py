"""Train a Table 1 model with SVI on the ELBO (Chung et al. 2015).

    python run/svi.py                                   # VRNN-GMM on the embedded handwriting set
    python run/svi.py --dataset iam --data-dir ~/iam    # the paper's IAM-OnDB setting
    python run/svi.py --resume runs/RUN                 # continue a stopped or killed run
    torchrun --nproc_per_node 4 run/svi.py ...          # the same training on 4 processes

Writes to the run directory: log.jsonl, config.json, last.pt, best.pt, and at the end
samples.png (generated lines) and curves.png (training curves).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from pyro_vrnn.checkpoints import load_checkpoint  # noqa: E402
from pyro_vrnn.checks import check_output_dir  # noqa: E402
from pyro_vrnn.config import MODEL_NAMES, Config, check_config, config_from_dict, make_config  # noqa: E402
from pyro_vrnn.data import DATASETS, DataError  # noqa: E402
from pyro_vrnn.report import end_of_run_figures  # noqa: E402
from pyro_vrnn.runtime import TrainingError, close_process_group  # noqa: E402
from pyro_vrnn.train import Interrupted, resume_path, train  # noqa: E402

# Flags that may change when a run is resumed (the optimization's: e.g. a lower --lr after a
# divergence); everything else must match the checkpoint.
RESUMABLE = {"epochs", "max_steps", "patience", "device", "threads", "checkpoint_every", "log_every",
             "data_dir", "lr", "clip", "kl_anneal_epochs", "elbo", "scoring"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS),
                   help="data set (default hershey: embedded, no download)")
    p.add_argument("--model", choices=MODEL_NAMES, help="Table 1 model (default vrnn-gmm)")
    p.add_argument("--data-dir", help="where the dataset's files are (licensed sets)")
    p.add_argument("--out", help="run directory (default runs/<dataset>-<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run that --out holds before training into it (default: refuse)")
    g = p.add_argument_group("sizes (defaults: the dataset's preset, see pyro_vrnn/config.py)")
    sizes = {"hidden": "LSTM units (f)", "z_dim": "latent dimension", "x_features": "phi_x width",
             "z_features": "phi_z width", "enc_hidden": "phi_enc width", "prior_hidden": "phi_prior width",
             "dec_hidden": "phi_dec width", "mlp_layers": "ReLU layers per MLP",
             "components": "mixture components of the GMM emissions"}
    for name, meaning in sizes.items():
        g.add_argument("--" + name.replace("_", "-"), type=int, help=meaning)
    g.add_argument("--min-scale", type=float, help="floor added to every softplus scale")
    g.add_argument("--mixture", choices=("shared", "independent"),
                   help="real-valued GMM: shared (default: a common mean and scale plus per-component offsets) "
                        "or independent (each component its own; docs/ablations.md)")
    g.add_argument("--cell", choices=("lstm", "gru"), help="the recurrence f: lstm (the paper's, default) or gru")
    g = p.add_argument_group("training")
    g.add_argument("--batch-size", type=int, help="sequences per batch (per process under torchrun)")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--clip", type=float, help="gradient-norm clipping")
    g.add_argument("--epochs", type=int, help="passes over the training set")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    g.add_argument("--patience", type=int, help="early stopping: epochs without a better valid bound")
    g.add_argument("--elbo", choices=("trace", "meanfield"),
                   help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL, as the paper)")
    g.add_argument("--kl-anneal-epochs", type=float, help="KL weight rises from 0 to 1 over this many epochs")
    g.add_argument("--scoring", choices=("batched", "steps"),
                   help="the model program's form: batched (default: prior and emission of all steps in one "
                        "call each, models/vrnn.py) or steps (one step at a time, as the paper writes it)")
    g.add_argument("--seed", type=int, help="random seed (weights, batches, samples)")
    g.add_argument("--device", help="auto (cuda if available), cpu, cuda, cuda:1")
    g.add_argument("--threads", type=int, help="CPU threads for PyTorch (0: its default)")
    g.add_argument("--checkpoint-every", type=int, help="steps between mid-epoch checkpoints")
    g.add_argument("--log-every", type=int, help="steps between training records in log.jsonl")
    return p.parse_args(argv)


def config_for(args):
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("dataset", "resume") and v is not None and k in Config.__dataclass_fields__}
    if args.resume is not None and args.dataset is not None:
        overrides["dataset"] = args.dataset
    if args.resume is None:
        return make_config(args.dataset or "hershey", **overrides)
    config = config_from_dict(load_checkpoint(resume_path(args.resume))["config"])
    for key, value in overrides.items():
        if key in RESUMABLE:
            setattr(config, key, value)
        elif value != getattr(config, key):
            raise TrainingError(f"--{key.replace('_', '-')} {value} differs from the resumed run's "
                                f"{getattr(config, key)}; drop it or start a new run")
    check_config(config)
    return config


def after_training(run_dir):
    """Pictures at the end of every run: generated samples and the training curves."""
    for path in end_of_run_figures(run_dir):
        print(f"wrote {path}")


def main(argv=None):
    """Train; exit 0 when the run is done, 130 / 143 when SIGINT / SIGTERM stopped it (last.pt written),
    1 with a one-line error otherwise."""
    try:
        args = parse_args(argv)
        try:
            if args.out is not None:
                check_output_dir(args.out, "--out")
            config = config_for(args)  # checks --seed and --device too (config.check_config)
        except ValueError as error:  # a bad flag combination, said in one line
            raise TrainingError(str(error)) from None
        train(config, resume=args.resume, after_training=after_training, overwrite=args.overwrite)
    except Interrupted as stop:
        print(stop, file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started: the last checkpoint stands
        print("\ninterrupted; what was written before stands (resume a run with --resume RUN_DIR)",
              file=sys.stderr, flush=True)
        sys.exit(130)
    except (DataError, TrainingError) as error:
        sys.exit(f"error: {error}")
    finally:
        close_process_group()


if __name__ == "__main__":
    main()
