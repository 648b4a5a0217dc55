"""The SRNN (Fraccaro et al. 2016): models/srnn.py, guides/srnn_smoothing.py, pyro_vrnn/nn/srnn_networks.py.

With fixed weights and the same RNG seed (the guide draws z_1, ..., z_T in order), Pyro's losses equal

    -sum_b sum_t mask_bt [ log p(x_t | z_t, d_t) + log p(z_t | z_{t-1}, d_t) - log q(z_t | z_{t-1}, a_t) ]

written below with explicit gates (d_t = f(d_{t-1}, phi_x(x_{t-1})), a_t = g(a_{t+1}, [d_t, phi_x(x_t)]) run
from each sequence's end) and explicit densities; the analytic KL for TraceMeanField_ELBO. The rest: the sites
pair up, padding changes nothing, d is computed once per pass (a forward hook counts f's calls), samples
have the data's form, the IS estimate is above the ELBO, training lowers the loss, the stepper of the
particle methods gives Pyro's importance weights, and the run scripts take --model srnn end to end.
"""

import json
import os
import types

import pyro
import pyro.poutine as poutine
import pytest
import torch
from conftest import TINY_SIZES, build, flags, load_script, make_data
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.util import check_model_guide_match
from test_elbo import diag_normal_log_density, emission_log_density, lstm_cell, normal_params, relu_linear
from test_record import CallCounter

from pyro_vrnn import models
from pyro_vrnn.infer.evaluate import estimate_log_likelihood
from pyro_vrnn.infer.objectives import elbo_terms, particle_log_weights, traces
from pyro_vrnn.infer.record import Record
from pyro_vrnn.nn.srnn_networks import SRNNStepper
from pyro_vrnn.report.sampling import generate
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.svi_step import make_loss_module, svi_step

STEP_FORMS = [("batched", True), ("steps", True), ("steps", False)]  # (scoring, with the guide's record)
TINY = flags(TINY_SIZES, batch_size=8, log_every=1)


# ---- the hand-written ELBO --------------------------------------------------------------


def cell_step(rnn, cell, inputs, h, c):
    """One step of a one-layer nn.LSTM or nn.GRU, its gates written out: (h, c), c None for a GRU."""
    w_ih, w_hh, b_ih, b_hh = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    if cell == "lstm":
        weights = types.SimpleNamespace(weight_ih=w_ih, weight_hh=w_hh, bias_ih=b_ih, bias_hh=b_hh)
        return lstm_cell(weights, inputs, h, c)
    r_i, z_i, n_i = (inputs @ w_ih.T + b_ih).chunk(3, -1)
    r_h, z_h, n_h = (h @ w_hh.T + b_hh).chunk(3, -1)
    reset, update = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
    return (1 - update) * torch.tanh(n_i + reset * n_h) + update * h, None


def hand_forward(rnn, cell, inputs):
    """d[:, t] after reading inputs[:, 0..t], from d_0 = 0."""
    h = c = torch.zeros(inputs.shape[0], rnn.hidden_size)
    out = []
    for t in range(inputs.shape[1]):
        h, c = cell_step(rnn, cell, inputs[:, t], h, c)
        out.append(h)
    return torch.stack(out, 1)


def hand_backward(rnn, cell, inputs, lengths):
    """a[b, t] for t < lengths[b]: each sequence read from its own last step back to its first."""
    a = torch.zeros(inputs.shape[:2] + (rnn.hidden_size,))
    for b, length in enumerate(lengths.tolist()):
        a[b, :length] = hand_forward(rnn, cell, inputs[b : b + 1, :length].flip(1))[0].flip(0)
    return a


