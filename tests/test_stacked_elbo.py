"""StackedTrace_ELBO is Trace_ELBO, its z_t sites scored in one call (pyro_vrnn/stacked_elbo.py).

The same loss and gradients as Pyro's Trace_ELBO, on every latent model, with padding, a KL weight and the
plate's scale, with vectorized particles, and on a hand-written model whose sites are not all stackable. And
the stacking must actually happen: the z_t sites' log-densities are counted, so that a change which
silently sent every site back through its own log_prob would fail here.
"""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from conftest import build, make_data
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormalMessenger

from pyro_vrnn import objectives
from pyro_vrnn.diag_normal import DiagNormal
from pyro_vrnn.objectives import IWAEELBO, FreeBitsELBO
from pyro_vrnn.record import Record
from pyro_vrnn.stacked_elbo import StackedTrace_ELBO
from pyro_vrnn.svi import make_elbo

LATENT = ["vrnn-gauss", "vrnn-gmm", "vrnn-i-gauss", "srnn-gmm"]


def loss_and_grads(elbo, model, guide, params, *args, validate=False, **kwargs):
    """The loss and its gradients, from seed 3; with `validate`, Pyro's own per-site traces (the stacked ELBOs
    use those while validation is on, so that a comparison with validation on would compare nothing)."""
    pyro.set_rng_seed(3)
    with pyro.validation_enabled(validate):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
    return loss, torch.autograd.grad(loss, params)


