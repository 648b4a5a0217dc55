"""The plain-PyTorch yardstick (benchmarks/plain_forms.py) computes what the Pyro programs compute, in both
of its hand-written forms (a loop that scores every term at its step, and the form batched over time).

With the same weights and the same RNG seed (the noise drawn in the same order: z_1, ..., z_T in the
guide, particles included), the training path of pyro_vrnn/train/svi_step.py, in both of the model's forms, and
each reference form give the same loss and the same gradients for each model and ELBO, and the same
importance weights. run/benchmark.py times them against each other, so these equalities are what make
its ratios a comparison of like with like.
"""

import pyro
import pytest
import torch
from conftest import build, make_data

from pyro_vrnn import models
from pyro_vrnn.benchmarks import plain_forms as reference
from pyro_vrnn.infer.objectives import exact_log_likelihood, particle_log_weights
from pyro_vrnn.infer.record import Record
from pyro_vrnn.nn import vrnn_networks as networks
from pyro_vrnn.train.config import TABLE1_MODELS, make_config
from pyro_vrnn.train.svi_step import Program, make_elbo

CASES = [(name, kind) for name in TABLE1_MODELS for kind in ("handwriting", "real")]  # the VRNN family's forms


def pyro_loss(model, guide, vrnn, elbo_name, x, mask, **kwargs):
    """The loss exactly as pyro_vrnn/train/svi_step.py computes it: an ELBOModule over Program(model),
    Program(guide)."""
    loss_module = make_elbo(elbo_name)(Program(model, vrnn), Program(guide, vrnn))
    return loss_module(x, mask, record=Record(), **kwargs)


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_both_reference_forms_give_the_programs_loss_and_gradients(name, kind, elbo_name, scoring):
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, scoring)
    x, mask = make_data(kind, dim=dim)
    kwargs = dict(num_sequences=40, kl_scale=0.3)
    pyro.set_rng_seed(7)
    loss = pyro_loss(model, guide, vrnn, elbo_name, x, mask, **kwargs)
    grads = torch.autograd.grad(loss, list(vrnn.parameters()), allow_unused=True)
    for form in reference.FORMS:
        pyro.set_rng_seed(7)
        expected = reference.elbo_loss(vrnn, x, mask, analytic_kl=elbo_name == "meanfield", form=form, **kwargs)
        expected_grads = torch.autograd.grad(expected, list(vrnn.parameters()), allow_unused=True)
        assert torch.allclose(loss, expected, rtol=1e-5), (form, loss, expected)
        for (pname, _), g, e in zip(vrnn.named_parameters(), grads, expected_grads):
            assert (g is None) == (e is None), pname
            if g is not None:
                assert torch.allclose(g, e, rtol=1e-4, atol=1e-5), (form, pname)


@pytest.mark.parametrize(
    "name,kind",
    [("vrnn-gmm", "handwriting"), ("vrnn-i-gauss", "real"), ("vrnn-gauss", "binary"), ("rnn-gmm", "handwriting")],
)
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_both_reference_forms_give_the_programs_importance_weights(name, kind, scoring):
    """K = 3 particles (neither B nor T, so a mixed-up dim would show), vectorized in all of them."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, scoring)
    x, mask = make_data(kind, dim=dim, steps=5)
    pyro.set_rng_seed(11)
    log_w = particle_log_weights(model, guide, vrnn, x, mask, 3)
    if not vrnn.latent:
        assert torch.allclose(log_w, exact_log_likelihood(model, vrnn, x, mask).expand(3, 4).to(log_w.dtype))
    for form in reference.FORMS:
        pyro.set_rng_seed(11)
        expected = reference.particle_log_weights(vrnn, x, mask, 3, form=form)
        assert log_w.shape == expected.shape == (3, 4)
        assert torch.allclose(log_w, expected, rtol=1e-5, atol=1e-4), (form, log_w, expected)
    chunked = reference.importance_log_weights(vrnn, x, mask, num_samples=7, chunk_size=3)
    assert chunked.shape == (7, 4) and torch.isfinite(chunked).all()


@pytest.mark.parametrize("name,kind", [("vrnn-gmm", "real"), ("rnn-gmm", "handwriting")])
def test_the_emission_scored_in_blocks_of_steps_gives_the_same_numbers(name, kind, monkeypatch):
    """VRNN.emission_log_prob runs the decoder on blocks of steps within EMISSION_BLOCK_BYTES: with blocks of
    one step the loss, its gradients and the importance weights are those of one call for all steps."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, "batched")
    x, mask = make_data(kind, dim=dim, steps=6)
    params = list(vrnn.parameters())
    decoder_calls = []
    vrnn.decoder.register_forward_hook(lambda *args: decoder_calls.append(1))

    def numbers():
        pyro.set_rng_seed(3)
        loss = pyro_loss(model, guide, vrnn, "trace", x, mask)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pyro.set_rng_seed(4)
        weights = particle_log_weights(model, guide, vrnn, x, mask, 3)
        return [loss, *grads, weights]

    whole = numbers()
    assert len(decoder_calls) == 2  # one call for all steps, in training and in importance sampling
    monkeypatch.setattr(networks, "EMISSION_BLOCK_BYTES", 1)
    decoder_calls.clear()
    blocked = numbers()
    assert len(decoder_calls) == 2 * x.shape[1]  # a call a step
    for got, expected in zip(blocked, whole):
        assert (got is None) == (expected is None)
        if got is not None:
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,dim,steps_per_block", [("handwriting", 3, 270), ("real", 200, 4)])
def test_emission_blocks_are_sized_by_the_emissions_parameters(kind, dim, steps_per_block, monkeypatch):
    """Within the 4 MiB budget, the handwriting mixture (121 parameters per sequence and step) scores 32
    sequences 270 steps a call; the speech mixture (8,020) four steps a call."""
    config = make_config("test", model="vrnn-gmm", hidden=16, z_dim=4, components=20)
    _, _, vrnn = models.build(config, kind, dim)
    calls = []
    vrnn.decoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    steps, batch = 800, 32
    x = torch.zeros(batch, steps, dim)
    with torch.no_grad():
        log_px = vrnn.emission_log_prob(torch.zeros(steps, batch, 4), torch.zeros(steps, batch, 16), x)
    assert log_px.shape == (steps, batch)
    assert calls[0] == steps_per_block and sum(calls) == steps and len(calls) == -(-steps // steps_per_block)
    per_step = 4 * vrnn.decoder[-1].linear.out_features * batch
    assert calls[0] * per_step <= networks.EMISSION_BLOCK_BYTES