def hand_elbo_parts(net, config, kind, x, mask, analytic_kl=False):
    """Per-sequence (sum_t log p(x_t | z_t, d_t), sum_t KL_t or its one-sample estimate), step by step."""
    batch, steps, dim = x.shape
    fx = relu_linear(net.phi_x, x)
    shifted = torch.cat([relu_linear(net.phi_x, torch.zeros(batch, 1, dim)), fx[:, :-1]], 1)  # x_0 = 0
    d = hand_forward(net.rnn, config.cell, shifted)
    a = hand_backward(net.backward_rnn, config.cell, torch.cat([d, fx], -1), mask.sum(1))
    z_prev = torch.zeros(batch, config.z_dim)
    log_likelihood, kl_sum = torch.zeros(batch), torch.zeros(batch)
    for t in range(steps):
        mu_p, sigma_p = normal_params(net.prior_net[1], relu_linear(net.prior_net[0], torch.cat([z_prev, d[:, t]], -1)))
        mu_q, sigma_q = normal_params(net.encoder[1], relu_linear(net.encoder[0], torch.cat([z_prev, a[:, t]], -1)))
        if config.srnn_resq:
            mu_q = mu_p + mu_q  # Resq: the guide predicts the residual on the prior's mean
        z = mu_q + sigma_q * torch.normal(torch.zeros_like(mu_q), torch.ones_like(mu_q))
        features = relu_linear(net.decoder[0], torch.cat([z, d[:, t]], -1))
        head = net.decoder[1]
        log_px = emission_log_density(head, kind, head.mixture, config.components, features, x[:, t])
        if analytic_kl:
            kl = (torch.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5).sum(-1)
        else:
            kl = diag_normal_log_density(z, mu_q, sigma_q) - diag_normal_log_density(z, mu_p, sigma_p)
        m = mask[:, t].float()
        log_likelihood, kl_sum, z_prev = log_likelihood + m * log_px, kl_sum + m * kl, z
    return log_likelihood, kl_sum


CASES = [
    ("srnn", "handwriting"),
    ("srnn-gmm", "handwriting"),
    ("srnn", "real"),
    ("srnn-gmm", "real"),
    ("srnn", "binary"),
]


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("elbo_name", ["trace", "meanfield"])
@pytest.mark.parametrize("scoring,with_record", STEP_FORMS)
def test_elbo_equals_hand_computation(name, kind, elbo_name, scoring, with_record):
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, net = build(name, kind, dim, scoring)
    x, mask = make_data(kind, dim=dim)  # lengths 6, 4, 1, 5
    elbo = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[elbo_name](max_plate_nesting=1)
    record = (lambda: {"record": Record()}) if with_record else dict
    pyro.set_rng_seed(123)
    loss = elbo.differentiable_loss(model, guide, net, x, mask, **record())
    pyro.set_rng_seed(123)
    ll, kl = hand_elbo_parts(net, config, kind, x, mask, analytic_kl=elbo_name == "meanfield")
    assert torch.allclose(loss, -(ll - kl).sum(), rtol=1e-5, atol=1e-4), (loss, -(ll - kl).sum())
    assert kl.sum().item() > 0.5  # the KL part is not negligible, so the check has teeth
    pyro.set_rng_seed(123)  # the plate over sequences scales the batch's ELBO to the data size
    scaled = elbo.differentiable_loss(model, guide, net, x, mask, num_sequences=40, **record())
    assert torch.allclose(scaled, loss * 40 / x.shape[0], rtol=1e-5)


@pytest.mark.parametrize("cell,resq", [("lstm", True), ("gru", True), ("gru", False)])
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_elbo_with_either_cell_and_resq_equals_hand_computation(cell, resq, scoring):
    config, model, guide, net = build("srnn-gmm", "real", 4, scoring, cell=cell, srnn_resq=resq)
    x, mask = make_data("real", dim=4)
    pyro.set_rng_seed(5)
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, net, x, mask, record=Record())
    pyro.set_rng_seed(5)
    ll, kl = hand_elbo_parts(net, config, "real", x, mask)
    assert torch.allclose(loss, -(ll - kl).sum(), rtol=1e-5, atol=1e-4), (loss, -(ll - kl).sum())


