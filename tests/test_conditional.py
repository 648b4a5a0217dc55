"""The models conditioned on text (models/conditional.py, guides/text_filtering.py, pyro_vrnn/nn/text_window.py):
Graves's window against a hand computation, its position only moving forward, the conditional ELBO against one written
out step by step, a loss that falls, and a run through training, resume and evaluation."""

import math

import numpy as np
import pyro
import pytest
import torch
from conftest import make_data, small_config
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from test_elbo import diag_normal_log_density, emission_log_density, lstm_cell, normal_params, relu_linear

from pyro_vrnn import data as datasets, models
from pyro_vrnn.data.schema import DataError, write_h5
from pyro_vrnn.infer.evaluate import evaluate_checkpoint
from pyro_vrnn.infer.objectives import elbo_terms
from pyro_vrnn.infer.record import Record
from pyro_vrnn.nn.text_window import SoftWindow, Text, encode_texts, text_inputs
from pyro_vrnn.train.loop import train

ALPHABET = " abc"
TEXTS = ["ab c", "a", "cab", "bb"]


def build(name, scoring="batched"):
    torch.manual_seed(1)
    config = small_config(name, alphabet=ALPHABET, window_components=2, scoring=scoring)
    model, guide, net = models.build(config, "handwriting", 3)
    for p in net.parameters():  # larger weights than the default init: every term matters
        p.data.normal_(0, 0.4)
    return config, model, guide, net


def hand_window(window, h, kappa_prev, chars, lengths):
    """(kappa_t, w_t) of eqs. 46-51 with explicit loops over sequences, characters and components."""
    out = h @ window.linear.weight.T + window.linear.bias
    k = window.components
    alpha, beta, kappa = out[:, :k].exp(), out[:, k : 2 * k].exp(), kappa_prev + out[:, 2 * k :].exp()
    w = torch.zeros(h.shape[0], window.alphabet_size)
    for b in range(h.shape[0]):
        for u in range(1, lengths[b] + 1):
            phi = sum(alpha[b, j] * torch.exp(-beta[b, j] * (kappa[b, j] - u) ** 2) for j in range(k))
            w[b, chars[b][u - 1]] += phi
    return kappa, w


def test_window_equals_hand_computation_and_ignores_padding():
    torch.manual_seed(0)
    window = SoftWindow(hidden=5, alphabet_size=4, components=3)
    for p in window.parameters():
        p.data.normal_(0, 0.5)
    h, kappa_prev = torch.randn(2, 5), torch.tensor([[0.5, 1.0, 2.0], [3.0, 0.0, 1.5]])
    text = encode_texts(["abca", "cb"], "abcd")
    kappa, w = window(h, kappa_prev, text)
    expected_kappa, expected_w = hand_window(window, h, kappa_prev, [[0, 1, 2, 0], [2, 1]], [4, 2])
    assert torch.allclose(kappa, expected_kappa) and torch.allclose(w, expected_w, atol=1e-6)
    # phi itself, for one sequence and position, from the numbers: alpha e^{-beta (kappa - u)^2}
    out = window.linear(h).detach()
    a, b_, k = out[0, :3].exp(), out[0, 3:6].exp(), kappa[0].detach()
    phi_2 = sum(float(a[j]) * math.exp(-float(b_[j]) * (float(k[j]) - 2) ** 2) for j in range(3))
    assert math.isclose(float(SoftWindow.weights(a, b_, k, torch.tensor([2.0]))), phi_2, rel_tol=1e-5)
    # what padding holds changes nothing: the second line's padded characters point elsewhere, and their c_u is 0
    chars = text.chars.clone()
    chars[1, 2:] = 3
    assert text.one_hot[1, 2:].abs().sum() == 0
    other = Text(chars, text.mask, torch.nn.functional.one_hot(chars, 4).float() * text.mask[..., None])
    assert torch.equal(window(h, kappa_prev, other)[1], w)


def test_the_text_one_hot_built_once_is_the_one_each_step_built():
    """encode_texts builds c_u once per batch; the window reads it at every step. Its w_t is, to the bit, what the
    window gave when it built the one-hot from chars and mask at each step (for a particle dim too, [K, B, H])."""
    torch.manual_seed(1)
    window = SoftWindow(hidden=5, alphabet_size=4, components=3)
    text = encode_texts(["abca", "cb", "d"], "abcd")
    built_each_step = torch.nn.functional.one_hot(text.chars, 4).float() * text.mask[..., None]
    assert torch.equal(text.one_hot, built_each_step) and text.one_hot.dtype == torch.float32
    h, kappa_prev = torch.randn(2, 3, 5), torch.rand(2, 3, 3)
    alpha, beta, kappa = window.parameters_of(h, kappa_prev)
    phi = window.weights(alpha, beta, kappa, torch.arange(1.0, 5.0))
    kappa_w, w = window(h, kappa_prev, text)
    assert torch.equal(kappa_w, kappa) and torch.equal(w, torch.matmul(phi.unsqueeze(-2), built_each_step).squeeze(-2))
    with pytest.raises(ValueError, match="encode it with the model's alphabet"):
        window(h, kappa_prev, encode_texts(["ab"], "abc"))


