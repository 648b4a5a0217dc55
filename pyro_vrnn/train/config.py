"""The run configuration: every size and setting of a run, readable in one screen.

`Config` holds the defaults; `PRESETS` overrides them per dataset (`iam` and `blizzard` are the
authors' released configurations from docs/paper.md; `hershey`, the embedded default, is sized to learn
visibly in a few minutes on a laptop CPU), and `byo_preset` sizes `--dataset hdf5` from the user's
training split; command-line flags override all of them. The resolved config is
saved in every checkpoint, so a run can always be rebuilt from its checkpoint alone.
"""

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

from pyro_vrnn.data.byo import train_sizes
from pyro_vrnn.nn.normalization import NOT_FOR_TOKENS
from pyro_vrnn.train.byo_preset import byo_lever, byo_preset
from pyro_vrnn.train.flag_checks import check_seed, parse_device

TABLE1_MODELS = ("rnn-gauss", "rnn-gmm", "vrnn-i-gauss", "vrnn-gauss", "vrnn-gmm")  # Chung et al. 2015, Table 1
SRNN_MODELS = ("srnn", "srnn-gmm")  # Fraccaro et al. 2016 (pyro_vrnn/nn/srnn_networks.py): Gaussian or mixture emission
# conditioned on each line's text through Graves's (2013) window (models/conditional.py): VRNN-GMM and RNN-GMM
CONDITIONAL_MODELS = ("cvrnn-gmm", "crnn-gmm")
MODEL_NAMES = TABLE1_MODELS + SRNN_MODELS + CONDITIONAL_MODELS
EXACT_MODELS = ("rnn-gauss", "rnn-gmm", "crnn-gmm")  # no latent variables: log p(x) is exact, the ELBO equals it
ELBO_NAMES = ("trace", "meanfield", "iwae", "fivo")
PARTICLE_BOUNDS = ("iwae", "fivo")  # K-particle bounds, per sequence (objectives.py)


@dataclass
class Config:
    # what to train
    dataset: str = "hershey"
    model: str = "vrnn-gmm"
    data_dir: Optional[str] = None
    out: Optional[str] = None  # run directory; default runs/<dataset>-<model>-<time>
    # sizes (docs/paper.md: phi_x, phi_z, phi_enc, phi_prior, phi_dec are ReLU MLPs; f is an LSTM)
    hidden: int = 128  # LSTM units
    z_dim: int = 16
    x_features: int = 64  # phi_x
    z_features: int = 64  # phi_z
    enc_hidden: int = 64  # phi_enc
    prior_hidden: int = 64  # phi_prior
    dec_hidden: int = 64  # phi_dec
    mlp_layers: int = 1
    cell: str = "lstm"  # the recurrence f: "lstm" (the paper's) or "gru"
    guide: str = "filtering"  # q(z_t | ...): "filtering" (the paper's, x_{<=t}) or "smoothing" (all of x; the SRNN's)
    backward_hidden: int = 0  # units of the smoothing guide's backward RNN over x; 0: as many as `hidden`
    # SRNN: the guide's mean = the prior's mean + a predicted residual (Fraccaro et al.'s "Resq"); off by
    # default: it learns worse on hershey (README, "The SRNN")
    srnn_resq: bool = False
    feature_norm: str = "none"  # "batch": batch normalization in phi_x (pyro_vrnn/nn/normalization.py; ablations.md)
    components: int = 20  # mixture components of the GMM emissions
    mixture: str = "shared"  # real-valued GMM: "shared" mean and scale + per-component offsets, or "independent"
    min_scale: float = 1e-4  # sigma = softplus(.) + min_scale
    # the models conditioned on text: K of the window's Gaussians, and the characters they know (set from the
    # training texts when the run starts, kept in the checkpoint)
    window_components: int = 10
    alphabet: str = ""
    longest_text: int = 0  # characters of the longest training line: the most run/write.py lets it write
    # optimisation (docs/paper.md: Adam 3e-4, gradient norm clipped at 5, early stopping on validation)
    batch_size: int = 32
    lr: float = 3e-4
    clip: float = 5.0
    epochs: int = 100
    max_steps: Optional[int] = None
    patience: int = 10  # epochs without a better validation bound before stopping
    elbo: str = "trace"  # "trace": Trace_ELBO; "meanfield": TraceMeanField_ELBO (analytic KL); "iwae"; "fivo"
    particles: int = 1  # K of --elbo iwae / fivo (objectives.IWAEELBO, FIVOELBO); the ELBOs take one
    scoring: str = "batched"  # "batched": the model and the ELBO's z_t scored over all steps at once; "steps"
    kl_anneal_epochs: float = 0.0  # KL weight rises linearly from 0 to 1 over this many epochs
    free_bits: float = 0.0  # nats per step of KL that cost nothing (Kingma et al. 2016); 0: the plain ELBO
    replay: int = 0  # each step also trains on one of the run's last `replay` batches (train/replay.py); 0: off
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # CPU intra-op threads; 0 = PyTorch's default. Small models run best on 1
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (last.pt)
    log_every: int = 10  # steps between training log lines
    num_samples_figure: int = 6  # lines drawn in the end-of-run figure