def test_gradients_match_hand_computation():
    config, model, guide, net = build("srnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    pyro.set_rng_seed(5)
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, net, x, mask, record=Record())
    grads = torch.autograd.grad(loss, list(net.parameters()))
    pyro.set_rng_seed(5)
    ll, kl = hand_elbo_parts(net, config, "handwriting", x, mask)
    for g, e in zip(grads, torch.autograd.grad(-(ll - kl).sum(), list(net.parameters()))):
        assert torch.allclose(g, e, rtol=1e-4, atol=1e-5)


# ---- sites, padding, the record ----------------------------------------------------------


@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_model_and_guide_sites_match(scoring):
    config, model, guide, net = build("srnn", "handwriting", 3, scoring)
    x, mask = make_data("handwriting", steps=5)
    guide_trace, model_trace = traces(model, guide, net, x, mask)
    check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
    latent = [
        n for n, s in model_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "sequences"
    ]
    assert latent == [n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and n != "sequences"]
    assert latent == [f"z_{t}" for t in range(1, 6)]
    observed = [n for n, s in model_trace.nodes.items() if s["type"] == "sample" and s["is_observed"]]
    assert observed == ([f"x_{t}" for t in range(1, 6)] if scoring == "steps" else ["x"])
    for n in latent:
        assert model_trace.nodes[n]["fn"].batch_shape == (4,) and model_trace.nodes[n]["fn"].event_shape == (3,)
        assert guide_trace.nodes[n]["value"].shape == (4, config.z_dim)


