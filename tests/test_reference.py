"""The plain-PyTorch reference (pyro_vrnn/reference.py) computes what the Pyro programs compute, and the
model's reuse of the guide's recurrence (pyro_vrnn/networks.py, `Recurrence`) changes no number.

With the same weights and the same RNG seed (the noise drawn in the same order: z_1, ..., z_T in the
guide, particles included), the training path of pyro_vrnn/train.py and the reference give the same loss
and the same gradients for each model and ELBO, and the same importance weights. The reuse is checked
where it must not apply (parameters changed, another trace replayed, observations unconditioned, a
different grad mode), against a copy of the network that has nothing recorded.
"""
import copy

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

import models
from pyro_vrnn import networks, reference
from pyro_vrnn.evaluate import exact_log_likelihood, particle_log_weights
from pyro_vrnn.networks import StepOf
from pyro_vrnn.config import make_config
from pyro_vrnn.train import Program, make_elbo
from test_elbo import build, make_data

CASES = [(name, kind) for name in models.MODELS for kind in ("handwriting", "real")]


def pyro_loss(model, guide, vrnn, elbo_name, x, mask, **kwargs):
    """The loss exactly as pyro_vrnn/train.py computes it: an ELBOModule over Program(model), Program(guide)."""
    loss_module = make_elbo(elbo_name)(Program(model, vrnn), Program(guide, vrnn))
    return loss_module(x, mask, **kwargs)


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
def test_reference_gives_the_same_loss_and_gradients(name, kind, elbo_name):
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim)
    x, mask = make_data(kind, dim=dim)
    kwargs = dict(num_sequences=40, kl_scale=0.3)
    pyro.set_rng_seed(7)
    loss = pyro_loss(model, guide, vrnn, elbo_name, x, mask, **kwargs)
    grads = torch.autograd.grad(loss, list(vrnn.parameters()), allow_unused=True)
    pyro.set_rng_seed(7)
    expected = reference.elbo_loss(vrnn, x, mask, analytic_kl=elbo_name == "meanfield", **kwargs)
    expected_grads = torch.autograd.grad(expected, list(vrnn.parameters()), allow_unused=True)
    assert torch.allclose(loss, expected, rtol=1e-5), (loss, expected)
    for (pname, _), g, e in zip(vrnn.named_parameters(), grads, expected_grads):
        assert (g is None) == (e is None), pname
        if g is not None:
            assert torch.allclose(g, e, rtol=1e-4, atol=1e-5), pname


@pytest.mark.parametrize("name,kind", [("vrnn-gmm", "handwriting"), ("vrnn-i-gauss", "real"),
                                       ("vrnn-gauss", "binary"), ("rnn-gmm", "handwriting")])
