"""Tests of the emission distributions (pyro_vrnn/distributions/emissions.py; Chung et al. 2015 eq. 6,
Graves 2013 eqs. 23-26): log densities against formulas written out independently here, sample
moments against analytic mixture moments, shapes under Pyro's batching, validation, stability."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vrnn.distributions.emissions import DiagNormalMixture, StrokeMixture


def random_gmm(batch=(3,), k=4, d=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch + (k,), generator=g, dtype=dtype)
    loc = 2 * torch.randn(batch + (k, d), generator=g, dtype=dtype)
    scale = 0.3 + torch.rand(batch + (k, d), generator=g, dtype=dtype)
    return logits, loc, scale


def random_stroke(batch=(3,), k=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pen_logits = torch.randn(batch, generator=g, dtype=dtype)
    logits = torch.randn(batch + (k,), generator=g, dtype=dtype)
    loc = 2 * torch.randn(batch + (k, 2), generator=g, dtype=dtype)
    scale = 0.3 + torch.rand(batch + (k, 2), generator=g, dtype=dtype)
    corr = 1.8 * torch.rand(batch + (k,), generator=g, dtype=dtype) - 0.9
    return pen_logits, logits, loc, scale, corr


def random_strokes(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    pen = torch.randint(0, 2, shape, generator=g).to(dtype)
    return torch.cat([pen.unsqueeze(-1), 2 * torch.randn(shape + (2,), generator=g, dtype=dtype)], -1)


# ---------------------------------------------------------------- log_prob against formulas


def test_diag_normal_mixture_log_prob_matches_explicit_sum():
    logits, loc, scale = random_gmm()
    x = 2 * torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    actual = DiagNormalMixture(logits, loc, scale).log_prob(x)
    expected = torch.empty(3, dtype=torch.float64)
    for b in range(3):
        weights = torch.exp(logits[b]) / torch.exp(logits[b]).sum()
        total = 0.0
        for k in range(4):
            dens = torch.exp(-((x[b] - loc[b, k]) ** 2) / (2 * scale[b, k] ** 2)) / (
                math.sqrt(2 * math.pi) * scale[b, k]
            )
            total = total + weights[k] * torch.prod(dens)
        expected[b] = torch.log(total)
    assert torch.allclose(actual, expected, rtol=1e-10, atol=1e-10)


def test_diag_normal_mixture_one_component_is_diagonal_normal():
    logits, loc, scale = random_gmm(k=1)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    actual = DiagNormalMixture(logits, loc, scale).log_prob(x)
    expected = dist.Normal(loc[..., 0, :], scale[..., 0, :]).to_event(1).log_prob(x)
    assert torch.allclose(actual, expected, rtol=1e-12, atol=1e-12)


def bivariate_normal(loc, scale, corr):
    s1, s2 = scale[..., 0], scale[..., 1]
    cov = torch.stack([torch.stack([s1**2, corr * s1 * s2], -1), torch.stack([corr * s1 * s2, s2**2], -1)], -2)
    return torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)


def test_stroke_mixture_log_prob_matches_bernoulli_plus_mvn_mixture():
    pen_logits, logits, loc, scale, corr = random_stroke()
    x = random_strokes((3,))
    actual = StrokeMixture(pen_logits, logits, loc, scale, corr).log_prob(x)
    expected = torch.empty(3, dtype=torch.float64)
    for b in range(3):
        p = 1 / (1 + torch.exp(-pen_logits[b]))
        log_pen = torch.log(p) if x[b, 0] == 1 else torch.log(1 - p)
        weights = torch.exp(logits[b]) / torch.exp(logits[b]).sum()
        total = sum(
            weights[k] * torch.exp(bivariate_normal(loc[b, k], scale[b, k], corr[b, k]).log_prob(x[b, 1:]))
            for k in range(4)
        )
        expected[b] = log_pen + torch.log(total)
    assert torch.allclose(actual, expected, rtol=1e-10, atol=1e-10)
    assert (x[:, 0] == 0).any() and (x[:, 0] == 1).any()  # both pen branches exercised


def test_stroke_mixture_one_component_is_bernoulli_times_mvn_exactly():
    pen_logits, logits, loc, scale, corr = random_stroke(batch=(6,), k=1)
    x = random_strokes((6,), seed=3)
    actual = StrokeMixture(pen_logits, logits, loc, scale, corr).log_prob(x)
    expected = dist.Bernoulli(logits=pen_logits).log_prob(x[:, 0]) + bivariate_normal(
        loc[:, 0], scale[:, 0], corr[:, 0]
    ).log_prob(x[:, 1:])
    assert torch.allclose(actual, expected, rtol=1e-12, atol=1e-12)


def test_stroke_mixture_with_zero_corr_factorizes():
    pen_logits, logits, loc, scale, corr = random_stroke(k=1)
    x = random_strokes((3,))
    actual = StrokeMixture(pen_logits, logits, loc, scale, torch.zeros_like(corr)).log_prob(x)
    expected = dist.Bernoulli(logits=pen_logits).log_prob(x[:, 0]) + dist.Normal(loc[:, 0], scale[:, 0]).to_event(
        1
    ).log_prob(x[:, 1:])
    assert torch.allclose(actual, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- sample moments

N = 200_000


def mixture_moments(logits, loc, cov):
    """Analytic mean and covariance of sum_k pi_k N(loc_k, cov_k) for one batch element."""
    w = torch.softmax(logits, -1)
    mean = (w[:, None] * loc).sum(0)
    second = (w[:, None, None] * (cov + loc[:, :, None] * loc[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None, :]


def sample_moments(x):
    mean = x.mean(0)
    centered = x - mean
    return mean, centered.T @ centered / (x.shape[0] - 1)


def test_diag_normal_mixture_sample_moments():
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 1.0, -0.5]], dtype=torch.float64)
    loc = torch.tensor([[[-2.0, 1.0], [1.0, 2.0], [3.0, -1.0]]], dtype=torch.float64)
    scale = torch.tensor([[[0.5, 1.0], [0.3, 0.2], [1.5, 0.7]]], dtype=torch.float64)
    d = DiagNormalMixture(logits, loc, scale)
    x = d.sample((N,))
    assert x.shape == (N, 1, 2)
    mean, cov = mixture_moments(logits[0], loc[0], torch.diag_embed(scale[0] ** 2))
    emp_mean, emp_cov = sample_moments(x[:, 0])
    assert torch.allclose(emp_mean, mean, atol=0.02)
    assert torch.allclose(emp_cov, cov, atol=0.05)
    assert abs(cov[0, 1]) > 0.3  # mixture covariance is not diagonal: the check has teeth
    assert torch.allclose(d.mean[0], mean, atol=1e-12)
    assert torch.allclose(d.variance[0], torch.diagonal(cov), atol=1e-12)


def test_stroke_mixture_sample_moments_and_pen_frequency():
    torch.manual_seed(1)
    pen_logits = torch.tensor([-1.2], dtype=torch.float64)
    logits = torch.tensor([[0.5, 0.0, -1.0]], dtype=torch.float64)
    loc = torch.tensor([[[-1.0, 2.0], [2.0, 0.5], [0.0, -2.0]]], dtype=torch.float64)
    scale = torch.tensor([[[0.5, 1.0], [0.8, 0.3], [1.2, 0.6]]], dtype=torch.float64)
    corr = torch.tensor([[0.7, -0.5, 0.2]], dtype=torch.float64)
    d = StrokeMixture(pen_logits, logits, loc, scale, corr)
    x = d.sample((N,))
    assert x.shape == (N, 1, 3)
    pen = x[:, 0, 0]
    assert set(pen.unique().tolist()) == {0.0, 1.0}
    assert abs(pen.mean().item() - torch.sigmoid(pen_logits).item()) < 0.005
    comp_cov = bivariate_normal(loc[0], scale[0], corr[0]).covariance_matrix
    mean, cov = mixture_moments(logits[0], loc[0], comp_cov)
    emp_mean, emp_cov = sample_moments(x[:, 0, 1:])
    assert torch.allclose(emp_mean, mean, atol=0.02)
    assert torch.allclose(emp_cov, cov, atol=0.05)
    p = torch.sigmoid(pen_logits)
    assert torch.allclose(d.mean[0], torch.cat([p, mean]), atol=1e-12)
    assert torch.allclose(d.variance[0], torch.cat([p * (1 - p), torch.diagonal(cov)]), atol=1e-12)


@pytest.mark.parametrize("rho", [-0.8, 0.0, 0.6])
def test_stroke_one_component_sampled_correlation_is_rho(rho):
    torch.manual_seed(2)
    d = StrokeMixture(
        torch.tensor(0.0), torch.zeros(1), torch.tensor([[1.0, -2.0]]), torch.tensor([[2.0, 0.5]]), torch.tensor([rho])
    )
    x = d.sample((N,)).double()
    dxdy = x[:, 1:]
    emp = torch.corrcoef(dxdy.T)[0, 1].item()
    assert abs(emp - rho) < 0.01
    assert torch.allclose(dxdy.std(0), torch.tensor([2.0, 0.5], dtype=torch.float64), rtol=0.01)


# ---------------------------------------------------------------- shapes and Pyro batching


def test_shapes_broadcast_and_leading_sample_dims():
    s, b, k, d = 4, 3, 5, 6
    logits, loc, scale = random_gmm(batch=(s, b), k=k, d=d)
    gmm = DiagNormalMixture(logits, loc[0], scale)  # loc broadcasts over the particle dim
    assert gmm.batch_shape == (s, b) and gmm.event_shape == (d,)
    x = torch.randn(b, d, dtype=torch.float64)
    assert gmm.log_prob(x).shape == (s, b)
    assert gmm.log_prob(torch.randn(7, s, b, d, dtype=torch.float64)).shape == (7, s, b)
    assert gmm.sample().shape == (s, b, d) and gmm.sample((2,)).shape == (2, s, b, d)
    # the broadcast row equals scoring the un-broadcast distribution
    single = DiagNormalMixture(logits[2], loc[0], scale[2])
    assert torch.allclose(gmm.log_prob(x)[2], single.log_prob(x), atol=1e-12)

    pen_logits, slogits, sloc, sscale, corr = random_stroke(batch=(s, b), k=k)
    stroke = StrokeMixture(pen_logits[0, 0], slogits, sloc, sscale[0], corr)
    assert stroke.batch_shape == (s, b) and stroke.event_shape == (3,)
    xs = random_strokes((b,))
    assert stroke.log_prob(xs).shape == (s, b)
    assert stroke.log_prob(random_strokes((7, s, b))).shape == (7, s, b)
    assert stroke.sample((2,)).shape == (2, s, b, 3)
    assert stroke.mean.shape == (s, b, 3) and stroke.variance.shape == (s, b, 3)


def test_expand():
    logits, loc, scale = random_gmm(batch=(3,))
    gmm = DiagNormalMixture(logits, loc, scale, validate_args=True)
    big = gmm.expand((4, 3))
    assert big.batch_shape == (4, 3) and big.event_shape == (5,) and big._validate_args
    x = torch.randn(3, 5, dtype=torch.float64)
    assert torch.allclose(big.log_prob(x), gmm.log_prob(x).expand(4, 3))
    assert big.sample((2,)).shape == (2, 4, 3, 5)
    with pytest.raises((ValueError, RuntimeError)):
        gmm.expand((4, 2))

    params = random_stroke(batch=(3,))
    stroke = StrokeMixture(*params)
    big = stroke.expand(torch.Size((4, 3)))
    xs = random_strokes((3,))
    assert big.batch_shape == (4, 3)
    assert torch.allclose(big.log_prob(xs), stroke.log_prob(xs).expand(4, 3))
    assert big.sample().shape == (4, 3, 3)


@pytest.mark.parametrize("kind", ["gmm", "stroke"])
def test_vectorized_particles_under_pyro_plate(kind):
    """Pyro's plate broadcasts the emission with expand(); a vectorized ELBO adds a particle dim.
    With no latent sites the loss must be exactly -sum log p(x)."""
    b = 5
    if kind == "gmm":
        params = random_gmm(batch=(b,), k=3, d=4)
        make = DiagNormalMixture
        x = torch.randn(b, 4, dtype=torch.float64)
    else:
        params = random_stroke(batch=(b,), k=3)
        make = StrokeMixture
        x = random_strokes((b,))

    def model():
        with pyro.plate("sequences", b):
            # a batch-less distribution broadcast by the plate via expand()
            pyro.sample("x0", make(*(p[0] for p in params)), obs=x)
            pyro.sample("x1", make(*params), obs=x)

    def guide():
        pass

    pyro.clear_param_store()
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True).loss(model, guide)
    expected = -(make(*(p[0] for p in params)).log_prob(x).sum() + make(*params).log_prob(x).sum())
    assert loss == pytest.approx(expected.item(), rel=1e-9)


# ---------------------------------------------------------------- validation


def test_invalid_parameters_raise_under_validation():
    logits, loc, scale = random_gmm()
    with pytest.raises(ValueError):
        DiagNormalMixture(logits, loc, -scale, validate_args=True)
    with pytest.raises(ValueError):
        DiagNormalMixture(logits * float("nan"), loc, scale, validate_args=True)
    DiagNormalMixture(logits, loc, -scale, validate_args=False)  # validation off is honoured

    pen_logits, slogits, sloc, sscale, corr = random_stroke()
    for bad_corr in (torch.full_like(corr, 1.5), torch.full_like(corr, 1.0), torch.full_like(corr, -1.0)):
        with pytest.raises(ValueError):
            StrokeMixture(pen_logits, slogits, sloc, sscale, bad_corr, validate_args=True)
    with pytest.raises(ValueError):
        StrokeMixture(pen_logits, slogits, sloc, -sscale, corr, validate_args=True)
    StrokeMixture(pen_logits, slogits, sloc, sscale, torch.full_like(corr, 1.5), validate_args=False)


def test_mismatched_shapes_raise():
    logits, loc, scale = random_gmm(batch=(3,), k=4, d=5)
    with pytest.raises(ValueError):
        DiagNormalMixture(logits[..., :3], loc, scale)  # K differs
    with pytest.raises(ValueError):
        DiagNormalMixture(logits, loc, scale[..., :2])  # D differs
    with pytest.raises(ValueError):
        DiagNormalMixture(logits[:2], loc, scale)  # batch does not broadcast
    with pytest.raises(ValueError):
        DiagNormalMixture(logits, loc[0, 0], scale)  # loc lacks the K dim

    pen_logits, slogits, sloc, sscale, corr = random_stroke(batch=(3,), k=4)
    with pytest.raises(ValueError):
        StrokeMixture(pen_logits, slogits, sloc, sscale, corr[..., :3])
    with pytest.raises(ValueError):
        StrokeMixture(pen_logits, slogits, torch.zeros(3, 4, 3, dtype=torch.float64), sscale, corr)
    with pytest.raises(ValueError):
        StrokeMixture(pen_logits[:2], slogits, sloc, sscale, corr)


def test_invalid_values_raise_under_validation():
    gmm = DiagNormalMixture(*random_gmm(batch=(3,), d=5), validate_args=True)
    with pytest.raises(ValueError):
        gmm.log_prob(torch.zeros(3, 4, dtype=torch.float64))  # wrong event size
    with pytest.raises(ValueError):
        gmm.log_prob(torch.zeros(2, 5, dtype=torch.float64))  # batch does not broadcast

    stroke = StrokeMixture(*random_stroke(batch=(3,)), validate_args=True)
    x = random_strokes((3,))
    stroke.log_prob(x)
    stroke.log_prob(torch.zeros(3, 3, dtype=torch.float64))  # padding rows are in the support
    bad = x.clone()
    bad[0, 0] = 0.5
    with pytest.raises(ValueError):
        stroke.log_prob(bad)  # pen must be 0 or 1
    bad = x.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError):
        stroke.log_prob(bad)
    with pytest.raises(ValueError):
        stroke.log_prob(x[:, 1:])  # (dx, dy) without the pen bit
    unchecked = StrokeMixture(*random_stroke(batch=(3,)), validate_args=False)
    unchecked.log_prob(torch.cat([torch.full((3, 1), 0.5, dtype=torch.float64), x[:, 1:]], -1))


# ---------------------------------------------------------------- numerical stability


def test_extreme_parameters_give_finite_log_prob_and_gradients():
    # float32, as in training: extreme logits, the paper's scale floor, |rho| at the network's bound
    k = 3
    logits = torch.tensor([1e3, -1e3, 0.0], requires_grad=True)
    pen_logits = torch.tensor([1e3, -1e3], requires_grad=True)
    loc = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-3.0, 2.0]], requires_grad=True)
    scale = torch.full((k, 2), 1e-4, requires_grad=True)
    rho_bound = 1 - 1e-5
    corr = torch.tensor([rho_bound, -rho_bound, 0.0], requires_grad=True)
    stroke = StrokeMixture(pen_logits, logits, loc, scale, corr, validate_args=True)
    x = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, -1.0]])  # at the mean of component 0, and far off
    lp = stroke.log_prob(x)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    for p in (logits, pen_logits, loc, scale, corr):
        assert torch.isfinite(p.grad).all()
    # the first point sits on component 0's mean with the pen certain: only the normalizer remains
    log_norm0 = -math.log(2 * math.pi) - 2 * math.log(1e-4) - 0.5 * math.log((1 - rho_bound) * (1 + rho_bound))
    assert lp[0].item() == pytest.approx(log_norm0, rel=1e-4)
    assert lp[1].item() < -1e7  # the second point is ~1e4 scales away (pen=1 with logit -1e3 too)

    g_logits = torch.tensor([[1e3, -1e3, 0.0]], requires_grad=True)
    g_loc = torch.randn(1, k, 4, requires_grad=True)
    g_scale = torch.full((1, k, 4), 1e-4, requires_grad=True)
    gmm = DiagNormalMixture(g_logits, g_loc, g_scale)
    lp = gmm.log_prob(torch.randn(6, 1, 4))
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    for p in (g_logits, g_loc, g_scale):
        assert torch.isfinite(p.grad).all()


# ---------------------------------------------------------------- temperature


def entropy(probs):
    return -(probs * probs.clamp_min(1e-300).log()).sum(-1)


def test_with_temperature():
    logits, loc, scale = random_gmm(batch=(3,))
    gmm = DiagNormalMixture(logits, loc, scale)
    x = torch.randn(3, 5, dtype=torch.float64)
    same = gmm.with_temperature(1.0)
    assert torch.equal(same.log_prob(x), gmm.log_prob(x))
    cold = gmm.with_temperature(0.05)
    assert torch.allclose(cold.scale, scale * math.sqrt(0.05))
    assert torch.allclose(cold.mixture_probs.argmax(-1), gmm.mixture_probs.argmax(-1))
    assert torch.allclose(cold.mixture_probs, torch.softmax(logits / 0.05, -1))
    assert (cold.mixture_probs.max(-1).values > gmm.mixture_probs.max(-1).values).all()
    assert (entropy(cold.mixture_probs) < 0.5 * entropy(gmm.mixture_probs)).all()

    params = random_stroke(batch=(3,))
    stroke = StrokeMixture(*params)
    xs = random_strokes((3,))
    assert torch.equal(stroke.with_temperature(1.0).log_prob(xs), stroke.log_prob(xs))
    cold = stroke.with_temperature(0.05)
    assert torch.equal(cold.pen_logits, stroke.pen_logits) and torch.equal(cold.corr, stroke.corr)
    assert torch.allclose(cold.mixture_probs, torch.softmax(params[1] / 0.05, -1))
    assert (entropy(cold.mixture_probs) < 0.5 * entropy(stroke.mixture_probs)).all()
    assert torch.allclose(cold.scale, stroke.scale * math.sqrt(0.05))
    with pytest.raises(ValueError):
        stroke.with_temperature(0.0)
