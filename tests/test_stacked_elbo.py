"""StackedTrace_ELBO is Trace_ELBO, its z_t sites scored in one call (pyro_vrnn/infer/stacked_elbo.py).

The same loss and gradients as Pyro's Trace_ELBO, on every latent model, with padding, a KL weight and the
plate's scale, with vectorized particles, and on a hand-written model whose sites are not all stackable. And
the stacking must actually happen: the z_t sites' log-densities are counted, so that a change which
silently sent every site back through its own log_prob would fail here. FreeBitsELBO and IWAEELBO, which
score the same traces, are compared with the same quantities computed site by site from Pyro's traces.
"""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from conftest import build, make_data
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormalMessenger
from pyro.infer.importance import vectorized_importance_weights
from pyro.poutine.util import prune_subsample_sites

from pyro_vrnn.distributions.diag_normal import DiagNormal
from pyro_vrnn.infer import objectives
from pyro_vrnn.infer.objectives import IWAEELBO, FreeBitsELBO
from pyro_vrnn.infer.record import Record
from pyro_vrnn.infer.stacked_elbo import StackedTrace_ELBO
from pyro_vrnn.train.svi_step import make_elbo

LATENT = ["vrnn-gauss", "vrnn-gmm", "vrnn-i-gauss", "srnn-gmm"]


def loss_and_grads(elbo, model, guide, params, *args, validate=False, **kwargs):
    """The loss and its gradients, from seed 3, with Pyro's validation (its checks of the traces) on or off."""
    pyro.set_rng_seed(3)
    with pyro.validation_enabled(validate):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
    return loss, torch.autograd.grad(loss, params)