# One preset a line or two, so that the whole table reads in one screen:
# fmt: off
PRESETS = {
    # Small enough to train in minutes on a 2-core CPU, large enough to write legibly. The plain ELBO: at these 4
    # epochs it scores 7.0 and 11.5 nats a line more log p(x) than free bits of 0.05 (seeds 1 and 0, VRNN-GMM,
    # paired on the validation lines, +- 1) and 21.7 more than annealing (docs/ablations.md), though z collapses
    # (KL 0.2-0.3 nats a line).
    "hershey": dict(hidden=128, z_dim=16, x_features=64, z_features=64, enc_hidden=64, prior_hidden=64,
                    dec_hidden=64, components=10, batch_size=32, lr=3e-3, epochs=4, threads=1),
    # The authors' released IAM-OnDB configuration (docs/paper.md).
    "iam": dict(hidden=1200, z_dim=50, x_features=250, z_features=150, enc_hidden=150, prior_hidden=150,
                dec_hidden=250, mlp_layers=1, components=20, batch_size=20),
    # The authors' released Blizzard configuration (docs/paper.md).
    "blizzard": dict(hidden=4000, z_dim=200, x_features=500, z_features=500, enc_hidden=500, prior_hidden=500,
                     dec_hidden=500, mlp_layers=4, components=20, batch_size=128),
    # Speech, sized for a CPU in tens of minutes. z carries thousands of nats a second of speech from the start,
    # but the full KL weight at first holds the emission back: annealing it adds 4 (synthetic) to 50 (recorded)
    # nats a frame to log p(x) (docs/ablations.md).
    "speech-demo": dict(hidden=256, z_dim=32, x_features=128, z_features=64, enc_hidden=64, prior_hidden=64,
                        dec_hidden=128, components=10, batch_size=32, lr=1e-3, epochs=20, threads=1,
                        kl_anneal_epochs=5),
    # Real recorded speech (Asterisk's voice prompts, about two hours): speech-demo's networks.
    "prompts": dict(hidden=256, z_dim=32, x_features=128, z_features=64, enc_hidden=64, prior_hidden=64,
                    dec_hidden=128, components=10, batch_size=32, lr=1e-3, epochs=20, threads=1,
                    kl_anneal_epochs=1),
    # Piano rolls: without help the VRNN's z collapses onto the prior (KL 0.4 nats a chorale); free bits, the
    # smoothing guide and KL annealing together make it carry ~77 nats and add ~79 to log p(x) (docs/ablations.md).
    "chorales": dict(hidden=256, z_dim=32, x_features=64, z_features=64, enc_hidden=64, prior_hidden=64,
                     dec_hidden=128, batch_size=16, lr=1e-3, epochs=200, patience=20, threads=1,
                     free_bits=0.1, guide="smoothing", kl_anneal_epochs=20),
    # The polyphonic benchmarks (data/polyphonic.py), sized for a 2-core CPU: JSB's 13.8k training steps train an
    # epoch in seconds. The KL weight is annealed (the ELBO at the end is the plain one, as the literature reports)
    # over 27 epochs, about 400 updates: against 10 (150 updates) z carries more (KL 1.8 nats a step against 1.1-1.3)
    # and log p(x) gains 0.28 +- 0.03 and 0.40 +- 0.04 nats a step (two seeds, paired on the test chorales).
    # Adam at 3e-3: it reaches a given validation ELBO in about a third of the epochs of 1e-3 (docs/benchmarks.md).
    "jsb": dict(hidden=128, z_dim=16, x_features=64, z_features=64, enc_hidden=64, prior_hidden=64,
                dec_hidden=64, batch_size=16, lr=3e-3, epochs=120, patience=20, threads=1, kl_anneal_epochs=27),
    # Token data (kind "tokens"): a char-RNN of 256 LSTM units on the plays' 100-character pieces, a smaller one
    # on the ~20k moves of the ECO openings; sized for tens of minutes on a CPU (docs/results.md).
    "shakespeare": dict(hidden=256, z_dim=32, x_features=64, z_features=64, enc_hidden=128, prior_hidden=128,
                        dec_hidden=256, batch_size=64, lr=2e-3, epochs=10, patience=2, threads=1),
    "chess": dict(hidden=128, z_dim=16, x_features=64, z_features=32, enc_hidden=64, prior_hidden=64,
                  dec_hidden=128, batch_size=32, lr=2e-3, epochs=40, patience=5, threads=1),
}
# fmt: on
# The other polyphonic sets take JSB's networks; their sequences are 10 times as many steps. Nottingham's annealing
# over 3 epochs (132 updates) keeps z in use (KL 0.6-0.9 nats a step); over 9 (about 400 updates) it scored 0.06 +-
# 0.01 nats a step lower, paired on the test tunes, within the 30 epochs, which end while the model still improves.
for _name in ("nottingham", "musedata", "piano-midi"):
    PRESETS[_name] = dict(PRESETS["jsb"], epochs=30, patience=5, kl_anneal_epochs=3)
