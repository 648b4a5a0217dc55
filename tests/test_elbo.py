"""The Pyro programs compute the paper's ELBO: checked against a hand-written PyTorch computation.

With fixed weights and a fixed noise draw (the same RNG seed, consumed in the same order: the
guide draws z_1, ..., z_T), the Trace_ELBO loss of either form of the model (step by step, or
batched from the guide's record; and the step form also without a record) equals

    -sum_b sum_t mask_bt [ log p(x_t | z_t, h_{t-1}) + log p(z_t | h_{t-1}) - log q(z_t | x_t, h_{t-1}) ]

written below with explicit LSTM gates and explicit log-density formulas, and the
TraceMeanField_ELBO loss equals the same with the analytic Gaussian KL in place of the last two terms.
The models here are the VRNN family (config.TABLE1_MODELS); tests/test_srnn.py does the same for the SRNN.
"""

import math
import types

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from conftest import build, make_data
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from pyro.util import check_model_guide_match

from pyro_vrnn import models
from pyro_vrnn.distributions.diag_normal import DiagNormal
from pyro_vrnn.infer.objectives import FreeBitsELBO, elbo_terms
from pyro_vrnn.infer.record import Record
from pyro_vrnn.train.config import CONDITIONAL_MODELS, TABLE1_MODELS

LOG_2PI = math.log(2 * math.pi)


# ---- the hand-written ELBO --------------------------------------------------------------


def relu_linear(seq, inputs):
    linear = seq[0]
    return torch.relu(inputs @ linear.weight.T + linear.bias)


def normal_params(head, features):
    out = features @ head.linear.weight.T + head.linear.bias
    d = out.shape[-1] // 2
    return out[..., :d], F.softplus(out[..., d:]) + 1e-4


def diag_normal_log_density(x, mu, sigma):
    return (-0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI).sum(-1)


def lstm_cell(cell, inputs, h, c):
    gates = inputs @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def emission_log_density(head, kind, mixture, k, features, x):
    out = features @ head.linear.weight.T + head.linear.bias
    if kind == "binary":
        return (x * F.logsigmoid(out) + (1 - x) * F.logsigmoid(-out)).sum(-1)
    if kind == "real":
        d = x.shape[-1]
        if not mixture:
            return diag_normal_log_density(x, out[:, :d], F.softplus(out[:, d:]) + 1e-4)
        logits, loc, raw = out[:, :k], out[:, k : k + k * d].reshape(-1, k, d), out[:, k + k * d :].reshape(-1, k, d)
        if head.shared is not None:  # the shared form: a common mean and raw scale plus per-component offsets
            shared = features @ head.shared.weight.T + head.shared.bias
            loc, raw = loc + shared[:, None, :d], raw + shared[:, None, d:]
        sigma = F.softplus(raw) + 1e-4
        comp = diag_normal_log_density(x[:, None, :], loc, sigma)
        return torch.logsumexp(torch.log_softmax(logits, -1) + comp, dim=-1)
    # handwriting: Bernoulli pen bit + mixture of bivariate Gaussians (Graves 2013, eqs. 23-26)
    k = k if mixture else 1
    pen_logit, logits = out[:, 0], out[:, 1 : 1 + k]
    loc = out[:, 1 + k : 1 + 3 * k].reshape(-1, k, 2)
    sigma = F.softplus(out[:, 1 + 3 * k : 1 + 5 * k].reshape(-1, k, 2)) + 1e-4
    rho = torch.tanh(out[:, 1 + 5 * k : 1 + 6 * k]) * (1 - 1e-5)
    pen = x[:, 0]
    log_pen = pen * F.logsigmoid(pen_logit) + (1 - pen) * F.logsigmoid(-pen_logit)
    n1 = (x[:, None, 1] - loc[..., 0]) / sigma[..., 0]
    n2 = (x[:, None, 2] - loc[..., 1]) / sigma[..., 1]
    zz = n1**2 + n2**2 - 2 * rho * n1 * n2
    log_n = -zz / (2 * (1 - rho**2)) - torch.log(2 * math.pi * sigma[..., 0] * sigma[..., 1] * torch.sqrt(1 - rho**2))
    return log_pen + torch.logsumexp(torch.log_softmax(logits, -1) + log_n, dim=-1)


