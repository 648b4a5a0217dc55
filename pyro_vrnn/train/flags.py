"""The command-line flags of a run's configuration (pyro_vrnn/train/config.py), shared by run/svi.py and
run/table1.py, so that a Table 1 run takes exactly the sizes and training settings of a single run.

Every flag defaults to None, meaning "the data set's preset" (config.PRESETS), and `overrides(args)`
returns the ones given, as config fields.
"""

import argparse

from pyro_vrnn.train.config import ELBO_NAMES, Config

SIZES = {
    "hidden": "LSTM units (f)",
    "z_dim": "latent dimension",
    "x_features": "phi_x width",
    "z_features": "phi_z width",
    "enc_hidden": "phi_enc width",
    "prior_hidden": "phi_prior width",
    "dec_hidden": "phi_dec width",
    "mlp_layers": "ReLU layers per MLP",
    "components": "mixture components of the GMM emissions",
    "backward_hidden": "units of the smoothing guide's backward RNN (default: --hidden)",
    "window_components": "Gaussians of the text window (cvrnn-gmm, crnn-gmm; default 10)",
}


def add_config_flags(parser, seed=True):
    """The sizes and the training settings, in two argument groups of `parser`."""
    g = parser.add_argument_group("sizes (defaults: the dataset's preset, see pyro_vrnn/train/config.py)")
    for name, meaning in SIZES.items():
        g.add_argument("--" + name.replace("_", "-"), type=int, help=meaning)
    g.add_argument("--min-scale", type=float, help="floor added to every softplus scale")
    g.add_argument(
        "--mixture",
        choices=("shared", "independent"),
        help="real-valued GMM: shared (default: a common mean and scale plus per-component offsets) "
        "or independent (each component its own; docs/ablations.md)",
    )
    g.add_argument("--cell", choices=("lstm", "gru"), help="the recurrence f: lstm (the paper's, default) or gru")
    g.add_argument(
        "--guide",
        choices=("filtering", "smoothing"),
        help="a VRNN's q(z_t | ...): filtering (the paper's: x up to t; default) or smoothing (a backward "
        "RNN over all of x, guides/smoothing.py); the SRNN's guide is always its smoothing one",
    )
    g.add_argument(
        "--srnn-resq",
        action=argparse.BooleanOptionalAction,
        help="SRNN only: the guide's mean is the prior's mean plus a predicted residual (Fraccaro et al.'s "
        "Resq; default off: it learns worse on hershey, README)",
    )
    g.add_argument(
        "--feature-norm",
        choices=("none", "batch"),
        help="batch: batch normalization in phi_x over each batch's real steps (pyro_vrnn/nn/normalization.py; "
        "default none, as the paper; docs/ablations.md)",
    )
    g = parser.add_argument_group("training")
    g.add_argument("--batch-size", type=int, help="sequences per batch (per process under torchrun)")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--clip", type=float, help="gradient-norm clipping")
    g.add_argument("--epochs", type=int, help="passes over the training set")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    g.add_argument("--patience", type=int, help="early stopping: epochs without a better valid bound")
    g.add_argument(
        "--elbo",
        choices=ELBO_NAMES,
        help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL, as the paper); iwae: the "
        "importance-weighted bound (Burda et al. 2016); fivo: the filtering variational objective, "
        "SMC with the guide as proposal (Maddison et al. 2017); both with --particles K",
    )
    g.add_argument("--particles", type=int, help="K, particles of --elbo iwae or fivo (default 1)")
    g.add_argument("--kl-anneal-epochs", type=float, help="KL weight rises from 0 to 1 over this many epochs")
    g.add_argument(
        "--replay",
        type=int,
        help="experience replay: each step also trains on one batch drawn from the last REPLAY batches "
        "(twice the sequences a step; pyro_vrnn/train/replay.py; default 0, off; docs/ablations.md)",
    )
    g.add_argument(
        "--free-bits",
        type=float,
        help="nats of KL per time step that cost nothing in training (Kingma et al. 2016; 0: off)",
    )
    g.add_argument(
        "--scoring",
        choices=("batched", "steps"),
        help="batched (default: the model's prior and emission of all steps in one call each, models/vrnn.py, "
        "and the ELBO's z_t sites scored in one call, pyro_vrnn/infer/stacked_elbo.py) or steps (the model one "
        "step at a time, as the paper writes it, under Pyro's own Trace_ELBO / TraceMeanField_ELBO; "
        "free bits and IWAE score in one call either way)",
    )
    if seed:
        g.add_argument("--seed", type=int, help="random seed (weights, batches, samples)")
    g.add_argument("--device", help="auto (cuda if available), cpu, cuda, cuda:1")
    g.add_argument("--threads", type=int, help="CPU threads for PyTorch (0: its default)")
    g.add_argument("--checkpoint-every", type=int, help="steps between mid-epoch checkpoints")
    g.add_argument("--log-every", type=int, help="steps between training records in log.jsonl")
    return parser


def overrides(args, exclude=()):
    """The config fields that `args` sets (not None), but for `exclude`."""
    return {
        k: v for k, v in vars(args).items() if k not in exclude and v is not None and k in Config.__dataclass_fields__
    }