# MuseData's pieces are long too (470 steps on average): annealed over 3 epochs (99 updates) z collapsed (KL 0.0013
# nats a step); over 10, a third of the budget as Piano-midi.de's 20 of 60, it carries 0.73 (docs/benchmarks.md).
PRESETS["musedata"].update(kl_anneal_epochs=10)
# Piano-midi.de has 87 pieces, 6 batches of 16: 30 epochs were 180 updates, after which the RNN scored 10.91 nats a
# step on test. Batches of 4 for 60 epochs (1,320 updates, Nottingham's count) gave 8.56 (docs/benchmarks.md). Its
# pieces are long (870 steps on average): with the KL weight annealed over 3 epochs (66 updates) the VRNN's z
# collapsed (KL 0.002 nats a step); over 20 (440 updates) z carries 0.74 a step and the VRNN gains 0.25 +- 0.05
# nats a step of log p(x), paired on the test pieces (docs/benchmarks.md).
PRESETS["piano-midi"].update(batch_size=4, epochs=60, patience=20, kl_anneal_epochs=20)
# The other speech sets take Blizzard's networks with the paper's 2000 LSTM units.
for _name in ("timit", "timit-core", "accent", "onomatopoeia", "audio"):
    PRESETS[_name] = dict(PRESETS["blizzard"], hidden=2000, batch_size=64)
PRESETS["prompts-heldout"] = dict(PRESETS["prompts"])


def make_config(dataset="hershey", **overrides):
    """Defaults, then the dataset's preset, then explicit overrides (None means 'not given').

    `--dataset hdf5` takes `byo_preset` of the file's train split, whose size is read from the
    shapes of its arrays (no values: the file is validated and read when the data loads). A file
    that cannot be read so gets the defaults, and loading it then says what is wrong."""
    unknown = set(overrides) - {f.name for f in fields(Config)}
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    values = dict(PRESETS.get(dataset, {}))
    sizes = train_sizes(overrides["data_dir"]) if dataset == "hdf5" and overrides.get("data_dir") else None
    if sizes is not None:
        values.update(byo_preset(*sizes[:3]))
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    model = values.get("model", Config.model)
    if sizes is not None and model not in EXACT_MODELS:  # the lever of the model and batches that train, unless given
        lever = byo_lever(sizes[0], sizes[3], model, values.get("batch_size", Config.batch_size))
        values.update({k: v for k, v in lever.items() if k not in given})
    if values.get("elbo") in PARTICLE_BOUNDS:  # a preset's KL levers serve the ELBO; these bounds have no KL term
        for lever in ("kl_anneal_epochs", "free_bits"):
            if lever not in given:
                values.pop(lever, None)
    if values.get("model") in SRNN_MODELS:  # the SRNN's guide is a smoothing one by design (guides/srnn_smoothing.py)
        values.setdefault("guide", "smoothing")
    return check_config(Config(dataset=dataset, **values))