def hand_elbo(vrnn, spec, config, kind, x, mask, analytic_kl=False):
    """Per-sequence ELBO, written out step by step."""
    log_likelihood, kl = hand_elbo_parts(vrnn, spec, config, kind, x, mask, analytic_kl)
    return log_likelihood - kl


def backward_lstm(lstm, inputs, lengths):
    """a[b, t] = g(a[b, t+1], inputs[b, t]) for t < lengths[b], by hand: each sequence read from its own
    last step back to its first (nn.LSTM's gates, written out; padded steps left at zero)."""
    cell = types.SimpleNamespace(
        weight_ih=lstm.weight_ih_l0, weight_hh=lstm.weight_hh_l0, bias_ih=lstm.bias_ih_l0, bias_hh=lstm.bias_hh_l0
    )
    a = torch.zeros(inputs.shape[:2] + (lstm.hidden_size,))
    for b, length in enumerate(lengths.tolist()):
        h = c = torch.zeros(1, lstm.hidden_size)
        for t in reversed(range(length)):
            h, c = lstm_cell(cell, inputs[b : b + 1, t], h, c)
            a[b, t] = h[0]
    return a


def hand_elbo_parts(vrnn, spec, config, kind, x, mask, analytic_kl=False, per_step=False):
    """Per-sequence (sum_t log p(x_t | ...), sum_t KL_t or its one-sample estimate); per_step: the KL terms
    [B, T] of every step instead of their sum. With config.guide "smoothing" the encoder reads a_t of a
    backward LSTM over phi_x(x) in place of phi_x(x_t)."""
    batch, steps, _ = x.shape
    h = torch.zeros(batch, config.hidden)
    c = torch.zeros(batch, config.hidden)
    total, total_kl, kls = torch.zeros(batch), torch.zeros(batch), []
    emission_head = vrnn.decoder[1]
    if config.guide == "smoothing":
        a = backward_lstm(vrnn.backward_rnn, relu_linear(vrnn.phi_x, x), mask.sum(1))
    for t in range(steps):
        m = mask[:, t].float()
        fx = relu_linear(vrnn.phi_x, x[:, t])
        if not spec.latent:
            dec = relu_linear(vrnn.decoder[0], h)
            total = total + m * emission_log_density(
                emission_head, kind, spec.emission == "gmm", config.components, dec, x[:, t]
            )
            h, c = lstm_cell(vrnn.rnn, fx, h, c)
            continue
        features = a[:, t] if config.guide == "smoothing" else fx
        mu_q, sigma_q = normal_params(vrnn.encoder[1], relu_linear(vrnn.encoder[0], torch.cat([features, h], -1)))
        z = mu_q + sigma_q * torch.normal(torch.zeros_like(mu_q), torch.ones_like(mu_q))
        if spec.conditional_prior:
            mu_p, sigma_p = normal_params(vrnn.prior_net[1], relu_linear(vrnn.prior_net[0], h))
        else:
            mu_p, sigma_p = torch.zeros_like(z), torch.ones_like(z)
        fz = relu_linear(vrnn.phi_z, z)
        dec = relu_linear(vrnn.decoder[0], torch.cat([fz, h], -1))
        log_px = emission_log_density(emission_head, kind, spec.emission == "gmm", config.components, dec, x[:, t])
        if analytic_kl:
            kl = (torch.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5).sum(-1)
        else:
            kl = diag_normal_log_density(z, mu_q, sigma_q) - diag_normal_log_density(z, mu_p, sigma_p)
        total = total + m * log_px
        total_kl = total_kl + m * kl
        kls.append(m * kl)
        h, c = lstm_cell(vrnn.rnn, torch.cat([fx, fz], -1), h, c)
    return total, (torch.stack(kls, 1) if per_step else total_kl)


CASES = [(name, kind) for name in TABLE1_MODELS for kind in ("handwriting", "real")] + [("vrnn-gauss", "binary")]


