"""The estimators of log p(x) beyond the ELBO (pyro_vrnn/infer/evaluate.py, pyro_vrnn/infer/smc.py), on a VRNN whose
log p(x) a Kalman filter gives exactly: a linear-Gaussian state-space model written as a VRNN,

    h_t = z_t  (the recurrence returns its z input),   z_t | h_{t-1} ~ N(F h_{t-1}, diag(q^2))   (h_0 = 0)
    x_t | z_t ~ N(A z_t + b, diag(r^2))                (the emission ignores h)

with a Gaussian guide q(z_t | x_t, h_{t-1}) that is not the posterior: the mean of p(z_t | z_{t-1}, x_t)
shifted, its marginal scales (not its covariance) inflated. Many independent runs at once: the batch
holds copies of the same sequences, each copy with its own particles.
"""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from conftest import SMALL_SIZES, flags, load_script

from pyro_vrnn import models
from pyro_vrnn.infer.evaluate import Estimators, estimate_batch, evaluate_checkpoint
from pyro_vrnn.infer.smc import particle_filter
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.loop import train

Z, D = 2, 3
F_MATRIX = torch.tensor([[0.9, 0.2], [-0.2, 0.8]])
Q_SCALE, R_SCALE = torch.tensor([0.6, 0.4]), torch.tensor([0.5, 0.7, 0.6])
A_MATRIX = torch.tensor([[1.0, 0.0], [0.5, 1.0], [-0.8, 0.6]])
B_VECTOR = torch.tensor([0.2, -0.1, 0.3])


class LatentIsState(nn.Module):
    """In place of the GRU cell: h_t = z_t, the last Z features of cat(phi_x(x_t), phi_z(z_t))."""

    input_size = D + Z  # as the cell's, for evaluate's memory estimate

    def forward(self, inputs, h):
        return inputs[..., -Z:]


class LinearPrior(nn.Module):
    def forward(self, h):
        return dist.Normal(h @ F_MATRIX.T, Q_SCALE).to_event(1)


class LinearEmission(nn.Module):
    """features = cat(phi_z(z_t), h_{t-1}) = cat(z_t, h_{t-1}) -> N(A z_t + b, diag(r^2))."""

    def forward(self, features):
        return dist.Normal(features[..., :Z] @ A_MATRIX.T + B_VECTOR, R_SCALE).to_event(1)


class PerturbedLocalPosterior(nn.Module):
    """features = cat(x_t, h_{t-1}) -> N(mean of p(z_t | z_{t-1} = h_{t-1}, x_t) + shift, inflate * its marginal sd)."""

    def __init__(self, shift, inflate):
        super().__init__()
        precision = torch.diag(Q_SCALE**-2) + A_MATRIX.T @ torch.diag(R_SCALE**-2) @ A_MATRIX
        self.covariance = torch.linalg.inv(precision)
        self.shift, self.scale = shift, inflate * self.covariance.diagonal().sqrt()

    def forward(self, features):
        x, h = features[..., :D], features[..., D:]
        information = (h @ F_MATRIX.T) / Q_SCALE**2 + ((x - B_VECTOR) / R_SCALE**2) @ A_MATRIX
        return dist.Normal(information @ self.covariance + self.shift, self.scale).to_event(1)


def linear_gaussian_vrnn(shift=0.1, inflate=1.2):
    """(model, guide, vrnn): the state-space model above as models.build's VRNN-Gauss, networks swapped."""
    config = make_config(
        "test",
        model="vrnn-gauss",
        cell="gru",
        hidden=Z,
        z_dim=Z,
        x_features=D,
        z_features=Z,
        enc_hidden=4,
        prior_hidden=4,
        dec_hidden=4,
    )
    model, guide, vrnn = models.build(config, "real", D)
    vrnn.phi_x, vrnn.phi_z, vrnn.rnn = nn.Identity(), nn.Identity(), LatentIsState()
    vrnn.prior_net, vrnn.decoder = LinearPrior(), LinearEmission()
    vrnn.encoder = PerturbedLocalPosterior(shift, inflate)
    return model, guide, vrnn