def per_site_traces(model, guide, *args, **kwargs):
    """Pyro's traces (the guide, the model replayed on it), every site scored on its own by Trace.compute_log_prob."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return guide_trace, model_trace


def assert_same(ours, pyros, atol=1e-6):
    """Two (loss, gradients) from loss_and_grads equal to float precision."""
    (loss, grads), (pyro_loss, pyro_grads) = ours, pyros
    assert loss.item() == pytest.approx(pyro_loss.item(), rel=1e-6)
    for a, b in zip(grads, pyro_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("scoring", ["batched", "steps"])
@pytest.mark.parametrize("name", LATENT)
def test_same_loss_and_gradients_as_trace_elbo(name, scoring):
    """With validation off (training's steps) and on (Pyro's checks of the traces: the same loss)."""
    config, model, guide, vrnn = build(name, "handwriting", 3, scoring=scoring)
    x, mask = make_data("handwriting", steps=7)  # lengths 7, 5, 1, 6: padding at most steps
    params = list(vrnn.parameters())
    kwargs = dict(num_sequences=40, kl_scale=0.3)
    pyros = loss_and_grads(
        Trace_ELBO(max_plate_nesting=1), model, guide, params, vrnn, x, mask, record=Record(), **kwargs
    )
    for validate in (False, True):
        elbo = StackedTrace_ELBO(max_plate_nesting=1)
        ours = loss_and_grads(elbo, model, guide, params, vrnn, x, mask, validate=validate, record=Record(), **kwargs)
        assert_same(ours, pyros)


def count_diag_normal_scores(monkeypatch):
    calls = []
    log_prob = DiagNormal.log_prob
    monkeypatch.setattr(DiagNormal, "log_prob", lambda self, value: calls.append(value.shape) or log_prob(self, value))
    return calls


def test_the_z_sites_are_scored_in_one_call_per_program(monkeypatch):
    """VRNN-GMM (a mixture emission, no DiagNormal of its own): two DiagNormal scores, the guide's and the model's,
    each over all T steps at once; Trace_ELBO makes 2T. make_elbo gives StackedTrace_ELBO for --scoring batched."""
    _, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting", steps=7)
    calls = count_diag_normal_scores(monkeypatch)
    elbo = make_elbo("trace", scoring="batched")
    assert type(elbo) is StackedTrace_ELBO and type(make_elbo("trace", scoring="steps")) is Trace_ELBO
    loss_and_grads(elbo, model, guide, list(vrnn.parameters()), vrnn, x, mask, record=Record())
    assert calls == [torch.Size([7, 4, 3])] * 2  # [T, B, z]
    calls.clear()
    loss_and_grads(
        Trace_ELBO(max_plate_nesting=1), model, guide, list(vrnn.parameters()), vrnn, x, mask, record=Record()
    )
    assert len(calls) == 2 * 7


def hand_model(loc, steps, reparameterized=True):
    with pyro.plate("rows", 3, subsample=torch.arange(2)):
        for t in range(steps):
            with poutine.mask(mask=torch.tensor([True, t < 2]) if t != 3 else False), poutine.scale(scale=0.5 + t):
                pyro.sample(f"z_{t}", DiagNormal(loc * t, torch.ones(2, 4)))
            # observed, without the particle dim that vectorized particles give its distribution
            pyro.sample(f"x_{t}", DiagNormal(loc * 0.1 * t, torch.ones(2, 4)), obs=torch.ones(2, 4))
        pyro.sample("r", DiagNormal(loc, torch.ones(2, 4)))
        pyro.sample("w", dist.Normal(loc, 2.0).to_event(1))  # not a DiagNormal: scored by Pyro, alone
        pyro.sample("odd", DiagNormal(loc[:, :3], torch.ones(2, 3)))  # the only one of its shape: alone


def hand_guide(loc, steps, reparameterized=True):
    with pyro.plate("rows", 3, subsample=torch.arange(2)):
        for t in range(steps):
            with poutine.mask(mask=torch.tensor([True, t < 2]) if t != 3 else False), poutine.scale(scale=0.5 + t):
                pyro.sample(f"z_{t}", DiagNormal(loc + t, torch.full((2, 4), 0.5 + t)))
        # with reparameterized=False, a site whose gradient needs a score-function term
        pyro.sample("r", DiagNormal(loc * 0.5, torch.ones(2, 4)).has_rsample_(reparameterized))
        pyro.sample("w", dist.Normal(loc, 1.0).to_event(1))
        pyro.sample("odd", DiagNormal(loc[:, :3] * 2, torch.ones(2, 3)))


@pytest.mark.parametrize("particles", [1, 3])
def test_a_hand_written_model_with_sites_of_every_kind(particles):
    """Masks (tensors, and False at one step), per-site scales and a plate's subsample scale; a Normal.to_event site
    and a DiagNormal of a shape of its own, each scored alone; and vectorized particles (an extra batch dim on every
    site)."""
    loc = torch.randn(2, 4, requires_grad=True)
    kwargs = dict(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    ours, (ours_grad,) = loss_and_grads(StackedTrace_ELBO(**kwargs), hand_model, hand_guide, [loc], loc, 5)
    pyros, (pyro_grad,) = loss_and_grads(Trace_ELBO(**kwargs), hand_model, hand_guide, [loc], loc, 5)
    assert ours.item() == pytest.approx(pyros.item(), rel=1e-6)
    torch.testing.assert_close(ours_grad, pyro_grad)


def test_a_site_drawn_without_reparameterization_names_the_flag_that_trains_it():
    """Its gradient needs a score-function term, which Trace_ELBO (--scoring steps) has and the stacked ELBOs do not."""
    loc = torch.randn(2, 4, requires_grad=True)
    for elbo in (StackedTrace_ELBO(), FreeBitsELBO(0.0)):
        with pytest.raises(ValueError, match="'r' of the guide .* --scoring steps"):
            elbo.differentiable_loss(hand_model, hand_guide, loc, 5, reparameterized=False)


@pytest.mark.parametrize("name", ["vrnn-gauss", "srnn-gmm"])
def test_free_bits_stacked_is_free_bits_per_site(name):
    """FreeBitsELBO with its KL of all steps in one call = the sum, site by site on Pyro's traces, of the observed
    log-densities less max(lambda * n_t, sum_b KL_t,b) at each step t (n_t its real sequences), times the scale."""
    _, model, guide, vrnn = build(name, "handwriting", 3)
    x, mask = make_data("handwriting", steps=7)
    params = list(vrnn.parameters())
    stacked = loss_and_grads(FreeBitsELBO(0.2), model, guide, params, vrnn, x, mask, num_sequences=9, record=Record())
    pyro.set_rng_seed(3)
    guide_trace, model_trace = per_site_traces(model, guide, vrnn, x, mask, num_sequences=9, record=Record())
    elbo = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            elbo = elbo + site["log_prob_sum"]
            continue
        q = guide_trace.nodes[name]
        kl = torch.distributions.kl_divergence(q["fn"], site["fn"])
        real = q["mask"].expand_as(kl) if isinstance(q["mask"], torch.Tensor) else torch.ones_like(kl, dtype=torch.bool)
        elbo = elbo - q["scale"] * torch.clamp(kl[real].sum(), min=0.2 * real.sum())
    assert_same(stacked, (-elbo, torch.autograd.grad(-elbo, params)))


def test_meanfield_is_trace_mean_field_elbo_and_free_bits_count_one_kl_call(monkeypatch):
    """--elbo meanfield trains FreeBitsELBO with lambda 0 (--scoring batched) or Pyro's TraceMeanField_ELBO (steps):
    the same loss and gradients, with one KL call for all steps (TraceMeanField_ELBO makes one a step)."""
    _, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting", steps=7)
    params = list(vrnn.parameters())
    batched, steps = make_elbo("meanfield", scoring="batched"), make_elbo("meanfield", scoring="steps")
    assert type(batched) is FreeBitsELBO and batched.free_bits == 0 and type(steps) is TraceMeanField_ELBO
    calls = []
    kl = objectives.kl_divergence
    monkeypatch.setattr(objectives, "kl_divergence", lambda q, p: calls.append(q.batch_shape) or kl(q, p))
    ours = loss_and_grads(
        FreeBitsELBO(0.0, max_plate_nesting=1), model, guide, params, vrnn, x, mask, num_sequences=9, record=Record()
    )
    assert calls == [torch.Size([7, 4])]  # [T, B]
    pyros = loss_and_grads(
        TraceMeanField_ELBO(max_plate_nesting=1), model, guide, params, vrnn, x, mask, num_sequences=9, record=Record()
    )
    assert_same(ours, pyros)


@pytest.mark.parametrize(
    "name,kind,scoring", [("vrnn-gauss", "handwriting", "batched"), ("vrnn-i-gauss", "real", "steps")]
)
def test_iwae_stacked_is_iwae_per_site(name, kind, scoring, monkeypatch):
    """IWAEELBO, its z_t sites scored in one call per program, = the bound from the per-site log-densities of
    Pyro's vectorized_importance_weights on the same draws. The step-by-step model observes each x_t [B, D] under an
    emission with a particle dim [K, B, D]."""
    _, model, guide, vrnn = build(name, kind, 3, scoring=scoring)
    x, mask = make_data(kind, steps=7)
    params = list(vrnn.parameters())
    calls = count_diag_normal_scores(monkeypatch)
    stacked = loss_and_grads(IWAEELBO(4), model, guide, params, vrnn, x, mask, record=Record())
    assert len(calls) <= 2 + (scoring == "steps")  # the z_t of each program; the step model's x_t (a DiagNormal)
    pyro.set_rng_seed(3)
    _, model_trace, guide_trace = vectorized_importance_weights(
        model, guide, vrnn, x, mask, record=Record(), num_samples=4, max_plate_nesting=1
    )
    log_w = sum(
        sign * site["log_prob"]
        for trace, sign in ((model_trace, 1), (guide_trace, -1))
        for site in prune_subsample_sites(trace).nodes.values()
        if site["type"] == "sample"
    )  # [K, B]
    loss = -(torch.logsumexp(log_w, 0) - math.log(4)).sum()
    # the sites summed in another order (stacked, then per site): gradients of ~1 agree to a few float32 ulps
    assert_same(stacked, (loss, torch.autograd.grad(loss, params)), atol=1e-5)


def test_a_guide_messenger_gets_pyros_own_traces():
    """An AutoNormalMessenger runs the model itself and hands both traces over: the same loss as Trace_ELBO's."""
    loc = torch.randn(2, 4)

    def model(steps):
        with pyro.plate("rows", 2):
            for t in range(steps):
                z = pyro.sample(f"z_{t}", DiagNormal(loc * t, torch.ones(2, 4)))
                pyro.sample(f"x_{t}", DiagNormal(z, torch.ones(2, 4)), obs=torch.ones(2, 4))

    guide = AutoNormalMessenger(model)
    losses = []
    for elbo in (StackedTrace_ELBO(max_plate_nesting=1), Trace_ELBO(max_plate_nesting=1)):
        pyro.set_rng_seed(3)
        with pyro.validation_enabled(False):
            losses.append(elbo.loss(model, guide, 4))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


@pytest.mark.parametrize("particles", [1, 3])
def test_free_bits_zero_is_trace_mean_field_elbo_where_it_cannot_stack(particles):
    """The hand-written model's pairs are not all two DiagNormals of one shape (a Normal.to_event pair, a pair alone
    of its shape): FreeBitsELBO(0) is TraceMeanField_ELBO's loss there too, exactly."""
    loc = torch.randn(2, 4, requires_grad=True)
    kwargs = dict(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    ours, (ours_grad,) = loss_and_grads(FreeBitsELBO(0.0, **kwargs), hand_model, hand_guide, [loc], loc, 5)
    pyros, (pyro_grad,) = loss_and_grads(TraceMeanField_ELBO(**kwargs), hand_model, hand_guide, [loc], loc, 5)
    assert ours.item() == pytest.approx(pyros.item(), rel=1e-6)
    torch.testing.assert_close(ours_grad, pyro_grad)