FORMS = [("batched", True), ("steps", True), ("steps", False)]  # (scoring, with the guide's record)


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("scoring,with_record", FORMS)
def test_elbo_equals_hand_computation(name, kind, elbo_name, scoring, with_record):
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, scoring)
    spec = models.MODELS[name]
    x, mask = make_data(kind, dim=dim)
    elbo = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[elbo_name](max_plate_nesting=1)
    record = (lambda: {"record": Record()}) if with_record else dict
    pyro.set_rng_seed(123)
    loss = elbo.differentiable_loss(model, guide, vrnn, x, mask, **record())
    pyro.set_rng_seed(123)
    expected = hand_elbo(vrnn, spec, config, kind, x, mask, analytic_kl=elbo_name == "meanfield")
    assert torch.allclose(loss, -expected.sum(), rtol=1e-5, atol=1e-4), (loss, -expected.sum())

    # Minibatch scaling: the plate over sequences scales the batch's ELBO to the data size.
    pyro.set_rng_seed(123)
    scaled = elbo.differentiable_loss(model, guide, vrnn, x, mask, num_sequences=40, **record())
    assert torch.allclose(scaled, loss * 40 / x.shape[0], rtol=1e-5)


@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_gradients_match_hand_computation(scoring):
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3, scoring)
    x, mask = make_data("handwriting")
    pyro.set_rng_seed(5)
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, vrnn, x, mask, record=Record())
    grads = torch.autograd.grad(loss, list(vrnn.parameters()))
    pyro.set_rng_seed(5)
    expected = -hand_elbo(vrnn, models.MODELS["vrnn-gmm"], config, "handwriting", x, mask).sum()
    expected_grads = torch.autograd.grad(expected, list(vrnn.parameters()))
    for g, e in zip(grads, expected_grads):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("elbo_class", [Trace_ELBO, TraceMeanField_ELBO])
def test_kl_annealing_scales_only_the_kl_term(elbo_class):
    """loss(kl_scale=s) = -(sum log p(x|z) - s * KL), as poutine.scale on the z sites should give."""
    config, model, guide, vrnn = build("vrnn-gauss", "real", 4)
    x, mask = make_data("real", dim=4)
    analytic = elbo_class is TraceMeanField_ELBO
    for s in (1.0, 0.3, 0.01):  # poutine.scale needs a positive weight
        pyro.set_rng_seed(0)
        loss = elbo_class(max_plate_nesting=1).loss(model, guide, vrnn, x, mask, kl_scale=s, record=Record())
        pyro.set_rng_seed(0)
        ll, kl = hand_elbo_parts(vrnn, models.MODELS["vrnn-gauss"], config, "real", x, mask, analytic)
        assert loss == pytest.approx(-(ll.sum() - s * kl.sum()).item(), rel=1e-5)
    assert kl.sum().item() > 1.0  # the KL term is not negligible, so the check above has teeth


@pytest.mark.parametrize(
    "name", [name for name in models.MODELS if name not in CONDITIONAL_MODELS]
)  # their own: tests/test_conditional.py
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_model_and_guide_sites_match(name, scoring):
    config, model, guide, vrnn = build(name, "handwriting", 3, scoring)
    x, mask = make_data("handwriting", steps=5)
    record = Record()
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask, record=record)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask, record=record)
    check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
    latent = [
        n
        for n, s in model_trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]
    observed = [n for n, s in model_trace.nodes.items() if s["type"] == "sample" and s["is_observed"]]
    # the step form observes each x_t at its step; the batched one observes all steps as one factor
    assert observed == ([f"x_{t}" for t in range(1, 6)] if scoring == "steps" else ["x"])
    if models.MODELS[name].latent:
        assert latent == [f"z_{t}" for t in range(1, 6)]
        guide_latent = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
        assert guide_latent == latent
        for n in latent:
            assert model_trace.nodes[n]["value"].shape == (4, config.z_dim)
            assert model_trace.nodes[n]["fn"].batch_shape == (4,)
            assert model_trace.nodes[n]["fn"].event_shape == (config.z_dim,)
    else:
        assert latent == []
    for n in observed:
        assert model_trace.nodes[n]["fn"].batch_shape == (4,)
        assert model_trace.nodes[n]["fn"].event_shape == ((3,) if scoring == "steps" else (0,))