def simulate(sequences, steps, seed):
    g = torch.Generator().manual_seed(seed)
    z, xs = torch.zeros(sequences, Z), []
    for _ in range(steps):
        z = z @ F_MATRIX.T + Q_SCALE * torch.randn(sequences, Z, generator=g)
        xs.append(z @ A_MATRIX.T + B_VECTOR + R_SCALE * torch.randn(sequences, D, generator=g))
    return torch.stack(xs, 1)


def kalman_log_likelihood(x, mask):
    """log p(x_{1:L}) [B] (float64) of each sequence up to its length, by the Kalman filter."""
    F, A, b = F_MATRIX.double(), A_MATRIX.double(), B_VECTOR.double()
    Q, R = torch.diag(Q_SCALE.double() ** 2), torch.diag(R_SCALE.double() ** 2)
    batch = x.shape[0]
    mean, cov = torch.zeros(batch, Z, dtype=torch.float64), torch.zeros(batch, Z, Z, dtype=torch.float64)
    total = torch.zeros(batch, dtype=torch.float64)
    for t in range(x.shape[1]):
        mean, cov = mean @ F.T, F @ cov @ F.T + Q  # predict z_t
        innovation_cov = A @ cov @ A.T + R
        innovation = x[:, t].double() - mean @ A.T - b
        total = total + mask[:, t] * dist.MultivariateNormal(
            torch.zeros(D, dtype=torch.float64), innovation_cov
        ).log_prob(innovation)
        gain = cov @ A.T @ torch.linalg.inv(innovation_cov)  # update with x_t
        mean = mean + (gain @ innovation[..., None])[..., 0]
        cov = cov - gain @ A @ cov
    return total


def copies(x, mask, n):
    """Each sequence n times (runs with their own particles): [n * B, T, D] and its mask."""
    return x.repeat(n, 1, 1), mask.repeat(n, 1)


def smc(vrnn, x, mask, k, **kwargs):
    with torch.no_grad():
        return particle_filter(vrnn.stepper(x, mask, "filtering"), k, **kwargs).log_evidence


def test_the_kalman_filter_agrees_with_the_joint_gaussian():
    """The test's own reference: for T = 4, x_{1:4} is one Gaussian vector with a covariance written out."""
    x = simulate(3, 4, seed=9)
    F, A = F_MATRIX.double(), A_MATRIX.double()
    Q, R = torch.diag(Q_SCALE.double() ** 2), torch.diag(R_SCALE.double() ** 2)
    # z_t = sum_{s<=t} F^{t-s} e_s: Cov(z_s, z_t) = sum_{u<=min(s,t)} F^{s-u} Q F^{t-u}^T
    power = [torch.linalg.matrix_power(F, n) for n in range(4)]
    cov = torch.zeros(4 * D, 4 * D, dtype=torch.float64)
    for s in range(4):
        for t in range(4):
            zz = sum(power[s - u] @ Q @ power[t - u].T for u in range(min(s, t) + 1))
            cov[s * D : (s + 1) * D, t * D : (t + 1) * D] = A @ zz @ A.T + (R if s == t else 0)
    joint = dist.MultivariateNormal(B_VECTOR.double().repeat(4), cov).log_prob(x.double().reshape(3, -1))
    assert torch.allclose(kalman_log_likelihood(x, torch.ones(3, 4, dtype=torch.bool)), joint, atol=1e-9)


def test_the_smc_estimate_of_p_x_is_unbiased_and_its_log_is_biased_down():
    """2 x 2,000 independent filters (K = 32, T = 10, resampling on): mean exp(log p^ - log p) is 1 within 3 standard
    errors; the mean of log p^ - log p is clearly below 0 (Jensen), so the test can tell the two apart."""
    model, guide, vrnn = linear_gaussian_vrnn()
    x, mask = simulate(2, 10, seed=1), torch.ones(2, 10, dtype=torch.bool)
    exact = kalman_log_likelihood(x, mask)
    runs = 2000
    torch.manual_seed(0)
    error = (smc(vrnn, *copies(x, mask, runs), 32) - exact.repeat(runs)).reshape(runs, 2)
    assert (error.std(0) < 0.8).all()  # light enough tails for the mean of exp(error) to mean something
    ratio = error.exp()
    mean, stderr = ratio.mean(0), ratio.std(0) / math.sqrt(runs)
    assert ((mean - 1).abs() < 3 * stderr).all(), (mean, stderr)
    assert (stderr < 0.03).all()  # tight enough to catch a bias of a few percent
    assert (error.mean(0) < -6 * error.std(0) / math.sqrt(runs)).all() and (error.mean(0) < -0.02).all()


