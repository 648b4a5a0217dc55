"""The run configuration: every size and setting of a run, readable in one screen.

`Config` holds the defaults; `PRESETS` overrides them per dataset (`iam` and `blizzard` are the
authors' released configurations from PAPER.md; `hershey`, the embedded default, is sized to learn
visibly in a few minutes on a laptop CPU); command-line flags override both. The resolved config is
saved in every checkpoint, so a run can always be rebuilt from its checkpoint alone.
"""
import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

from pyro_vrnn.checks import check_seed, parse_device

MODEL_NAMES = ("rnn-gauss", "rnn-gmm", "vrnn-i-gauss", "vrnn-gauss", "vrnn-gmm")
EXACT_MODELS = ("rnn-gauss", "rnn-gmm")  # no latent variables: log p(x) is exact, the ELBO equals it
ELBO_NAMES = ("trace", "meanfield", "iwae", "fivo")


@dataclass
class Config:
    # what to train
    dataset: str = "hershey"
    model: str = "vrnn-gmm"
    data_dir: Optional[str] = None
    out: Optional[str] = None  # run directory; default runs/<dataset>-<model>-<time>
    # sizes (PAPER.md: phi_x, phi_z, phi_enc, phi_prior, phi_dec are ReLU MLPs; f is an LSTM)
    hidden: int = 128  # LSTM units
    z_dim: int = 16
    x_features: int = 64  # phi_x
    z_features: int = 64  # phi_z
    enc_hidden: int = 64  # phi_enc
    prior_hidden: int = 64  # phi_prior
    dec_hidden: int = 64  # phi_dec
    mlp_layers: int = 1
    cell: str = "lstm"  # the recurrence f: "lstm" (the paper's) or "gru"
    guide: str = "filtering"  # q(z_t | ...): "filtering" (the paper's, x_{<=t}) or "smoothing" (all of x)
    backward_hidden: int = 0  # units of the smoothing guide's backward RNN over x; 0: as many as `hidden`
    components: int = 20  # mixture components of the GMM emissions
    min_scale: float = 1e-4  # sigma = softplus(.) + min_scale
    # optimisation (PAPER.md: Adam 3e-4, gradient norm clipped at 5, early stopping on validation)
    batch_size: int = 32
    lr: float = 3e-4
    clip: float = 5.0
    epochs: int = 100
    max_steps: Optional[int] = None
    patience: int = 10  # epochs without a better validation bound before stopping
    elbo: str = "trace"  # "trace": Trace_ELBO; "meanfield": TraceMeanField_ELBO (analytic KL); "iwae"; "fivo"
    particles: int = 1  # K of --elbo iwae / fivo (objectives.IWAEELBO, FIVOELBO); the ELBOs take one
    scoring: str = "batched"  # the model's form: "batched" (one network call over all steps) or "steps"
    kl_anneal_epochs: float = 0.0  # KL weight rises linearly from 0 to 1 over this many epochs
    free_bits: float = 0.0  # nats per step of KL that cost nothing (Kingma et al. 2016); 0: the plain ELBO
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU intra-op threads; 0 = PyTorch's default. Small models run best on 1
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (last.pt)
    log_every: int = 10  # steps between training log lines
    num_samples_figure: int = 6  # lines drawn in the end-of-run figure


PRESETS = {
    # Small enough to train in minutes on a 2-core CPU, large enough to write legibly.
    "hershey": dict(hidden=128, z_dim=16, x_features=64, z_features=64, enc_hidden=64,
                    prior_hidden=64, dec_hidden=64, components=10, batch_size=32, lr=3e-3,
                    epochs=4, threads=1),
    # The authors' released IAM-OnDB configuration (PAPER.md).
    "iam": dict(hidden=1200, z_dim=50, x_features=250, z_features=150, enc_hidden=150,
                prior_hidden=150, dec_hidden=250, mlp_layers=1, components=20, batch_size=20),
    # The authors' released Blizzard configuration (PAPER.md).
    "blizzard": dict(hidden=4000, z_dim=200, x_features=500, z_features=500, enc_hidden=500,
                     prior_hidden=500, dec_hidden=500, mlp_layers=4, components=20,
                     batch_size=128),
    # Embedded speech and music: sized for a CPU in tens of minutes.
    "speech-demo": dict(hidden=256, z_dim=32, x_features=128, z_features=64, enc_hidden=64,
                        prior_hidden=64, dec_hidden=128, components=10, batch_size=32, lr=1e-3,
                        epochs=20, threads=1),
    # Real recorded speech (Asterisk's voice prompts, about two hours): speech-demo's size for now.
    "prompts": dict(hidden=256, z_dim=32, x_features=128, z_features=64, enc_hidden=64,
                    prior_hidden=64, dec_hidden=128, components=10, batch_size=32, lr=1e-3,
                    epochs=20, threads=1),
    "chorales": dict(hidden=256, z_dim=32, x_features=64, z_features=64, enc_hidden=64,
                     prior_hidden=64, dec_hidden=128, batch_size=16, lr=1e-3, epochs=200,
                     patience=20, threads=1),
}
# The other speech sets take Blizzard's networks with the paper's 2000 LSTM units.
for _name in ("timit", "timit-core", "accent", "onomatopoeia", "audio"):
    PRESETS[_name] = dict(PRESETS["blizzard"], hidden=2000, batch_size=64)