@pytest.mark.parametrize("name", ["vrnn-gmm", "rnn-gmm", "vrnn-i-gauss"])
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_padding_does_not_change_any_sequence_elbo(name, scoring):
    """Row i's ELBO in a padded batch equals the ELBO of the same batch cut at row i's length, and
    does not change when the padding is longer or filled with garbage."""
    config, model, guide, vrnn = build(name, "handwriting", 3, scoring)
    x, mask = make_data("handwriting", steps=6)
    lengths = mask.sum(1)
    junk = torch.tensor([1.0, 1e3, -1e3])  # any value in the emission's support
    garbage = torch.where(mask[..., None], x, junk)
    longer_x = torch.cat([garbage, junk.expand(4, 5, 3)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(4, 5, dtype=torch.bool)], dim=1)
    pyro.set_rng_seed(9)
    ll, kl = elbo_terms(model, guide, vrnn, x, mask)
    pyro.set_rng_seed(9)
    ll_long, kl_long = elbo_terms(model, guide, vrnn, longer_x, longer_mask)
    assert torch.allclose(ll, ll_long) and torch.allclose(kl, kl_long)
    for i, length in enumerate(lengths.tolist()):
        pyro.set_rng_seed(9)  # the first `length` steps draw the same noise
        ll_cut, kl_cut = elbo_terms(model, guide, vrnn, x[:, :length], mask[:, :length])
        assert ll_cut[i].item() == pytest.approx(ll[i].item(), rel=1e-6, abs=1e-5)
        assert kl_cut[i].item() == pytest.approx(kl[i].item(), rel=1e-6, abs=1e-5)
    # The RNN baselines are deterministic: a sequence alone equals the sequence in the batch.
    if not models.MODELS[name].latent:
        for i, length in enumerate(lengths.tolist()):
            alone, _ = elbo_terms(model, guide, vrnn, x[i : i + 1, :length], mask[i : i + 1, :length])
            assert alone.item() == pytest.approx(ll[i].item(), rel=1e-5)


def test_elbo_terms_are_the_reconstruction_at_the_draws_and_the_closed_form_kl_along_them():
    """elbo_terms: Trace_ELBO's reconstruction term, minus the KL in closed form at every step along the same
    draws, which makes TraceMeanField_ELBO's estimate of the ELBO (its loss, to float precision); that KL is
    never negative, where the sum of log q - log p at the draws (Trace_ELBO's KL) differs from it."""
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    losses = {}
    for elbo in (Trace_ELBO, TraceMeanField_ELBO):
        pyro.set_rng_seed(3)
        losses[elbo] = elbo(max_plate_nesting=1).loss(model, guide, vrnn, x, mask, record=Record())
    pyro.set_rng_seed(3)
    ll, kl = elbo_terms(model, guide, vrnn, x, mask)
    assert (ll - kl).sum().item() == pytest.approx(-losses[TraceMeanField_ELBO], rel=1e-5)
    assert (kl > 0).all()
    assert abs((ll - kl).sum().item() + losses[Trace_ELBO]) > 1.0  # not Trace_ELBO's one-sample KL