def test_the_smc_estimate_converges_as_k_grows():
    """Mean |log p^ - log p| over 100 runs of 3 sequences (T = 12, 8, 4): it falls by more than 1.5x with each
    fourfold K from 1 to 256 (the Monte Carlo error of a log-mean shrinks as 1 / sqrt(K)), to a small one."""
    model, guide, vrnn = linear_gaussian_vrnn()
    lengths = torch.tensor([12, 8, 4])
    x, mask = simulate(3, 12, seed=2), torch.arange(12) < lengths[:, None]
    exact = kalman_log_likelihood(x, mask)
    torch.manual_seed(1)
    errors = {
        k: (smc(vrnn, *copies(x, mask, 100), k) - exact.repeat(100)).abs().mean().item() for k in (1, 4, 16, 64, 256)
    }
    values = list(errors.values())
    assert all(a > 1.5 * b for a, b in zip(values, values[1:])), errors
    assert errors[256] < 0.2 and errors[256] < 0.05 * errors[1], errors


def test_iwae_does_not_decrease_in_k_and_stays_below_log_p_x():
    """IWAE(K) = IS with K particles (evaluate.estimate_batch, iwae_particles K) averaged over 1,000 runs: each
    doubling of K raises it by more than 3 standard errors of the difference, and it stays below log p(x)."""
    model, guide, vrnn = linear_gaussian_vrnn()
    x, mask = simulate(1, 10, seed=3), torch.ones(1, 10, dtype=torch.bool)
    exact = kalman_log_likelihood(x, mask).item()
    xs, masks = copies(x, mask, 1000)
    pyro.set_rng_seed(2)
    means, stderrs = [], []
    for k in (1, 2, 4, 8, 16, 32):
        bound = estimate_batch(model, guide, vrnn, xs, masks, Estimators(("iwae",), num_samples=64, iwae_particles=k))[
            "iwae"
        ]
        means.append(bound.mean().item())
        stderrs.append(bound.std().item() / math.sqrt(len(bound)))
    for i in range(len(means) - 1):
        assert means[i + 1] - means[i] > 3 * math.hypot(stderrs[i], stderrs[i + 1]), (means, stderrs)
    assert means[-1] < exact and exact - means[0] > 0.5, (means, exact)  # a bound, and far from tight at K = 1


def test_on_long_sequences_smc_is_tighter_than_is_at_equal_k():
    """T = 150, K = 32, 16 runs of 2 sequences: IS degenerates (its ESS is ~1) and falls tens of nats below log p(x);
    the filter resamples (~60 times a sequence) and stays within a few nats of it."""
    model, guide, vrnn = linear_gaussian_vrnn()
    x, mask = simulate(2, 150, seed=4), torch.ones(2, 150, dtype=torch.bool)
    exact = kalman_log_likelihood(x, mask).repeat(16)
    xs, masks = copies(x, mask, 16)
    pyro.set_rng_seed(3)
    both = estimate_batch(
        model,
        guide,
        vrnn,
        xs,
        masks,
        Estimators(
            ("is", "smc"),
            num_samples=32,
            stepper=lambda network, x, mask: network.stepper(x, mask, "filtering"),
        ),
    )
    is_error, smc_error = both["log_px"] - exact, both["smc"] - exact
    assert smc_error.mean() > is_error.mean() + 20, (smc_error.mean(), is_error.mean())
    assert smc_error.abs().mean() < 4 and smc_error.abs().mean() < 0.1 * is_error.abs().mean()
    assert both["ess"].mean() < 2 and (both["smc_resamples"] > 10).all()