def assert_same(ours, pyros):
    """Two (loss, gradients) from loss_and_grads equal to float precision."""
    (loss, grads), (pyro_loss, pyro_grads) = ours, pyros
    assert loss.item() == pytest.approx(pyro_loss.item(), rel=1e-6)
    for a, b in zip(grads, pyro_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scoring", ["batched", "steps"])
@pytest.mark.parametrize("name", LATENT)
def test_same_loss_and_gradients_as_trace_elbo(name, scoring):
    config, model, guide, vrnn = build(name, "handwriting", 3, scoring=scoring)
    x, mask = make_data("handwriting", steps=7)  # lengths 7, 5, 1, 6: padding at most steps
    params = list(vrnn.parameters())
    kwargs = dict(num_sequences=40, kl_scale=0.3)
    assert_same(
        loss_and_grads(
            StackedTrace_ELBO(max_plate_nesting=1), model, guide, params, vrnn, x, mask, record=Record(), **kwargs
        ),
        loss_and_grads(Trace_ELBO(max_plate_nesting=1), model, guide, params, vrnn, x, mask, record=Record(), **kwargs),
    )


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


def hand_model(loc, steps):
    with pyro.plate("rows", 3, subsample=torch.arange(2)):
        for t in range(steps):
            with poutine.mask(mask=torch.tensor([True, t < 2]) if t != 3 else False), poutine.scale(scale=0.5 + t):
                pyro.sample(f"z_{t}", DiagNormal(loc * t, torch.ones(2, 4)))
            # observed, without the particle dim that vectorized particles give its distribution
            pyro.sample(f"x_{t}", DiagNormal(loc * 0.1 * t, torch.ones(2, 4)), obs=torch.ones(2, 4))
        pyro.sample("r", DiagNormal(loc, torch.ones(2, 4)))
        pyro.sample("w", dist.Normal(loc, 2.0).to_event(1))  # not a DiagNormal: scored by Pyro, alone
        pyro.sample("odd", DiagNormal(loc[:, :3], torch.ones(2, 3)))  # the only one of its shape: alone


def hand_guide(loc, steps):
    with pyro.plate("rows", 3, subsample=torch.arange(2)):
        for t in range(steps):
            with poutine.mask(mask=torch.tensor([True, t < 2]) if t != 3 else False), poutine.scale(scale=0.5 + t):
                pyro.sample(f"z_{t}", DiagNormal(loc + t, torch.full((2, 4), 0.5 + t)))
        # drawn without reparameterization: its score-function term matters, so Pyro scores it
        pyro.sample("r", DiagNormal(loc * 0.5, torch.ones(2, 4)).has_rsample_(False))
        pyro.sample("w", dist.Normal(loc, 1.0).to_event(1))
        pyro.sample("odd", DiagNormal(loc[:, :3] * 2, torch.ones(2, 3)))


@pytest.mark.parametrize("particles", [1, 3])
def test_a_hand_written_model_with_sites_of_every_kind(particles):
    """Masks (tensors, and False at one step), per-site scales and a plate's subsample scale; a Normal.to_event site,
    a DiagNormal of a shape of its own and one drawn without reparameterization, which Pyro scores; and vectorized
    particles (an extra batch dim on every site)."""
    loc = torch.randn(2, 4, requires_grad=True)
    kwargs = dict(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    ours, (ours_grad,) = loss_and_grads(StackedTrace_ELBO(**kwargs), hand_model, hand_guide, [loc], loc, 5)
    pyros, (pyro_grad,) = loss_and_grads(Trace_ELBO(**kwargs), hand_model, hand_guide, [loc], loc, 5)
    assert ours.item() == pytest.approx(pyros.item(), rel=1e-6)
    torch.testing.assert_close(ours_grad, pyro_grad)


@pytest.mark.parametrize("name", ["vrnn-gauss", "srnn-gmm"])
def test_free_bits_stacked_is_free_bits_per_site(name):
    """FreeBitsELBO's traces and KL are stacked with validation off; with it on, its traces are TraceMeanField_ELBO's
    (every site scored by Pyro): the same loss and gradients either way."""
    _, model, guide, vrnn = build(name, "handwriting", 3)
    x, mask = make_data("handwriting", steps=7)
    params = list(vrnn.parameters())
    elbo = FreeBitsELBO(0.2, max_plate_nesting=1)
    stacked = loss_and_grads(elbo, model, guide, params, vrnn, x, mask, num_sequences=9, record=Record())
    per_site = loss_and_grads(
        elbo, model, guide, params, vrnn, x, mask, validate=True, num_sequences=9, record=Record()
    )
    assert_same(stacked, per_site)


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
    """IWAEELBO's traces are stacked with validation off, and Pyro's get_importance_trace with it on: same bound.
    The step-by-step model observes each x_t [B, D] under an emission with a particle dim [K, B, D]."""
    _, model, guide, vrnn = build(name, kind, 3, scoring=scoring)
    x, mask = make_data(kind, steps=7)
    params = list(vrnn.parameters())
    elbo = IWAEELBO(4)
    calls = count_diag_normal_scores(monkeypatch)
    stacked = loss_and_grads(elbo, model, guide, params, vrnn, x, mask, num_sequences=9, record=Record())
    assert len(calls) <= 2 + (scoring == "steps")  # the z_t of each program; the step model's x_t (a DiagNormal)
    per_site = loss_and_grads(
        elbo, model, guide, params, vrnn, x, mask, validate=True, num_sequences=9, record=Record()
    )
    assert len(calls) > 2 * 7
    assert_same(stacked, per_site)


def test_a_guide_messenger_gets_pyros_own_traces():
    """An AutoNormalMessenger traces both programs itself: StackedTrace_ELBO leaves it to Pyro, same loss."""
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
    """The hand-written model's pairs are not all two reparameterized DiagNormals (a Normal.to_event pair, a guide
    site drawn without reparameterization): FreeBitsELBO(0) is then TraceMeanField_ELBO's own loss, exactly."""
    loc = torch.randn(2, 4, requires_grad=True)
    kwargs = dict(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    ours, (ours_grad,) = loss_and_grads(FreeBitsELBO(0.0, **kwargs), hand_model, hand_guide, [loc], loc, 5)
    pyros, (pyro_grad,) = loss_and_grads(TraceMeanField_ELBO(**kwargs), hand_model, hand_guide, [loc], loc, 5)
    assert ours.item() == pytest.approx(pyros.item(), rel=1e-6)
    torch.testing.assert_close(ours_grad, pyro_grad)