@pytest.mark.parametrize("name,kind", [("vrnn-gmm", "handwriting"), ("vrnn-i-gauss", "real"), ("vrnn-gauss", "real")])
@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_smoothing_guide_elbo_equals_hand_computation(name, kind, elbo_name, scoring):
    """guides/smoothing.py: the encoder reads a_t = g(a_{t+1}, phi_x(x_t)), a backward LSTM run from each
    sequence's own end; with padding of different lengths in the batch, the loss is the hand-written one."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, scoring, guide="smoothing")
    assert guide.__name__ == "smoothing_guide"
    x, mask = make_data(kind, dim=dim)
    elbo = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[elbo_name](max_plate_nesting=1)
    pyro.set_rng_seed(123)
    loss = elbo.differentiable_loss(model, guide, vrnn, x, mask, record=Record())
    pyro.set_rng_seed(123)
    expected = hand_elbo(vrnn, models.MODELS[name], config, kind, x, mask, analytic_kl=elbo_name == "meanfield")
    assert torch.allclose(loss, -expected.sum(), rtol=1e-5, atol=1e-4), (loss, -expected.sum())


def test_smoothing_guide_sites_match_the_model_and_ignore_padding():
    config, model, guide, vrnn = build("vrnn-gauss", "real", 4, "steps", guide="smoothing")
    x, mask = make_data("real", dim=4)
    record = Record()
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask, record=record)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask, record=record)
    check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
    for t in range(1, 7):
        assert guide_trace.nodes[f"z_{t}"]["value"].shape == (4, config.z_dim)
    # a_t reads x_t .. x_T of its own sequence only: garbage in the padding changes nothing
    junk = torch.where(mask[..., None], x, torch.tensor(1e3))
    a, a_junk = (vrnn.backward_states(vrnn.phi_x(v), mask) for v in (x, junk))
    assert torch.equal(a[mask], a_junk[mask])
    # and a sequence's a_1 depends on its last real step
    later = x.clone()
    later[0, -1] += 1.0
    assert not torch.allclose(vrnn.backward_states(vrnn.phi_x(later), mask)[0, 0], a[0, 0])


def test_free_bits_clamp_a_site_scaled_per_sequence():
    """A z_t under poutine.scale with a tensor (a weight s_b per sequence) is clamped too, each side weighed as
    its KL is: max(lambda * sum_b s_b m_t,b, sum_b s_b m_t,b KL_t,b), m the mask; a 0-dim tensor scale is a number.
    (A lone site with a tensor scale once skipped the clamp: its cost was the plain scaled KL.)"""
    loc = torch.tensor([[0.0, 0.1, 1.0, 2.0], [0.3, 0.0, 0.0, 0.0]])  # [T, B]: KL_t,b = loc^2 / 2 (unit scales)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])

    def program(means, scale):
        def run():
            with pyro.plate("sequences", 4):
                for t in pyro.markov(range(2)):
                    with poutine.mask(mask=mask[t]), poutine.scale(scale=scale):
                        pyro.sample(f"z_{t}", DiagNormal(means[t].unsqueeze(-1), torch.ones(4, 1)))

        return run

    def loss(free_bits, scale):
        model, guide = program(torch.zeros(2, 4), scale), program(loc, scale)
        return FreeBitsELBO(free_bits, max_plate_nesting=1).differentiable_loss(model, guide).item()

    kl, lam = loc.pow(2) / 2 * mask, 0.2
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    step_0 = 1 * 0.0 + 2 * 0.005 + 0.5 * 0.5 + 3 * 2.0  # above its floor, 0.2 x 6.5
    step_1 = lam * (1 + 2)  # 0.045 below its floor, over the two real sequences
    assert loss(lam, weights) == pytest.approx(step_0 + step_1, rel=1e-6)
    assert loss(0.0, weights) == pytest.approx(float((weights * kl).sum()), rel=1e-6)
    assert loss(lam, torch.tensor(0.5)) == pytest.approx(loss(lam, 0.5), rel=1e-6)
    assert loss(lam, 0.5) == pytest.approx(0.5 * (max(lam * 4, float(kl[0].sum())) + max(lam * 2, float(kl[1].sum()))))


@pytest.mark.parametrize("guide_name", ["filtering", "smoothing"])
def test_free_bits_clamp_each_steps_batch_mean_kl(guide_name):
    """FreeBitsELBO = -(sum log p(x | z) - sum_t max(lambda * n_t, sum_b KL_t,b)) with the analytic KL, n_t the
    real sequences at step t; lambda 0 is TraceMeanField_ELBO, and only steps above lambda pass gradients."""
    config, model, guide, vrnn = build("vrnn-gauss", "real", 4, guide=guide_name)
    x, mask = make_data("real", dim=4)
    spec = models.MODELS["vrnn-gauss"]
    pyro.set_rng_seed(0)
    ll, kl = hand_elbo_parts(vrnn, spec, config, "real", x, mask, analytic_kl=True, per_step=True)
    step_kl, counts = kl.sum(0), mask.sum(0)
    lam = float(step_kl.detach().div(counts).median())  # some steps below lambda, some above
    for free_bits, clamp in ((lam, True), (0.0, False)):
        pyro.set_rng_seed(0)
        loss = FreeBitsELBO(free_bits, max_plate_nesting=1).differentiable_loss(
            model, guide, vrnn, x, mask, num_sequences=10, record=Record()
        )
        kl_term = torch.maximum(step_kl, free_bits * counts).sum() if clamp else step_kl.sum()
        assert loss.item() == pytest.approx(-(ll.sum() - kl_term).item() * 10 / 4, rel=1e-5)
    pyro.set_rng_seed(0)
    plain = TraceMeanField_ELBO(max_plate_nesting=1).loss(model, guide, vrnn, x, mask, record=Record())
    assert plain == pytest.approx(-(ll.sum() - step_kl.sum()).item(), rel=1e-5)
    # a lambda above every step's KL leaves the encoder and the prior without a gradient from the KL
    pyro.set_rng_seed(0)
    huge = FreeBitsELBO(1e6, max_plate_nesting=1).differentiable_loss(model, guide, vrnn, x, mask, record=Record())
    grads = torch.autograd.grad(huge, list(vrnn.prior_net.parameters()))
    assert all((g == 0).all() for g in grads)
