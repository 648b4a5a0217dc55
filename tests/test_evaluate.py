"""The Table 1 estimators: ELBO and importance-sampled log p(x), per sequence (pyro_vrnn/infer/evaluate.py).

The reference is a VRNN whose marginal likelihood is known in closed form. With phi_x and phi_z the
identity, the prior N(0, I) (VRNN-I) and an emission linear in z_t that ignores h_{t-1},

    z_t ~ N(0, I),   x_t | z_t ~ N(A z_t + b, sigma^2 I)   =>   log p(x) = sum_t log N(x_t; b, A A^T + sigma^2 I)

and, with A's columns orthogonal, the exact posterior p(z_t | x_t) is a diagonal Gaussian that the
guide can represent, so the ELBO of any diagonal guide is known in closed form too:
ELBO = log p(x) - sum_t KL(q(z_t | x_t) || p(z_t | x_t)).
"""

import copy
import json
import math
import os
import time
import types

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn as nn
from conftest import SMALL_SIZES, build, flags, load_script, make_data, make_iam, tiny_h5
from pyro.infer import Trace_ELBO

from pyro_vrnn import data as datasets, models
from pyro_vrnn.infer.evaluate import (
    PASS_RESERVE_BYTES,
    bytes_per_cell,
    default_chunk_size,
    estimate_log_likelihood,
    evaluate_checkpoint,
    importance_log_weights,
    ratio_and_stderr,
    summarize,
)
from pyro_vrnn.infer.objectives import (
    elbo_terms,
    exact_log_likelihood,
    particle_log_weights,
    site_log_prob_sum,
    summarize_log_weights,
    traces,
)
from pyro_vrnn.infer.record import Record
from pyro_vrnn.train.checkpoints import load_checkpoint, rebuild
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.svi_step import validate

Z_DIM, X_DIM, SIGMA = 2, 3, 0.5


class LinearGaussianEmission(nn.Module):
    """Replaces vrnn.decoder: features = cat(phi_z(z_t), h_{t-1}) = cat(z_t, h) -> N(A z_t + b, sigma^2 I)."""

    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = A, b

    def forward(self, features):
        z = features[..., :Z_DIM]
        return dist.Normal(z @ self.A.T + self.b, SIGMA).to_event(1)


class GaussianPosterior(nn.Module):
    """Replaces vrnn.encoder: features = cat(phi_x(x_t), h) = cat(x_t, h) -> the exact posterior
    p(z_t | x_t), its mean shifted by `shift` and its scale multiplied by `inflate` (1, 0: exact)."""

    def __init__(self, A, b, shift=0.0, inflate=1.0):
        super().__init__()
        self.A, self.b, self.shift, self.inflate = A, b, shift, inflate

    def params(self, x):
        precision = 1 + (self.A**2).sum(0) / SIGMA**2  # A^T A is diagonal
        loc = ((x - self.b) @ self.A) / SIGMA**2 / precision
        return loc + self.shift, precision.rsqrt() * self.inflate

    def forward(self, features):
        loc, scale = self.params(features[..., :X_DIM])
        return dist.Normal(loc, scale.expand(loc.shape)).to_event(1)