def test_kappa_only_moves_forward():
    config, model, guide, net = build("cvrnn-gmm")
    x, mask = make_data("handwriting", steps=12)
    text = encode_texts(TEXTS, ALPHABET)
    record = Record()
    guide(net, x, mask, record=record, text=text)
    kappas = torch.stack([net.initial_state(x, text).kappa] + [s.kappa for s in record.states])  # [T + 1, B, K]
    assert (kappas[1:] > kappas[:-1]).all()
    assert (kappas[0] > 0).all()


def hand_conditional_elbo(net, x, mask, chars, lengths, analytic_kl=False):
    """Per-sequence ELBO of the conditional VRNN (or the exact log p(x | c) of the RNN), step by step."""
    batch, steps, _ = x.shape
    h = c = torch.zeros(batch, net.hidden)
    kappa, w = hand_window(net.window, h, torch.zeros(batch, net.window.components), chars, lengths)
    head, k = net.decoder[1], net.decoder[1].components
    total = torch.zeros(batch)
    for t in range(steps):
        m = mask[:, t].float()
        fx = relu_linear(net.phi_x, x[:, t])
        context = torch.cat([h, w], -1)
        if net.latent:
            mu_q, sigma_q = normal_params(net.encoder[1], relu_linear(net.encoder[0], torch.cat([fx, context], -1)))
            z = mu_q + sigma_q * torch.normal(torch.zeros_like(mu_q), torch.ones_like(mu_q))
            mu_p, sigma_p = normal_params(net.prior_net[1], relu_linear(net.prior_net[0], context))
            fz = relu_linear(net.phi_z, z)
            dec = relu_linear(net.decoder[0], torch.cat([fz, context], -1))
            if analytic_kl:
                kl = (torch.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5).sum(-1)
            else:
                kl = diag_normal_log_density(z, mu_q, sigma_q) - diag_normal_log_density(z, mu_p, sigma_p)
            inputs = torch.cat([fx, fz, w], -1)
        else:
            dec, kl, inputs = relu_linear(net.decoder[0], context), 0.0, torch.cat([fx, w], -1)
        total = total + m * (emission_log_density(head, "handwriting", True, k, dec, x[:, t]) - kl)
        h, c = lstm_cell(net.rnn, inputs, h, c)
        kappa, w = hand_window(net.window, h, kappa, chars, lengths)
    return total


@pytest.mark.parametrize("name", ["cvrnn-gmm", "crnn-gmm"])
@pytest.mark.parametrize("elbo_class", [Trace_ELBO, TraceMeanField_ELBO])
def test_conditional_elbo_equals_hand_computation(name, elbo_class):
    config, model, guide, net = build(name)
    x, mask = make_data("handwriting")
    text = encode_texts(TEXTS, ALPHABET)
    chars = [[ALPHABET.index(ch) for ch in t] for t in TEXTS]
    pyro.set_rng_seed(123)
    loss = elbo_class(max_plate_nesting=1).differentiable_loss(model, guide, net, x, mask, record=Record(), text=text)
    pyro.set_rng_seed(123)
    expected = hand_conditional_elbo(net, x, mask, chars, [len(t) for t in TEXTS], elbo_class is TraceMeanField_ELBO)
    assert torch.allclose(loss, -expected.sum(), rtol=1e-5, atol=1e-4), (loss, -expected.sum())
    # without the record the model runs its own recurrence: the same number
    pyro.set_rng_seed(123)
    again = elbo_class(max_plate_nesting=1).differentiable_loss(model, guide, net, x, mask, text=text)
    assert torch.allclose(again, loss, rtol=1e-5, atol=1e-4)


def test_the_text_matters():
    """Another text, same strokes: another likelihood (the window feeds the emission)."""
    config, model, guide, net = build("crnn-gmm")
    x, mask = make_data("handwriting")
    one = elbo_terms(model, guide, net, x, mask, text=encode_texts(TEXTS, ALPHABET))[0]
    other = elbo_terms(model, guide, net, x, mask, text=encode_texts(["cc", "b", "a a", "c"], ALPHABET))[0]
    assert (one - other).abs().min() > 1e-3


@pytest.mark.parametrize("name", ["cvrnn-gmm", "crnn-gmm"])
def test_a_tiny_models_loss_falls(name):
    config, model, guide, net = build(name)
    x, mask = make_data("handwriting", batch=4, steps=10)
    text = encode_texts(TEXTS, ALPHABET)
    elbo = Trace_ELBO(max_plate_nesting=1)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    pyro.set_rng_seed(0)
    losses = []
    for _ in range(40):
        loss = elbo.differentiable_loss(model, guide, net, x, mask, record=Record(), text=text)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 20, (losses[:10], losses[-10:])