# ---- the command lines ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fivo_run(tmp_path_factory, small_handwriting):
    """A VRNN-GMM trained 2 steps with --elbo fivo --particles 3 and the smoothing guide on 96 lines."""
    root = tmp_path_factory.mktemp("estimators")
    return train(
        make_config(
            "hdf5",
            data_dir=small_handwriting,
            model="vrnn-gmm",
            elbo="fivo",
            particles=3,
            guide="smoothing",
            max_steps=2,
            epochs=1,
            device="cpu",
            out=str(root / "fivo"),
            **SMALL_SIZES,
        ),
        quiet=True,
    )


def test_evaluate_ll_reports_every_estimator_per_sequence_and_per_step(fivo_run, tmp_path, capsys):
    """--estimators elbo iwae smc is: each per sequence and per step with its standard error; IWAE with the
    IS K is the IS number itself; with its own --iwae-particles it is a separate, lower bound."""
    out = tmp_path / "ll.json"
    load_script("evaluate_ll").main(
        [
            "--checkpoint",
            fivo_run,
            "--split",
            "valid",
            "--estimators",
            "elbo",
            "iwae",
            "smc",
            "is",
            "--num-samples",
            "6",
            "--smc-particles",
            "6",
            "--device",
            "cpu",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    for label in ("ELBO (>=)", "IWAE K=6", "SMC K=6", "log p(x) IS K=6", "IWAE K=6 is the IS estimate"):
        assert label in printed, printed
    record = json.load(open(out))
    per_seq = {key: np.array(values) for key, values in record["per_sequence"].items()}
    np.testing.assert_array_equal(per_seq["iwae"], per_seq["log_px"])
    assert (per_seq["log_px"] >= per_seq["elbo"]).all() and np.isfinite(per_seq["smc"]).all()
    for key in ("elbo", "iwae", "smc", "log_px"):
        assert record[f"{key}_per_seq"] == pytest.approx(per_seq[key].mean())
        assert record[f"{key}_per_step"] == pytest.approx(per_seq[key].sum() / per_seq["length"].sum())
        assert record[f"{key}_per_seq_stderr"] > 0 and record[f"{key}_per_step_stderr"] > 0
    assert record["smc_resamples_per_seq"] == pytest.approx(per_seq["smc_resamples"].mean())
    assert record["smc_resamples_per_seq"] > 0
    summary, own = evaluate_checkpoint(fivo_run, split="valid", num_samples=6, estimators=("iwae",), iwae_particles=2)
    assert set(own) == {"iwae", "length"} and summary["iwae_particles"] == 2
    assert summary["iwae_per_seq"] < record["iwae_per_seq"]  # K' = 2 < 6: a looser bound


def test_table1_shows_the_estimators_side_by_side(small_handwriting, tmp_path, capsys):
    """--estimators smc iwae: columns in that order between the ELBO and IS; the RNN's are its exact number."""
    table1 = load_script("table1")
    rows, claims = table1.main(
        [
            "--dataset",
            "hdf5",
            "--data-dir",
            small_handwriting,
            "--models",
            "vrnn-gmm",
            "rnn-gmm",
            "--seeds",
            "0",
            "--max-steps",
            "2",
            "--epochs",
            "1",
            "--num-samples",
            "4",
            "--estimators",
            "smc",
            "iwae",
            "--iwae-particles",
            "2",
            "--out",
            str(tmp_path / "t"),
            "--quiet",
            *flags(SMALL_SIZES),
        ]
    )
    table = open(tmp_path / "t" / "table1.md").read()
    assert "| model | ELBO (>=) | SMC K=4 | IWAE K=2 | log p(x) (~) |" in table
    assert rows["vrnn-gmm"]["smc_per_seq"] > rows["vrnn-gmm"]["iwae_per_seq"] > rows["vrnn-gmm"]["elbo_per_seq"]
    assert rows["rnn-gmm"]["smc_per_seq"] == rows["rnn-gmm"]["iwae_per_seq"] == rows["rnn-gmm"]["log_px_per_seq"]
    assert (tmp_path / "t" / "vrnn-gmm" / "seed-0" / "evaluation-default-k4-iwae2-smc4.json").exists()