def test_reference_gives_the_same_importance_weights(name, kind):
    """K = 3 particles (neither B nor T, so a mixed-up dim would show), vectorized in both."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim)
    x, mask = make_data(kind, dim=dim, steps=5)
    pyro.set_rng_seed(11)
    log_w = particle_log_weights(model, guide, vrnn, x, mask, 3)
    pyro.set_rng_seed(11)
    expected = reference.particle_log_weights(vrnn, x, mask, 3)
    assert log_w.shape == expected.shape == (3, 4)
    assert torch.allclose(log_w, expected, rtol=1e-5, atol=1e-4), (log_w, expected)
    chunked = reference.importance_log_weights(vrnn, x, mask, num_samples=7, chunk_size=3)
    assert chunked.shape == (7, 4) and torch.isfinite(chunked).all()


@pytest.mark.parametrize("name,kind", [("vrnn-gmm", "real"), ("vrnn-gauss", "binary"), ("rnn-gmm", "handwriting")])
def test_the_emission_scored_a_step_at_a_time_gives_the_same_numbers(name, kind, monkeypatch):
    """Without gradients the emission is scored a block at a time (networks.EMISSION_BLOCK_BYTES); with blocks
    of one step and one row the importance weights (or the RNN's exact log p(x)) are those of one call for all
    steps, in the Pyro path and in the reference; the training loss and its gradients (one call) are as before."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim)
    x, mask = make_data(kind, dim=dim, steps=6)
    params = list(vrnn.parameters())
    decoder_calls = []
    vrnn.decoder.register_forward_hook(lambda *args: decoder_calls.append(1))

    def numbers():
        pyro.set_rng_seed(3)
        loss = pyro_loss(model, guide, vrnn, "trace", x, mask)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pyro.set_rng_seed(4)
        if vrnn.latent:
            weights = particle_log_weights(model, guide, vrnn, x, mask, 3)
        else:
            weights = exact_log_likelihood(model, vrnn, x, mask)
        pyro.set_rng_seed(4)
        expected = reference.particle_log_weights(vrnn, x, mask, 3)
        return [loss, *grads, weights, expected]

    whole, calls_whole = numbers(), len(decoder_calls)
    monkeypatch.setattr(networks, "EMISSION_BLOCK_BYTES", 1)
    with torch.no_grad():
        assert len(networks.emission_blocks(vrnn, torch.Size((6, 3, 4)))) == 18  # a step and a row each
    assert len(networks.emission_blocks(vrnn, torch.Size((6, 3, 4)))) == 1  # with gradients: all steps in one call
    decoder_calls.clear()
    blocked = numbers()
    rows = 3 if vrnn.latent else x.shape[0]  # particles, or the sequences of the RNN's exact log p(x)
    assert len(decoder_calls) == calls_whole + 2 * (6 * rows - 1)  # a call a step and row in each weighing
    for got, expected in zip(blocked, whole):
        assert (got is None) == (expected is None)
        if got is not None:
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,dim,steps_per_block,blocks_per_step", [("handwriting", 3, 10, 1), ("real", 200, 1, 7)])
def test_emission_blocks_cover_every_step_and_row_once_within_the_budget(kind, dim, steps_per_block, blocks_per_step):
    """K = 100 particles of 4 sequences of 800 steps: the handwriting mixture (121 parameters a row) goes ten
    steps a block; the speech mixture (8,020) a step at a time, 16 particles a block, 16 MiB each."""
    config = make_config("test", model="vrnn-gmm", hidden=256, z_dim=32, components=20)
    _, _, vrnn = models.build(config, kind, dim)
    shape = torch.Size((800, 100, 4))
    with torch.no_grad():
        blocks = networks.emission_blocks(vrnn, shape)
    covered = torch.zeros(800, 100, dtype=torch.int)
    for steps, rows in blocks:
        covered[steps, rows] += 1
        block = covered[steps, rows]
        assert block.shape[0] == steps_per_block or steps.stop >= 800
        assert 4 * 8 * vrnn.decoder[-1].linear.out_features * 4 * block.numel() <= networks.EMISSION_BLOCK_BYTES
    assert (covered == 1).all()
    assert len(blocks) == -(-800 // steps_per_block) * blocks_per_step


def test_the_model_reuses_the_guides_recurrence():
    """Under Trace_ELBO the model runs no LSTM step of its own, and its sites are batched steps."""
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting", steps=6)
    calls = []
    vrnn.rnn.register_forward_hook(lambda *args: calls.append(1))
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
    assert len(calls) == 6
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask)
    assert len(calls) == 6  # none more
    assert all(isinstance(model_trace.nodes[f"{s}_{t}"]["fn"], StepOf) for s in "zx" for t in range(1, 7))
    # alone, the model computes its own recurrence
    poutine.trace(model).get_trace(vrnn, x, mask)
    assert len(calls) == 12


def site_log_probs(trace):
    trace.compute_log_prob()
    return {name: site["log_prob"] for name, site in trace.nodes.items()
            if site["type"] == "sample" and name[0] in "zx"}


def assert_same_log_probs(trace, expected_trace):
    got, expected = site_log_probs(trace), site_log_probs(expected_trace)
    assert got.keys() == expected.keys()
    for name in got:
        assert torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-5), name


def unshared_copy(vrnn):
    """The same network with nothing recorded: what the model computes on its own."""
    other = copy.deepcopy(vrnn)
    assert "_shared_pass" not in other.__dict__
    return other


@pytest.mark.parametrize("name", ["vrnn-gmm", "vrnn-i-gauss"])
def test_a_pass_recorded_before_the_parameters_changed_is_not_reused(name):
    config, model, guide, vrnn = build(name, "handwriting", 3)
    x, mask = make_data("handwriting")
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
    with torch.no_grad():  # an optimizer step between the guide and the model
        for p in vrnn.parameters():
            p.add_(0.05)
    other = unshared_copy(vrnn)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask)
    expected = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(other, x, mask)
    assert not any(isinstance(site.get("fn"), StepOf) for site in trace.nodes.values())
    assert_same_log_probs(trace, expected)


def test_only_the_trace_of_the_recorded_pass_is_followed():
    """Guide run twice: replaying the model on the first trace must not follow the second pass."""
    config, model, guide, vrnn = build("vrnn-gauss", "real", 4)
    x, mask = make_data("real", dim=4)
    first = poutine.trace(guide).get_trace(vrnn, x, mask)
    second = poutine.trace(guide).get_trace(vrnn, x, mask)  # kept: its pass stays the recorded one
    trace = poutine.trace(poutine.replay(model, trace=first)).get_trace(vrnn, x, mask)
    expected = poutine.trace(poutine.replay(model, trace=first)).get_trace(unshared_copy(vrnn), x, mask)
    # p(z_1 | h_0) is the same in every pass (h_0 = 0); from z_1 on, the replayed z's are not the pass's
    assert [name for name, site in trace.nodes.items() if isinstance(site.get("fn"), StepOf)] == ["z_1"]
    assert_same_log_probs(trace, expected)
    assert second.nodes["z_1"]["value"] is not first.nodes["z_1"]["value"]