# The sizes of a network (their flags): checked below, and named when a network does not fit in memory.
NETWORK_SIZES = (
    "hidden",
    "z_dim",
    "x_features",
    "z_features",
    "enc_hidden",
    "prior_hidden",
    "dec_hidden",
    "mlp_layers",
    "components",
)
# The least each number may be: sizes and counts at least 1, rates and scales above 0.
AT_LEAST_ONE = NETWORK_SIZES + (
    "epochs",  # 0: a run with nothing to do, a directory with nothing to resume
    "batch_size",
    "max_steps",
    "patience",
    "checkpoint_every",
    "log_every",
    "particles",
)
POSITIVE = ("lr", "clip")
NOT_NEGATIVE = ("min_scale", "kl_anneal_epochs", "threads", "backward_hidden", "free_bits", "replay")
MAX_LR = 1e6  # Adam moves every weight by about --lr a step; far larger steps overflow float32 inside Adam
MAX_THREADS_PER_CPU = 8  # far more threads than CPUs only wait; 100000 fail to start (a segfault)
FINITE = ("lr", "min_scale", "free_bits", "kl_anneal_epochs")  # --clip inf is allowed: no clipping


def check_config(config):
    """Raise ValueError, one line naming the flag, for a setting no run can use; returns the config."""
    if config.model not in MODEL_NAMES:
        raise ValueError(f"unknown --model {config.model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if config.elbo not in ELBO_NAMES:
        raise ValueError(f"unknown --elbo {config.elbo!r}; choose one of {', '.join(ELBO_NAMES)}")
    if config.cell not in ("lstm", "gru"):
        raise ValueError(f"unknown --cell {config.cell!r}; choose 'lstm' or 'gru'")
    if config.mixture not in ("shared", "independent"):
        raise ValueError(f"unknown --mixture {config.mixture!r}; choose 'shared' or 'independent'")
    if config.scoring not in ("batched", "steps"):
        raise ValueError(f"unknown --scoring {config.scoring!r}; choose 'batched' or 'steps'")
    if config.guide not in ("filtering", "smoothing"):
        raise ValueError(f"unknown --guide {config.guide!r}; choose 'filtering' or 'smoothing'")
    if config.model in SRNN_MODELS and config.guide != "smoothing":
        raise ValueError(
            f"--guide {config.guide} does not apply to --model {config.model}: its guide is the "
            "smoothing one of Fraccaro et al. 2016 (guides/srnn_smoothing.py); drop --guide"
        )
    for names, test, need in (
        (AT_LEAST_ONE, lambda v: v >= 1, "at least 1"),
        (POSITIVE, lambda v: v > 0, "above 0"),
        (NOT_NEGATIVE, lambda v: v >= 0, "0 or more"),
        (FINITE, math.isfinite, "a finite number"),
    ):
        for name in names:
            value = getattr(config, name)
            if value is not None and not test(value):
                raise ValueError(f"--{name.replace('_', '-')} is {value}; it must be {need}")
    if config.lr > MAX_LR:
        raise ValueError(
            f"--lr is {config.lr:g}; it must be at most {MAX_LR:g}: Adam moves every weight by about --lr a step "
            "(a usual value is 1e-3)"
        )
    cpus = os.cpu_count() or 1
    if config.threads > MAX_THREADS_PER_CPU * cpus:
        raise ValueError(
            f"--threads is {config.threads}; this machine has {cpus} CPU(s): give at most {cpus} (0: PyTorch's default)"
        )
    check_particle_bound(config)
    check_feature_norm(config)
    if config.model in CONDITIONAL_MODELS:
        if config.window_components < 1:
            raise ValueError(f"--window-components is {config.window_components}; it must be at least 1")
        if config.elbo == "fivo":
            raise ValueError(f"--elbo fivo needs a particle filter, which --model {config.model} has not; use iwae")
        if config.guide != "filtering":
            raise ValueError(
                f"--guide {config.guide} does not apply to --model {config.model}: its guide is the filtering one "
                "(guides/text_filtering.py)"
            )
    # Checked here, not when training seeds numpy or moves the model (a traceback, after the data
    # is prepared): each rank of a torchrun group is seeded seed + rank.
    check_seed(config.seed, processes=int(os.environ.get("WORLD_SIZE", "1") or 1))
    parse_device(config.device)
    return config


def check_feature_norm(config):
    """--feature-norm batch normalizes phi_x over a batch's real steps in one call: the VRNN family's batched form."""
    if config.feature_norm not in ("none", "batch"):
        raise ValueError(f"unknown --feature-norm {config.feature_norm!r}; choose 'none' or 'batch'")
    if config.feature_norm == "none":
        return
    if config.model not in TABLE1_MODELS:
        raise ValueError(f"--feature-norm batch is built for the Table 1 models, not --model {config.model}")
    if config.dataset in ("chess", "shakespeare"):
        raise ValueError(NOT_FOR_TOKENS)
    if config.scoring != "batched":
        raise ValueError(
            "--feature-norm batch takes its statistics over all steps of a batch at once: use --scoring batched"
        )


def check_feature_norm_data(config, kind, lengths, smallest_batch):
    """--feature-norm batch on the training data: phi_x over real-valued or binary steps, and every batch with at
    least two real steps to take statistics over (the `smallest_batch` shortest sequences have at least two)."""
    if config.feature_norm == "none":
        return
    if kind == "tokens":
        raise ValueError(NOT_FOR_TOKENS)
    if sum(sorted(int(n) for n in lengths)[:smallest_batch]) < 2:
        raise ValueError(
            "--feature-norm batch needs at least two real steps in every batch, and a batch of the shortest "
            "training sequences has one: raise --batch-size or leave --feature-norm out"
        )


def check_particle_bound(config):
    """--elbo iwae / fivo take K = --particles; the other objectives one sample. A particle bound has no KL weight
    (annealing or free bits would make its weights p(x, z) / q(z | x) something else) and needs latents."""
    bound = config.elbo in PARTICLE_BOUNDS
    if not bound and config.particles != 1:
        raise ValueError(
            f"--particles {config.particles} needs --elbo iwae or fivo; --elbo {config.elbo} takes one sample"
        )
    if bound and config.model in EXACT_MODELS:
        raise ValueError(
            f"--elbo {config.elbo} needs latent variables; {config.model}'s log-likelihood is exact: "
            "train it with --elbo trace"
        )
    for name, value in (("kl_anneal_epochs", config.kl_anneal_epochs), ("free_bits", config.free_bits)):
        if bound and value:
            raise ValueError(f"--{name.replace('_', '-')} weighs the KL term, which --elbo {config.elbo} does not have")


def config_to_dict(config):
    return asdict(config)


def config_from_dict(values):
    known = {f.name for f in fields(Config)}
    # A config saved before the mixture had two forms was trained with independent components.
    values = {"mixture": "independent", **values}
    return Config(**{k: v for k, v in values.items() if k in known})


def unused_flags(config, passed, kind=None):
    """A note for each flag in `passed` (the fields set on the command line) that config.model, or its data of `kind`
    (where known), has no use for. Notes, not errors: table1.py passes one set of flags to every model it trains."""
    if kind == "binary":  # Bernoulli bits, whatever the model's name says (heads.EmissionHead)
        notes = [
            f"note: --{name} does not apply to binary data, whose emission is Bernoulli whatever the model; it is "
            "ignored"
            for name in ("components", "mixture")
            if name in passed
        ]
        return notes + unused_flags(config, set(passed) - {"components", "mixture"})
    why = {}
    if config.model in EXACT_MODELS:
        latent = ("guide", "backward_hidden", "z_dim", "z_features", "enc_hidden", "prior_hidden")
        why.update({name: "has no latent variables" for name in latent + ("free_bits", "kl_anneal_epochs")})
    if config.model == "vrnn-i-gauss":
        why["prior_hidden"] = "has the fixed prior N(0, I)"
    if config.model not in SRNN_MODELS:
        why["srnn_resq"] = "is not an SRNN"
        if config.model not in EXACT_MODELS and config.guide == "filtering":
            why["backward_hidden"] = "has the filtering guide here (--guide smoothing has the backward RNN)"
    if config.model not in CONDITIONAL_MODELS:
        why["window_components"] = "reads no text"
    if not config.model.endswith("gmm"):
        why["components"] = why["mixture"] = "has a single-Gaussian emission"
    return [
        f"note: --{name.replace('_', '-')} does not apply to {config.model}, which {reason}; it is ignored"
        for name, reason in why.items()
        if name in passed
    ]