SIZES = dict(hidden=8, z_dim=2, x_features=4, z_features=4, enc_hidden=4, prior_hidden=4, dec_hidden=4, components=2)


@pytest.mark.parametrize("name", ["cvrnn-gmm", "crnn-gmm"])
def test_training_resume_and_evaluation(lines_with_text, tmp_path, name):
    from pyro_vrnn.train.config import make_config

    config = make_config(
        "hdf5",
        model=name,
        data_dir=lines_with_text,
        out=str(tmp_path / "run"),
        batch_size=8,
        epochs=1,
        threads=1,
        **SIZES,
    )
    run = train(config, quiet=True)
    state = torch.load(f"{run}/last.pt", weights_only=False)
    assert state["progress"]["epoch"] == 1 and state["config"]["alphabet"]
    assert set(state["config"]["alphabet"]) >= set("the ")
    resumed = make_config("hdf5", model=name, data_dir=lines_with_text, epochs=2, threads=1, batch_size=8, **SIZES)
    train(resumed, resume=run, quiet=True)
    assert torch.load(f"{run}/last.pt", weights_only=False)["progress"]["epoch"] == 2
    summary, per_sequence = evaluate_checkpoint(run, num_samples=2)
    assert summary["exact"] == (name == "crnn-gmm")
    assert np.isfinite(per_sequence["log_px"]).all() and (per_sequence["log_px"] >= per_sequence["elbo"] - 1e-6).all()


def test_a_file_without_text_gives_one_line(tmp_path):
    config, model, guide, net = build("crnn-gmm")
    path = str(tmp_path / "plain.h5")
    write_h5(
        path,
        {s: [np.zeros((4, 3), np.float32)] for s in ("train", "valid", "test")},
        "handwriting",
        "p",
        np.zeros(3),
        np.ones(3),
        "tests",
    )
    dataset = datasets.load("hdf5", data_dir=path, verbose=False)["train"]
    with pytest.raises(DataError, match="has no text for its lines"):
        text_inputs(net, dataset, [0])


@pytest.mark.parametrize("name", ["cvrnn-gmm", "crnn-gmm"])
def test_model_and_guide_sites_match(name):
    from pyro.poutine.util import site_is_subsample
    from pyro.util import check_model_guide_match

    config, model, guide, net = build(name)
    x, mask = make_data("handwriting", steps=5)
    text = encode_texts(TEXTS, ALPHABET)
    record = Record()
    guide_trace = pyro.poutine.trace(guide).get_trace(net, x, mask, record=record, text=text)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(
        net, x, mask, record=record, text=text
    )
    check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
    latent = [
        n
        for n, s in model_trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]
    assert latent == ([f"z_{t}" for t in range(1, 6)] if name == "cvrnn-gmm" else [])


def test_two_torchrun_ranks_step_like_one_process(tmp_path):
    """The text rides with each rank's half of the batch: two ranks' averaged gradient is one process's (crnn-gmm
    samples nothing, so both compute the same loss)."""
    from test_distributed import ROOT, STEP_SCRIPT, torchrun

    script_text = (
        STEP_SCRIPT.replace("components=2)", 'components=2, alphabet=" ab")')
        .replace(
            "x[rows], mask[rows], num_sequences=100, clip=5.0)",
            "x[rows], mask[rows], num_sequences=100, clip=5.0, condition=text_of(rows))",
        )
        .replace(
            "\nloss_module = make_loss_module(",
            "\nfrom pyro_vrnn.nn.text_window import Text, encode_texts\n"
            "text = encode_texts(['ab', 'b a', 'a', 'bb', 'ab ab', ' a', 'b', 'aab'], ' ab')\n"
            "text_of = lambda rows: dict(text=Text(*(field[rows] for field in text)))\n"
            "loss_module = make_loss_module(",
        )
    )
    grads = {}
    for nproc in (1, 2):
        script = tmp_path / f"step{nproc}.py"
        script.write_text(script_text.format(root=ROOT, model="crnn-gmm", out=str(tmp_path / f"{nproc}.pt")))
        run = torchrun(nproc, str(script))
        assert run.returncode == 0, run.stderr[-3000:]
        grads[nproc] = torch.load(tmp_path / f"{nproc}.pt")["grads"]
    assert any(name.startswith("window.") for name in grads[1])
    for name, one in grads[1].items():
        assert torch.allclose(one, grads[2][name], rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize(
    "flags,says",
    [
        (dict(model="cvrnn-gmm", elbo="fivo", particles=2), "--elbo fivo needs a particle filter"),
        (dict(model="crnn-gmm", guide="smoothing"), "--guide smoothing does not apply to --model crnn-gmm"),
        (dict(model="cvrnn-gmm", window_components=0), "--window-components is 0"),
    ],
)
def test_settings_the_text_models_cannot_use_give_one_line(flags, says):
    from pyro_vrnn.train.config import make_config

    with pytest.raises(ValueError, match=says):
        make_config("hershey", **flags)
