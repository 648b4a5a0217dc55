"""The real-valued mixture emission learns (heads.EmissionHead, docs/ablations.md): its shared form
starts at the standardized data's scale with its components apart, old checkpoints keep their form,
and on data drawn from a known two-component mixture RNN-GMM scores far above RNN-Gauss on held-out
sequences at the bring-your-own preset, and above the independent form of the same mixture."""

import numpy as np
import pytest
import torch

from pyro_vrnn.data.schema import write_h5
from pyro_vrnn.infer.evaluate import evaluate_checkpoint
from pyro_vrnn.nn.heads import EmissionHead
from pyro_vrnn.train.config import config_from_dict, config_to_dict, make_config
from pyro_vrnn.train.loop import train


def test_shared_mixture_starts_at_unit_scale_with_components_apart():
    torch.manual_seed(0)
    head = EmissionHead(32, "real", 12, "gmm", 10, 1e-4)
    emission = head(torch.zeros(5, 32))
    assert torch.allclose(emission.scale, torch.ones(()), atol=1e-5)
    distances = torch.cdist(emission.loc[0], emission.loc[0])[~torch.eye(10, dtype=torch.bool)]
    assert distances.min() > 1.5  # K draws of N(0, I_12): about sqrt(24) apart, not copies of one point
    old = EmissionHead(32, "real", 12, "gmm", 10, 1e-4, mixture="independent")(torch.zeros(5, 32))
    assert torch.cdist(old.loc[0], old.loc[0]).max() < 1.5 and old.scale.max() < 0.9


def test_any_floor_starts_the_shared_mixture_above_it():
    """--min-scale 1 or more used to fail in math.log (math domain error); sigma_k starts at max(1, floor + 0.5)."""
    for floor, start in ((0.0, 1.0), (0.7, 1.2), (1.0, 1.5), (250.0, 250.5)):
        scale = EmissionHead(8, "real", 3, "gmm", 4, floor)(torch.zeros(2, 8)).scale
        assert torch.allclose(scale, torch.tensor(start), rtol=1e-5, atol=1e-5), (floor, scale)


def test_the_shared_form_is_the_same_family():
    """With the common part at zero the shared head computes what the independent one does."""
    torch.manual_seed(0)
    shared = EmissionHead(8, "real", 3, "gmm", 4, 1e-4)
    independent = EmissionHead(8, "real", 3, "gmm", 4, 1e-4, mixture="independent")
    independent.linear.load_state_dict(shared.linear.state_dict())
    with torch.no_grad():
        shared.shared.weight.zero_()
        shared.shared.bias.zero_()
    features, x = torch.randn(6, 8), torch.randn(6, 3)
    assert torch.allclose(shared(features).log_prob(x), independent(features).log_prob(x))
    with pytest.raises(ValueError, match="--mixture"):
        EmissionHead(8, "real", 3, "gmm", 4, 1e-4, mixture="tied")


def test_configs_saved_before_the_shared_form_rebuild_independent_mixtures():
    saved = config_to_dict(make_config("test", model="rnn-gmm"))
    assert config_from_dict(saved).mixture == "shared"
    del saved["mixture"]  # a checkpoint written before the field existed
    assert config_from_dict(saved).mixture == "independent"


def two_component_sequences(rng, sequences, steps, dim=12, rho=0.8, offset=0.9, sigma=0.45):
    """x_t = rho x_{t-1} + e_t with e_t from 1/2 N(+m, sigma^2 I) + 1/2 N(-m, sigma^2 I), m = offset * (1, -1, ...):
    given the past, a mixture of two components 2 * offset * sqrt(dim) / sigma = 14 sigmas apart, whose
    common mean rho x_{t-1} moves with the sequence."""
    m = offset * np.where(np.arange(dim) % 2 == 0, 1.0, -1.0)
    out = []
    for _ in range(sequences):
        signs = rng.choice([-1.0, 1.0], size=(steps, 1))
        noise = signs * m + sigma * rng.normal(size=(steps, dim))
        x = np.zeros((steps, dim))
        for t in range(steps):
            x[t] = (rho * x[t - 1] if t else 0) + noise[t]
        out.append(x)
    return out


@pytest.fixture(scope="module")
def mixture_file(tmp_path_factory):
    """A --dataset hdf5 file of the known mixture, standardized with the train statistics."""
    rng = np.random.default_rng(0)
    splits = {split: two_component_sequences(rng, n, 20) for split, n in (("train", 120), ("valid", 30), ("test", 60))}
    frames = np.concatenate(splits["train"])
    mean, std = frames.mean(0), frames.std(0)
    splits = {split: [((s - mean) / std).astype(np.float32) for s in seqs] for split, seqs in splits.items()}
    path = tmp_path_factory.mktemp("mixture") / "mixture.h5"
    write_h5(str(path), splits, kind="real", name="mixture", mean=mean, std=std, source="tests")
    return str(path)


def held_out_log_likelihood(path, tmp_path, model, **flags):
    """Exact log p(x) per test sequence of `model` trained at the preset for EPOCHS epochs."""
    config = make_config(
        "hdf5",
        model=model,
        data_dir=path,
        out=str(tmp_path / "-".join([model, *flags.values()])),
        device="cpu",
        epochs=EPOCHS,
        **flags,
    )
    summary, _ = evaluate_checkpoint(train(config, quiet=True), split="test")
    assert summary["exact"]
    return summary["log_px_per_seq"]


EPOCHS = 30  # 450 steps: about 12 s a model on one CPU thread


def test_the_mixture_beats_the_single_gaussian_on_mixture_data(mixture_file, tmp_path, monkeypatch):
    """Held-out log p(x) per sequence of 20 frames after 30 epochs, measured with seeds 0 / 1 / 2:
    RNN-Gauss -246.6 / -248.9 / -246.6, RNN-GMM -117.0 / -128.9 / -130.2, the independent form
    -147.6 / -147.5 / -147.3. On this data the independent mixture beats the single Gaussian too (both
    modes are far apart, 14 sigmas); it learns the moving common mean twice, once per component,
    each from half the frames, and stays 17 to 31 nats below the shared form."""
    monkeypatch.setenv("PYRO_VRNN_CACHE", str(tmp_path / "cache"))
    gauss = held_out_log_likelihood(mixture_file, tmp_path, "rnn-gauss")
    shared = held_out_log_likelihood(mixture_file, tmp_path, "rnn-gmm")
    independent = held_out_log_likelihood(mixture_file, tmp_path, "rnn-gmm", mixture="independent")
    assert shared > gauss + 60, (gauss, shared, independent)
    assert shared > independent + 8, (gauss, shared, independent)