@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_padding_does_not_change_any_sequence_elbo(scoring):
    """Row i's ELBO is that of the batch cut at its length, and the same with longer padding full of junk."""
    config, model, guide, net = build("srnn-gmm", "handwriting", 3, scoring)
    x, mask = make_data("handwriting", steps=6)
    junk = torch.tensor([1.0, 1e3, -1e3])
    longer_x = torch.cat([torch.where(mask[..., None], x, junk), junk.expand(4, 5, 3)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(4, 5, dtype=torch.bool)], dim=1)
    pyro.set_rng_seed(9)
    ll, kl = elbo_terms(model, guide, net, x, mask)
    pyro.set_rng_seed(9)
    ll_long, kl_long = elbo_terms(model, guide, net, longer_x, longer_mask)
    assert torch.allclose(ll, ll_long) and torch.allclose(kl, kl_long)
    for i, length in enumerate(mask.sum(1).tolist()):
        pyro.set_rng_seed(9)  # the first `length` steps draw the same noise
        ll_cut, kl_cut = elbo_terms(model, guide, net, x[:, :length], mask[:, :length])
        assert ll_cut[i].item() == pytest.approx(ll[i].item(), rel=1e-6, abs=1e-5)
        assert kl_cut[i].item() == pytest.approx(kl[i].item(), rel=1e-6, abs=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("scoring", ["steps", "batched"])
def test_a_replayed_model_runs_no_recurrence_and_gives_the_same_loss(scoring, cell):
    config, model, guide, net = build("srnn", "real", 4, scoring, cell=cell)
    x, mask = make_data("real", dim=4)
    counter = CallCounter(net.rnn)
    pyro.set_rng_seed(3)
    guide_trace, _ = traces(model, guide, net, x, mask)
    assert counter.calls == 1  # the guide: f over all of x in one call; the model replayed on it: none
    elbo = Trace_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(7)
    with_record = elbo.loss(model, guide, net, x, mask, record=Record())
    pyro.set_rng_seed(7)
    counter.calls = 0
    without = elbo.loss(models.MODELS["srnn"].model, guide, net, x, mask)  # no record: the model steps f
    assert counter.calls == 1 + x.shape[1]
    assert with_record == pytest.approx(without, rel=1e-6)


def test_the_model_steps_d_itself_from_where_x_leaves_the_data():
    """x drawn (uncondition) on the guide's z with the record: d_2.. follow the drawn x, as in a model run alone."""
    config, model, guide, net = build("srnn", "real", 4, "steps")
    x, mask = make_data("real", dim=4)
    counter = CallCounter(net.rnn)
    record = Record()
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(net, x, mask, record=record)
    counter.calls = 0
    sampled = poutine.trace(poutine.uncondition(poutine.replay(model, trace=guide_trace))).get_trace(
        net, x, mask, record=record
    )
    assert counter.calls == x.shape[1]  # f's state at d_1 in one call, then one step for each later d_t
    values = {n: s["value"] for n, s in sampled.nodes.items() if n[:2] in ("x_", "z_")}
    alone = poutine.trace(poutine.condition(model, data=values)).get_trace(net, x, mask)
    sampled.compute_log_prob(), alone.compute_log_prob()
    for name in values:
        assert torch.allclose(sampled.nodes[name]["log_prob"], alone.nodes[name]["log_prob"], atol=1e-5)
    assert not torch.allclose(sampled.nodes["x_2"]["value"], x[:, 1])


def test_the_batched_form_refuses_to_run_without_the_guides_record():
    _, model, guide, net = build("srnn", "real", 4, "batched")
    x, mask = make_data("real", dim=4)
    with pytest.raises(ValueError, match="guide's record"):
        poutine.trace(model).get_trace(net, x, mask)


# ---- sampling, importance sampling, training -------------------------------------------


@pytest.mark.parametrize("kind,dim", [("handwriting", 3), ("real", 4), ("binary", 5)])
def test_samples_have_the_datas_shape_and_kind(kind, dim):
    config, model, guide, net = build("srnn-gmm", kind, dim, "steps")
    counter = CallCounter(net.rnn)
    pyro.set_rng_seed(0)
    x = generate(model, net, num=3, steps=9)
    assert x.shape == (3, 9, dim) and torch.isfinite(x).all()
    assert counter.calls == 9  # d_t stepped from each drawn x_{t-1}
    bits = x if kind == "binary" else x[..., :1] if kind == "handwriting" else None
    if bits is not None:
        assert set(bits.unique().tolist()) == {0.0, 1.0}
    assert x[..., -1].std() > 0.01  # the steps differ: each is drawn
    prime, _ = make_data(kind, dim=dim)
    primed = generate(model, net, num=2, steps=9, prime=prime[0, :4], guide=guide, tau=0.5)
    assert torch.equal(primed[:, :4], prime[0, :4].expand(2, -1, -1)) and primed.shape == (2, 9, dim)


@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_the_importance_sampled_estimate_is_above_the_elbo(scoring):
    _, model, guide, net = build("srnn", "handwriting", 3, scoring)
    x, mask = make_data("handwriting")
    pyro.set_rng_seed(0)
    figures = estimate_log_likelihood(model, guide, net, x, mask, num_samples=30, chunk_size=7)
    assert (figures["log_px"] >= figures["elbo"]).all() and (figures["log_px"] - figures["elbo"]).max() > 0.1
    assert (figures["ess"] >= 1).all() and (figures["ess"] <= 30 + 1e-6).all() and (figures["kl"] > 0).all()


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    config = make_config(
        "test",
        model="srnn-gmm",
        hidden=16,
        z_dim=4,
        x_features=8,
        enc_hidden=8,
        prior_hidden=8,
        dec_hidden=8,
        components=3,
    )
    model, guide, net = models.build(config, "handwriting", 3)
    x, mask = make_data("handwriting", batch=4, steps=12)
    loss_module = make_loss_module(config, model, guide, net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    pyro.set_rng_seed(0)
    losses = [svi_step(loss_module, optimizer, x, mask, num_sequences=4)[0] for _ in range(40)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 3.0, losses


# ---- the stepper of the particle methods ---------------------------------------------------


@pytest.mark.parametrize("scoring,cell,resq", [("batched", "lstm", True), ("steps", "gru", False)])
def test_the_steppers_weights_are_pyros_importance_weights(scoring, cell, resq):
    """Proposals drawn at every step, no resampling: sum_t log p(z_t) + log p(x_t | z_t) - log q(z_t) is
    particle_log_weights with the same seed, padding steps included (they count 0 in both)."""
    _, model, guide, net = build("srnn-gmm", "handwriting", 3, scoring, cell=cell, srnn_resq=resq)
    x, mask = make_data("handwriting")
    pyro.set_rng_seed(11)
    expected = particle_log_weights(model, guide, net, x, mask, 5)
    pyro.set_rng_seed(11)
    stepper = SRNNStepper(net, x, mask)
    state = stepper.initial_state(5)
    log_w = torch.zeros(5, x.shape[0])
    for t in range(x.shape[1]):
        proposal = stepper.proposal(t, state)
        assert proposal.batch_shape == (5, 4) and proposal.has_rsample
        z = proposal.rsample()
        log_pz, log_px, state = stepper.transition(t, state, z)
        assert log_pz.shape == log_px.shape == (5, 4) and state[0] is z
        log_w = log_w + log_pz + log_px - proposal.log_prob(z)
    assert torch.allclose(log_w.double(), expected, rtol=1e-5, atol=1e-4), (log_w, expected)
    assert proposal.log_prob(z)[:, ~mask[:, -1]].abs().max() == 0  # padding steps count nothing


def test_reorder_takes_each_sequences_particles_from_its_ancestors():
    _, _, _, net = build("srnn", "real", 4)
    x, mask = make_data("real", dim=4)
    stepper = SRNNStepper(net, x, mask)
    z = torch.randn(3, 4, net.z_dim)
    ancestors = torch.tensor([[2, 0, 1, 1], [2, 1, 1, 0], [0, 2, 1, 2]])
    (reordered,) = stepper.reorder((z,), ancestors)
    for k in range(3):
        for b in range(4):
            assert torch.equal(reordered[k, b], z[ancestors[k, b], b])


# ---- the configuration and the run scripts --------------------------------------------------


def test_the_srnn_has_its_own_guide_and_refuses_the_filtering_one():
    assert make_config("test", model="srnn").guide == "smoothing"
    _, guide, _ = models.build(make_config("test", model="srnn-gmm", guide="smoothing"), "real", 4)
    assert guide is models.MODELS["srnn"].guide
    with pytest.raises(ValueError, match="^--guide filtering does not apply to --model srnn: [^\n]*$"):
        make_config("test", model="srnn", guide="filtering")


def test_the_run_scripts_train_resume_sample_analyze_and_evaluate_an_srnn(tmp_path, small_handwriting, capsys):
    table1 = load_script("table1")
    table_dir = tmp_path / "t1"
    rows, claims = table1.main(
        [
            "--dataset",
            "hdf5",
            "--data-dir",
            small_handwriting,
            "--models",
            "srnn",
            "srnn-gmm",
            "--seeds",
            "0",
            "--max-steps",
            "2",
            "--num-samples",
            "3",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(table_dir),
            *TINY,
        ]
    )
    assert "| SRNN-GMM | >= " in capsys.readouterr().out
    assert rows["srnn"]["log_px_per_seq"] >= rows["srnn"]["elbo_per_seq"] and rows["srnn-gmm"]["ess"] >= 1
    run_dir = str(table_dir / "srnn" / "seed-0")
    load_script("svi").main(["--resume", run_dir, "--max-steps", "3"])  # goes on from its last.pt
    steps = [json.loads(line)["step"] for line in open(os.path.join(run_dir, "log.jsonl")) if '"train"' in line]
    assert steps == [1, 2, 3]
    written = load_script("sample").main(
        ["--checkpoint", run_dir, "--num", "2", "--length", "12", "--out", str(tmp_path / "samples")]
    )
    assert any(path.endswith("samples.png") for path in written)
    written = load_script("analyze").main(["--checkpoint", run_dir, "--out", str(tmp_path / "fig2")])
    kl = [float(line.split(",")[2]) for line in open(written[1]).read().splitlines()[1:]]
    assert len(kl) > 10 and min(kl) >= 0 and sum(kl) > 0