def test_a_guide_run_alone_leaves_no_pass_behind():
    """The module refers to the recorded pass weakly: once the guide's trace is gone, so is the pass
    (with its autograd graph), and the next model run computes its own recurrence."""
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting", dim=3)
    trace = poutine.trace(guide).get_trace(vrnn, x, mask)
    assert vrnn.__dict__["_shared_pass"]() is not None
    del trace
    assert vrnn.__dict__["_shared_pass"]() is None
    model_trace = poutine.trace(model).get_trace(vrnn, x, mask)
    assert not any(isinstance(site.get("fn"), StepOf) for site in model_trace.nodes.values())


def test_inference_mode_runs_and_gives_the_same_numbers():
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting", dim=3)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
        expected = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask)
    pyro.set_rng_seed(0)
    with torch.inference_mode():
        guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
        trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask)
    assert_same_log_probs(trace, expected)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("observed", [0, 2])
def test_a_model_that_stops_matching_mid_sequence_computes_the_rest_itself(grad, observed):
    """Observations unconditioned after the guide ran on x, but for the first `observed` steps: the z's
    are the guide's, x_{observed+1} is sampled, so from there on the recurrence is the model's own.
    Same numbers as a network with nothing recorded."""
    config, model, guide, vrnn = build("vrnn-gmm", "real", 4)
    x, mask = make_data("real", dim=4)
    other = unshared_copy(vrnn)
    with torch.set_grad_enabled(grad):
        guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
        program = poutine.uncondition(poutine.replay(model, trace=guide_trace))
        program = poutine.condition(program, data={f"x_{t + 1}": x[:, t] for t in range(observed)})
        pyro.set_rng_seed(3)
        trace = poutine.trace(program).get_trace(vrnn, x, mask)
        pyro.set_rng_seed(3)
        expected = poutine.trace(program).get_trace(other, x, mask)
    # steps up to the first sampled x were still the guide's
    assert isinstance(trace.nodes[f"x_{observed + 1}"]["fn"], StepOf)
    assert not isinstance(trace.nodes[f"z_{observed + 2}"]["fn"], StepOf)
    for t in range(1, 7):
        assert torch.equal(trace.nodes[f"x_{t}"]["value"], expected.nodes[f"x_{t}"]["value"])
    assert_same_log_probs(trace, expected)


def test_an_rnn_runs_ahead_on_the_data_and_stops_where_the_data_stop():
    """An RNN model whose x_1 is the data runs its recurrence ahead on x; with x_2 on sampled (x_1 observed,
    the rest generated) it continues from h_1 on its own. Same numbers as a model that never ran ahead."""
    config, model, guide, vrnn = build("rnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    calls = []
    vrnn.rnn.register_forward_hook(lambda *args: calls.append(1))
    trace = poutine.trace(model).get_trace(vrnn, x, mask)
    assert len(calls) == 6 and isinstance(trace.nodes["x_2"]["fn"], StepOf)
    program = poutine.condition(poutine.uncondition(model), data={"x_1": x[:, 0]})
    pyro.set_rng_seed(4)
    trace = poutine.trace(program).get_trace(vrnn, x, mask)
    pyro.set_rng_seed(4)
    expected = poutine.trace(program).get_trace(vrnn, x.clone(), mask)  # x_1 is not the clone's: no running ahead
    assert not any(isinstance(site.get("fn"), StepOf) for site in expected.nodes.values())
    assert isinstance(trace.nodes["x_2"]["fn"], StepOf) and not isinstance(trace.nodes["x_3"]["fn"], StepOf)
    for t in range(1, 7):
        assert torch.equal(trace.nodes[f"x_{t}"]["value"], expected.nodes[f"x_{t}"]["value"])
    assert_same_log_probs(trace, expected)


def test_a_pass_recorded_without_gradients_is_not_reused_with_them():
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask)
    assert not isinstance(trace.nodes["z_1"]["fn"], StepOf)
    trace.log_prob_sum().backward()  # the model's own graph, down to the parameters
    assert vrnn.decoder[0][0].weight.grad is not None


def test_validation_enabled_runs_and_copies_work():
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    with pyro.validation_enabled(True):
        Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, vrnn, x, mask).backward()
    poutine.trace(guide).get_trace(vrnn, x, mask)  # leaves a recorded pass behind
    copy.deepcopy(vrnn)