PRESETS["prompts-heldout"] = dict(PRESETS["prompts"])


def make_config(dataset="hershey", **overrides):
    """Defaults, then the dataset's preset, then explicit overrides (None means 'not given')."""
    unknown = set(overrides) - {f.name for f in fields(Config)}
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    values = dict(PRESETS.get(dataset, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return check_config(Config(dataset=dataset, **values))


# The least each number may be: sizes and counts at least 1, rates and scales above 0.
AT_LEAST_ONE = ("hidden", "z_dim", "x_features", "z_features", "enc_hidden", "prior_hidden", "dec_hidden",
                "mlp_layers", "components", "batch_size", "max_steps", "patience", "checkpoint_every", "log_every",
                "particles")
POSITIVE = ("lr", "clip")
NOT_NEGATIVE = ("min_scale", "epochs", "kl_anneal_epochs", "threads", "backward_hidden", "free_bits")


def check_config(config):
    """Raise ValueError, one line naming the flag, for a setting no run can use; returns the config."""
    if config.model not in MODEL_NAMES:
        raise ValueError(f"unknown --model {config.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if config.elbo not in ELBO_NAMES:
        raise ValueError(f"unknown --elbo {config.elbo!r}; choose one of {', '.join(ELBO_NAMES)}")
    if config.cell not in ("lstm", "gru"):
        raise ValueError(f"unknown --cell {config.cell!r}; choose 'lstm' or 'gru'")
    if config.scoring not in ("batched", "steps"):
        raise ValueError(f"unknown --scoring {config.scoring!r}; choose 'batched' or 'steps'")
    if config.guide not in ("filtering", "smoothing"):
        raise ValueError(f"unknown --guide {config.guide!r}; choose 'filtering' or 'smoothing'")
    for names, test, need in ((AT_LEAST_ONE, lambda v: v >= 1, "at least 1"), (POSITIVE, lambda v: v > 0, "above 0"),
                              (NOT_NEGATIVE, lambda v: v >= 0, "0 or more")):
        for name in names:
            value = getattr(config, name)
            if value is not None and not test(value):
                raise ValueError(f"--{name.replace('_', '-')} is {value}; it must be {need}")
    check_particle_bound(config)
    # Checked here, not when training seeds numpy or moves the model (a traceback, after the data
    # is prepared): each rank of a torchrun group is seeded seed + rank.
    check_seed(config.seed, processes=int(os.environ.get("WORLD_SIZE", "1") or 1))
    parse_device(config.device)
    return config


def check_particle_bound(config):
    """--elbo iwae / fivo take K = --particles; the other objectives one sample. A particle bound has no KL weight
    (annealing or free bits would make its weights p(x, z) / q(z | x) something else) and needs latents."""
    bound = config.elbo in ("iwae", "fivo")
    if not bound and config.particles != 1:
        raise ValueError(f"--particles {config.particles} needs --elbo iwae or fivo; "
                         f"--elbo {config.elbo} takes one sample")
    if bound and config.model in EXACT_MODELS:
        raise ValueError(f"--elbo {config.elbo} needs latent variables; {config.model}'s log-likelihood is exact: "
                         "train it with --elbo trace")
    for name, value in (("kl_anneal_epochs", config.kl_anneal_epochs), ("free_bits", config.free_bits)):
        if bound and value:
            raise ValueError(f"--{name.replace('_', '-')} weighs the KL term, which --elbo {config.elbo} does not have")


def config_to_dict(config):
    return asdict(config)


def config_from_dict(values):
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in known})