def linear_gaussian(shift=0.0, inflate=1.0, batch=6, steps=5, seed=0, guide="filtering"):
    """(model, guide, vrnn, x, mask, exact log p(x) [B], exact ELBO of the guide [B]). With the smoothing
    guide, its backward RNN is replaced by one that passes x_t through (a_t = x_t), so that the same exact
    posterior applies: what is checked is the smoothing guide's program, its sites and the record."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, X_DIM, generator=g))
    A = q[:, :Z_DIM] * torch.tensor([1.5, 0.7])  # orthogonal columns
    b = torch.tensor([0.3, -0.2, 0.1])
    torch.manual_seed(seed)
    config = make_config(
        "test",
        model="vrnn-i-gauss",
        hidden=4,
        z_dim=Z_DIM,
        x_features=X_DIM,
        z_features=Z_DIM,
        enc_hidden=4,
        dec_hidden=4,
        guide=guide,
    )
    model, guide, vrnn = models.build(config, "real", X_DIM)
    vrnn.phi_x, vrnn.phi_z = nn.Identity(), nn.Identity()
    vrnn.backward_states = lambda phi_x, mask: phi_x
    vrnn.decoder = LinearGaussianEmission(A, b)
    vrnn.encoder = GaussianPosterior(A, b, shift, inflate)
    z = torch.randn(batch, steps, Z_DIM, generator=g)
    x = z @ A.T + b + SIGMA * torch.randn(batch, steps, X_DIM, generator=g)
    lengths = torch.tensor([5, 3, 4, 1, 5, 2])[:batch]
    mask = torch.arange(steps) < lengths[:, None]
    marginal = dist.MultivariateNormal(b, A @ A.T + SIGMA**2 * torch.eye(X_DIM))
    log_px = (marginal.log_prob(x) * mask).double().sum(1)
    exact_posterior = GaussianPosterior(A, b)
    q_loc, q_scale = vrnn.encoder.params(x)
    p_loc, p_scale = exact_posterior.params(x)
    kl = torch.distributions.kl_divergence(
        dist.Normal(q_loc, q_scale.expand(q_loc.shape)).to_event(1),
        dist.Normal(p_loc, p_scale.expand(p_loc.shape)).to_event(1),
    )
    elbo = log_px - (kl * mask).double().sum(1)
    return model, guide, vrnn, x, mask, log_px, elbo


def test_exact_posterior_gives_exact_log_likelihood_for_any_k():
    """With q = p(z | x), every weight equals p(x): the estimate is exact for any K, ESS = K."""
    model, guide, vrnn, x, mask, exact, exact_elbo = linear_gaussian()
    assert torch.allclose(exact, exact_elbo)
    for k in (1, 7):
        pyro.set_rng_seed(0)
        result = estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples=k)
        assert torch.allclose(result["log_px"], exact, atol=1e-4), (result["log_px"], exact)
        assert torch.allclose(result["elbo"], exact, atol=1e-4)
        assert torch.allclose(result["ess"], torch.full_like(exact, k), rtol=1e-3)


@pytest.mark.parametrize("guide_name", ["filtering", "smoothing"])
def test_estimate_converges_to_exact_log_likelihood_and_elbo_stays_below(guide_name):
    """An imperfect (shifted, overdispersed) guide: |IS - log p(x)| shrinks as K grows and stays within
    its Monte Carlo error; the K-sample ELBO converges to the closed-form ELBO, below log p(x) by the KL."""
    model, guide, vrnn, x, mask, exact, exact_elbo = linear_gaussian(shift=0.15, inflate=1.2, guide=guide_name)
    gap = exact - exact_elbo
    assert (gap > 0.2).all()  # the guide is far enough from the posterior for the test to bite
    errors = {}
    for k in (1, 10, 100, 1000, 10000):
        pyro.set_rng_seed(1)
        log_w = importance_log_weights(model, guide, vrnn, x, mask, k, chunk_size=1000)
        result = summarize_log_weights(log_w)
        error = (result["log_px"] - exact).abs()
        errors[k] = error.mean().item()
        assert (result["log_px"] >= result["elbo"]).all()
        if k >= 1000:
            # delta method: sd(log mean w) ~ sqrt(Var(w) / K) / E w, and Var(w) / (E w)^2 ~ K / ESS - 1
            stderr = ((k / result["ess"] - 1) / k).sqrt()
            assert (error < 4 * stderr + 1e-3).all(), (error, stderr)
            assert (result["elbo"] < exact).all()
            assert ((result["elbo"] - exact_elbo).abs() < 4 * log_w.std(0) / math.sqrt(k)).all()
    assert errors[1] > errors[10] > errors[100] > errors[1000] > errors[10000], errors
    assert errors[10000] < 0.02 and errors[10000] < 0.03 * gap.mean().item(), errors  # IS closes the gap


def test_one_particle_weight_is_the_checked_one_sample_elbo():
    """K=1 consumes the RNG as the training ELBO does: log w is log p(x, z) - log q(z | x) at the guide's
    draws (the traces' sites, checked by hand in test_elbo.py), and sums to Trace_ELBO's ELBO."""
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    pyro.set_rng_seed(3)
    log_w = particle_log_weights(model, guide, vrnn, x, mask, 1)
    pyro.set_rng_seed(3)
    guide_trace, model_trace = traces(model, guide, vrnn, x, mask)
    sample_elbo = site_log_prob_sum(model_trace, True) + site_log_prob_sum(model_trace, False)
    sample_elbo = sample_elbo - site_log_prob_sum(guide_trace, False)  # log p(x, z) - log q(z | x) at the draws
    assert log_w.shape == (1, 4)
    assert torch.allclose(log_w[0].float(), sample_elbo, rtol=1e-5)
    pyro.set_rng_seed(3)
    assert log_w.sum().item() == pytest.approx(
        -Trace_ELBO(max_plate_nesting=1).loss(model, guide, vrnn, x, mask, record=Record()), rel=1e-5
    )


@pytest.mark.parametrize("name,kind", [("vrnn-gmm", "handwriting"), ("vrnn-i-gauss", "real"), ("vrnn-gauss", "binary")])
def test_importance_estimate_is_never_below_the_elbo(name, kind):
    """Per sequence, log mean_k w_k >= mean_k log w_k (Jensen), and 1 <= ESS <= K."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim)
    x, mask = make_data(kind, dim=dim)
    pyro.set_rng_seed(0)
    log_w = importance_log_weights(model, guide, vrnn, x, mask, num_samples=50)
    assert log_w.shape == (50, 4) and log_w.dtype == torch.float64
    assert log_w.std(0).min() > 0.1  # the weights differ, so the inequality is strict and means something
    result = summarize_log_weights(log_w)
    assert (result["log_px"] > result["elbo"]).all()
    assert (result["ess"] >= 1 - 1e-9).all() and (result["ess"] <= 50 + 1e-9).all()
    # the formulas, written out with numpy
    w = np.exp(log_w.numpy() - log_w.numpy().max(0))
    expected_log_px = np.log(w.mean(0)) + log_w.numpy().max(0)
    np.testing.assert_allclose(result["log_px"].numpy(), expected_log_px, rtol=1e-10)
    np.testing.assert_allclose(result["ess"].numpy(), w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-10)
    np.testing.assert_allclose(result["elbo"].numpy(), log_w.numpy().mean(0), rtol=1e-10)


def recording(guide, traces):
    """The guide, with the trace of each call appended to `traces` (the particles it drew)."""

    def recorded(*args, **kwargs):
        tracer = poutine.trace(guide)
        out = tracer(*args, **kwargs)
        traces.append(tracer.trace)
        return out

    return recorded


def test_chunking_over_k_does_not_change_the_weights():
    """Draw K=10 particles in chunks of 3 (3+3+3+1) and record them; then weigh the same 10 particles in
    one vectorized pass, replaying them: every per-sequence weight, hence every estimate, is the same."""
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    traces = []
    pyro.set_rng_seed(0)
    chunked = importance_log_weights(model, recording(guide, traces), vrnn, x, mask, num_samples=10, chunk_size=3)
    assert [t.nodes["z_1"]["value"].shape[0] for t in traces] == [3, 3, 3, 1]
    replay_trace = copy.copy(traces[0])
    replay_trace.nodes = {name: dict(site) for name, site in traces[0].nodes.items()}
    for name, site in replay_trace.nodes.items():
        if site["type"] == "sample" and name.startswith("z_"):
            site["value"] = torch.cat([t.nodes[name]["value"] for t in traces], dim=0)
    # (replayed sites skip Pyro's broadcasting, so their fn keeps the batch shape that the shape check
    # would reject; the log-probs still broadcast to [K, B], which particle_log_weights checks)
    with pyro.validation_enabled(False):
        whole = importance_log_weights(
            model, poutine.replay(guide, trace=replay_trace), vrnn, x, mask, num_samples=10, chunk_size=10
        )
    assert chunked.shape == whole.shape == (10, 4)
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    for key, value in summarize_log_weights(chunked).items():
        assert torch.allclose(value, summarize_log_weights(whole)[key], rtol=1e-6, atol=1e-6)
    # and a chunk size that does not divide K still gives K particles, of the same distribution
    pyro.set_rng_seed(1)
    assert importance_log_weights(model, guide, vrnn, x, mask, num_samples=7, chunk_size=4).shape == (7, 4)


def test_speech_sized_mixture_emissions_do_not_shrink_the_particle_chunks():
    """A mixture of 20 diagonal Gaussians over 200-dimensional frames has 8,020 parameters per particle,
    sequence and step. Scored a block of steps at a time, they do not count against a pass's budget: speech
    frames get the chunks of handwriting, and K = 100 particles of 4 sequences of 800 steps fit one pass of
    4 GiB (they went 3 at a time when the emission's parameters were held for all steps). The recurrence
    still counts: Blizzard's 4000 LSTM units take five passes or more."""
    config = make_config("test", model="vrnn-gmm", hidden=256, z_dim=32, components=20)
    _, _, speech = models.build(config, "real", 200)
    _, _, handwriting = models.build(config, "handwriting", 3)
    for budget in (2**28, 2**30, 2**32):
        assert default_chunk_size(100, 4, 800, speech, budget) == default_chunk_size(100, 4, 800, handwriting, budget)
    assert default_chunk_size(100, 4, 800, speech, 2**32) == 100
    blizzard = types.SimpleNamespace(hidden=4000, z_dim=200, rnn=types.SimpleNamespace(input_size=1000))
    assert 1 <= default_chunk_size(100, 4, 800, blizzard, 2**32) <= 20  # five passes or more


def test_particle_chunks_fit_the_budget_and_split_k_evenly():
    config = make_config("test", model="vrnn-gauss", hidden=256, z_dim=32)
    _, _, vrnn = models.build(config, "handwriting", 3)
    per_particle = bytes_per_cell(vrnn) * 4 * 200
    for fits in (1, 2, 17, 60, 99, 100, 250):
        budget = PASS_RESERVE_BYTES + fits * per_particle
        chunk = default_chunk_size(100, 4, 200, vrnn, budget)
        assert chunk <= max(1, fits) and chunk == min(100, -(-100 // -(-100 // fits)))
    assert default_chunk_size(100, 4, 200, vrnn, PASS_RESERVE_BYTES + 60 * per_particle) == 50  # 50 + 50, not 60 + 40
    assert default_chunk_size(100, 4, 200, vrnn, PASS_RESERVE_BYTES // 2) == 1  # a budget too small still runs


@pytest.mark.parametrize("name", ["vrnn-gmm", "vrnn-i-gauss", "rnn-gmm"])
def test_padding_does_not_change_any_sequence_estimate(name):
    """Longer padding filled with garbage, or the batch cut at a row's own length, leaves that row's
    ELBO, log p(x) and ESS as they were (the same seed draws the same particles for the real steps)."""
    config, model, guide, vrnn = build(name, "handwriting", 3)
    latent = models.MODELS[name].latent
    x, mask = make_data("handwriting", steps=6)
    junk = torch.tensor([1.0, 1e3, -1e3])
    longer_x = torch.cat([torch.where(mask[..., None], x, junk), junk.expand(4, 5, 3)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(4, 5, dtype=torch.bool)], dim=1)
    keys = ("elbo", "log_px", "ess") if latent else ("elbo", "log_px")

    def estimate(x, mask):
        pyro.set_rng_seed(9)
        return estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples=20, chunk_size=20, latent=latent)

    base = estimate(x, mask)
    longer = estimate(longer_x, longer_mask)
    for key in keys:
        assert torch.allclose(base[key], longer[key], rtol=1e-6)
    for i, length in enumerate(mask.sum(1).tolist()):
        cut = estimate(x[:, :length], mask[:, :length])
        for key in keys:
            assert cut[key][i].item() == pytest.approx(base[key][i].item(), rel=1e-5, abs=1e-5)
    if not latent:  # exact: a sequence alone, unpadded, gives the number it has in the batch
        for i, length in enumerate(mask.sum(1).tolist()):
            alone = estimate(x[i : i + 1, :length], mask[i : i + 1, :length])
            assert alone["log_px"].item() == pytest.approx(base["log_px"][i].item(), rel=1e-5)


def test_unpadded_sequences_alone_match_the_padded_batch_exactly():
    """With the exact posterior as guide every estimate is deterministic: each sequence evaluated
    alone, unpadded, gives the number it gets in the padded batch, and both equal log p(x)."""
    model, guide, vrnn, x, mask, exact, _ = linear_gaussian()
    batch = estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples=5)
    for i, length in enumerate(mask.sum(1).tolist()):
        alone = estimate_log_likelihood(
            model, guide, vrnn, x[i : i + 1, :length], mask[i : i + 1, :length], num_samples=5
        )
        assert alone["log_px"].item() == pytest.approx(batch["log_px"][i].item(), abs=1e-4)
        assert alone["log_px"].item() == pytest.approx(exact[i].item(), abs=1e-4)


@pytest.mark.parametrize("name", ["rnn-gauss", "rnn-gmm"])
def test_rnn_baselines_are_exact(name):
    """No latent variables: log p(x) is the sum of the observed sites, reported as ELBO and log p(x)."""
    config, model, guide, vrnn = build(name, "real", 4)
    x, mask = make_data("real", dim=4)
    result = estimate_log_likelihood(model, guide, vrnn, x, mask, latent=False)
    ll, kl = elbo_terms(model, guide, vrnn, x, mask)
    assert result["ess"] is None and torch.equal(result["elbo"], result["log_px"])
    assert torch.allclose(result["log_px"].float(), ll, rtol=1e-5) and (kl == 0).all()
    assert result["log_px"].sum().item() == pytest.approx(
        -Trace_ELBO(max_plate_nesting=1).loss(model, guide, vrnn, x, mask, record=Record()), rel=1e-5
    )
    assert torch.equal(exact_log_likelihood(model, vrnn, x, mask), result["log_px"])


def test_summary_figures():
    """Means, standard errors across sequences, per-step ratios and ESS, against numbers worked by hand."""
    per_sequence = {
        "elbo": np.array([-10.0, -20.0, -30.0]),
        "log_px": np.array([-9.0, -18.0, -30.0]),
        "ess": np.array([2.0, 5.0, 8.0]),
    }
    lengths = np.array([10, 20, 30])
    s = summarize(per_sequence, lengths, exact=False, num_samples=8)
    assert s["sequences"] == 3 and s["steps"] == 60
    assert s["elbo_per_seq"] == pytest.approx(-20.0)
    assert s["elbo_per_seq_stderr"] == pytest.approx(10.0 / math.sqrt(3))  # std (ddof 1) = 10
    assert s["log_px_per_seq"] == pytest.approx(-19.0)
    assert s["elbo_per_step"] == pytest.approx(-1.0) and s["elbo_per_step_stderr"] == pytest.approx(0.0)
    assert s["log_px_per_step"] == pytest.approx(-57.0 / 60)
    assert s["ess_mean"] == pytest.approx(5.0) and s["ess_min"] == pytest.approx(2.0)
    ratio, stderr = ratio_and_stderr([1.0, 3.0], [1, 1])
    assert ratio == 2.0 and stderr == pytest.approx(1.0)  # = std / sqrt(n) for equal lengths
    single = summarize({"elbo": [-1.0], "log_px": [-1.0]}, [4], exact=True, num_samples=100)
    assert single["log_px_per_seq_stderr"] is None and single["ess_mean"] is None and single["num_samples"] is None


# ---- the command lines, on tiny models trained for a few steps on the embedded handwriting set ----

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, hershey_cache):
    """runs/vrnn (VRNN-Gauss) and then runs/rnn (RNN-Gauss, the newest), 3 steps each."""
    root = tmp_path_factory.mktemp("evaluate")
    for age, (name, model) in enumerate((("vrnn", "vrnn-gauss"), ("rnn", "rnn-gauss"))):
        run_dir = train(
            make_config(
                "hershey",
                model=model,
                max_steps=3,
                epochs=1,
                device="cpu",
                out=str(root / "runs" / name),
                **SMALL_SIZES,
            ),
            quiet=True,
        )
        os.utime(os.path.join(run_dir, "last.pt"), (time.time() + age, time.time() + age))  # rnn is newer
    return root


def test_evaluate_ll_reports_the_figures_of_a_checkpoint(tiny_runs, capsys):
    evaluate_ll = load_script("evaluate_ll")
    out = tiny_runs / "vrnn.json"
    summary = evaluate_ll.main(
        [
            "--checkpoint",
            str(tiny_runs / "runs" / "vrnn"),
            "--split",
            "valid",
            "--num-samples",
            "4",
            "--chunk-size",
            "3",
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "vrnn-gauss on hershey valid" in printed and "effective sample size" in printed
    assert "  nats of the normalized data, +- one standard error" in printed
    record = json.load(open(out))
    assert record["units"] == "nats of the normalized data"
    valid = datasets.load("hershey", verbose=False)["valid"]
    assert record["checkpoint"].endswith("last.pt")  # max_steps stopped it before any best.pt
    assert record["sequences"] == len(valid) and record["steps"] == int(valid.lengths.sum())
    assert record["exact"] is False and record["num_samples"] == 4
    per_seq = record["per_sequence"]
    assert per_seq["length"] == valid.lengths.tolist()
    assert (np.array(per_seq["log_px"]) >= np.array(per_seq["elbo"])).all()
    assert record["log_px_per_seq"] == pytest.approx(np.mean(per_seq["log_px"]))
    assert record["log_px_per_step"] == pytest.approx(np.sum(per_seq["log_px"]) / record["steps"])
    assert record["log_px_per_seq"] > record["elbo_per_seq"]
    assert 1 <= record["ess_min"] <= record["ess_mean"] <= 4
    assert -1e5 < record["elbo_per_seq"] < 0 and record["log_px_per_seq_stderr"] > 0
    assert summary["log_px_per_seq"] == record["log_px_per_seq"]


def test_evaluate_ll_takes_the_newest_run_and_rnns_are_exact(tiny_runs, capsys, monkeypatch):
    """Without --checkpoint the newest run (the RNN) is evaluated; its exact log p(x) equals the
    training loop's validation ELBO (another code path), and does not depend on the batch size."""
    monkeypatch.chdir(tiny_runs)
    summary = load_script("evaluate_ll").main(["--split", "valid", "--device", "cpu", "--batch-size", "64"])
    assert f"evaluating the newest run: {os.path.join('runs', 'rnn')}" in capsys.readouterr().out
    assert summary["model"] == "rnn-gauss" and summary["exact"] and summary["ess_mean"] is None
    assert summary["elbo_per_seq"] == summary["log_px_per_seq"]
    state = load_checkpoint(os.path.join("runs", "rnn", "last.pt"))
    config, model, guide, vrnn, _ = rebuild(state)
    valid = datasets.load("hershey", verbose=False)["valid"]
    expected = validate(model, guide, vrnn, valid, config.batch_size, torch.device("cpu"), 0, 1)
    assert summary["log_px_per_seq"] == pytest.approx(expected["elbo_per_seq"], rel=1e-5)
    small, per_seq_small = evaluate_checkpoint(os.path.join("runs", "rnn"), split="valid", batch_size=5)
    _, per_seq_large = evaluate_checkpoint(os.path.join("runs", "rnn"), split="valid", batch_size=64)
    np.testing.assert_allclose(per_seq_small["log_px"], per_seq_large["log_px"], rtol=1e-5)
    assert small["log_px_per_seq"] == pytest.approx(summary["log_px_per_seq"], rel=1e-6)


def test_the_default_split_is_test_or_valid_where_there_is_none(tiny_runs, tmp_path):
    """IAM-OnDB with its official lists has no test split (the authors trained on testset_f and reported
    on validation set 1): evaluation goes to valid there, to test elsewhere."""
    summary, _ = evaluate_checkpoint(str(tiny_runs / "runs" / "rnn"))
    assert summary["split"] == "test" and summary["sequences"] == len(datasets.load("hershey", verbose=False)["test"])
    root = str(tmp_path / "iam")
    make_iam(root, np.random.default_rng(0))
    run_dir = train(
        make_config(
            "iam",
            model="rnn-gauss",
            data_dir=root,
            max_steps=2,
            epochs=1,
            device="cpu",
            out=str(tmp_path / "run"),
            **SMALL_SIZES,
        ),
        quiet=True,
    )
    summary, _ = evaluate_checkpoint(run_dir)
    assert summary["split"] == "valid" and summary["sequences"] == 1


def test_evaluate_ll_errors_are_one_line(tmp_path, monkeypatch):
    evaluate_ll = load_script("evaluate_ll")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"^error: no runs found under runs/"):
        evaluate_ll.main([])
    with pytest.raises(SystemExit, match=r"^error: no checkpoint at nowhere.pt"):
        evaluate_ll.main(["--checkpoint", "nowhere.pt"])
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(SystemExit, match=r"^error: cannot read checkpoint"):
        evaluate_ll.main(["--checkpoint", "junk.pt"])


def test_table1_tabulates_seeds_claims_and_resumes(tmp_path, small_handwriting, capsys):
    """Three models, two seeds, 2 steps each: rows as Markdown and JSON; each claim's paired difference is
    the mean over sequences of (model A - model B), each sequence averaged over the seeds, as computed here
    from the runs' own evaluation files; run again, the table reuses them and gives the same numbers."""
    table1 = load_script("table1")
    argv = [
        "--dataset",
        "hdf5",
        "--data-dir",
        small_handwriting,
        "--models",
        "rnn-gauss",
        "vrnn-i-gauss",
        "vrnn-gauss",
        "--seeds",
        "0",
        "1",
        "--max-steps",
        "2",
        "--num-samples",
        "3",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(tmp_path / "t1"),
        *flags(SMALL_SIZES),
    ]
    rows, claims = table1.main(argv)
    printed = capsys.readouterr().out
    assert "| RNN-Gauss |" in printed and "| VRNN-I-Gauss | >= " in printed
    assert open(tmp_path / "t1" / "table1.md").read().strip() in printed
    record = json.load(open(tmp_path / "t1" / "table1.json"))
    assert list(record["models"]) == ["rnn-gauss", "vrnn-i-gauss", "vrnn-gauss"] and record["split"] == "test"
    assert rows["rnn-gauss"]["exact"] is True and len(rows["vrnn-gauss"]["seed_log_px_per_seq"]) == 2

    def log_px(model, seed):
        path = tmp_path / "t1" / model / f"seed-{seed}" / "evaluation-default-k3.json"
        return np.asarray(json.load(open(path))["per_sequence"]["log_px"])

    d = (log_px("vrnn-gauss", 0) + log_px("vrnn-gauss", 1)) / 2 - (log_px("rnn-gauss", 0) + log_px("rnn-gauss", 1)) / 2
    first = next(c for c in claims if c["claim"] == "VRNN-Gauss > RNN-Gauss")
    assert len(d) == 16 and first["diff_per_seq"] == pytest.approx(d.mean(), rel=1e-9)
    assert first["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(16), rel=1e-9)
    assert first["verdict"] == table1.verdict(d.mean(), d.std(ddof=1) / 4, ">")
    gaps = [c for c in claims if c["claim"].endswith("log p(x) >= ELBO")]
    assert len(gaps) == 2 and all(c["diff_per_seq"] > 0 for c in gaps)  # Jensen, for every sequence and seed
    assert table1.verdict(3.0, 1.0, ">") == "holds" and table1.verdict(-1.0, 1.0, ">=").startswith("tie")
    assert table1.verdict(-3.0, 1.0, ">=") == "fails"
    config = json.load(open(tmp_path / "t1" / "vrnn-gauss" / "seed-0" / "config.json"))
    assert rows["vrnn-gauss"]["free_bits"] == config["free_bits"] and record["latents"] == table1.latent_verdicts(rows)
    started = time.time()
    again, _ = table1.main(argv)  # everything is there: nothing is trained or evaluated again
    assert time.time() - started < 10 and again == rows


def test_table1_names_collapsed_latents_and_a_kl_at_the_free_bits_floor():
    """The latents' verdict on made-up rows: KL per step below 0.01 nats is a collapse; within 5% of the run's
    --free-bits (either side) is the clamp's floor, whatever its size; exact models and a KL in use get no line."""
    table1 = load_script("table1")
    assert table1.COLLAPSED_KL_PER_STEP == 0.01 and table1.FREE_BITS_TOLERANCE == 0.05

    def row(kl, free_bits=0.0, exact=False):
        return {"exact": exact, "kl_per_step": kl, "free_bits": free_bits}

    rows = {
        "rnn-gauss": row(float("nan"), exact=True),
        "vrnn-gauss": row(0.004),
        "vrnn-gmm": row(0.0101),
        "vrnn-i-gauss": row(0.0524, free_bits=0.05),
        "srnn": row(0.0476, free_bits=0.05),
        "srnn-gmm": row(0.0526, free_bits=0.05),
    }
    assert table1.latent_verdicts(rows) == [
        "VRNN-Gauss: latents collapsed (KL 0.0040 nats a step < 0.01)",
        "VRNN-I-Gauss: KL at the free-bits floor (0.0524 nats a step, --free-bits 0.05): "
        "not evidence that z carries information",
        "SRNN: KL at the free-bits floor (0.0476 nats a step, --free-bits 0.05): "
        "not evidence that z carries information",
    ]
    both = table1.latent_verdicts({"vrnn-gauss": row(0.0051, free_bits=0.005)})  # a floor below the threshold
    assert [line.split(":")[1].strip() for line in both] == [
        "latents collapsed (KL 0.0051 nats a step < 0.01)",
        "KL at the free-bits floor (0.0051 nats a step, --free-bits 0.005)",
    ]
    assert table1.latent_verdicts({"vrnn-gauss": row(1.3, free_bits=0.05)}) == []


def test_binary_data_are_reported_in_nats_of_the_data_itself(tmp_path, capsys):
    """Binary data are scored as they are (no standardization): the report says nats, not normalized ones."""
    path = tiny_h5(str(tmp_path / "bits.h5"), "binary", 4, 6)
    config = make_config(
        "hdf5",
        data_dir=path,
        model="rnn-gauss",
        max_steps=2,
        epochs=1,
        device="cpu",
        out=str(tmp_path / "run"),
        **SMALL_SIZES,
    )
    run_dir = train(config, quiet=True)
    summary = load_script("evaluate_ll").main(["--checkpoint", run_dir, "--device", "cpu"])
    assert summary["units"] == "nats"
    assert "  nats, +- one standard error" in capsys.readouterr().out
