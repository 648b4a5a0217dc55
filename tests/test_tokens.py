"""Tests of token data (kind "tokens"): the categorical emission (distributions.TokenCategorical) against
log-softmax written out here, the RNN's ELBO against a hand computation, masks that change nothing, an RNN
that learns a deterministic sequence, and the schema's vocabulary (schema.py, byo.py, tokens.py)."""

import dataclasses
import math

import h5py
import numpy as np
import pyro
import pytest
import torch
from conftest import small_config
from pyro.infer import Trace_ELBO

from pyro_vrnn import data, models
from pyro_vrnn.data import DataError, SequenceDataset, validate_h5
from pyro_vrnn.data.schema import write_h5
from pyro_vrnn.data.tokens import decode, encode
from pyro_vrnn.distributions.token_categorical import TokenCategorical
from pyro_vrnn.infer.record import Record

TOKEN_MODELS = ("rnn-gauss", "vrnn-i-gauss", "vrnn-gauss", "srnn")  # the char-RNN baseline, VRNN-I, VRNN, SRNN


def build_tokens(name, vocabulary_size, scoring="batched", **kw):
    torch.manual_seed(1)
    config = dataclasses.replace(small_config(name, scoring=scoring), **kw)
    model, guide, net = models.build(config, "tokens", 1, vocabulary_size)
    return config, model, guide, net


def token_batch(vocabulary_size=6, batch=4, steps=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocabulary_size, (batch, steps, 1), generator=g).float()
    lengths = torch.tensor([steps, steps - 3, 1, steps - 1][:batch])
    return x, torch.arange(steps)[None, :] < lengths[:, None]


# ---------------------------------------------------------------- the emission


def test_token_categorical_log_prob_is_log_softmax_written_out():
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64)
    x = torch.tensor([[2.0], [1.0]], dtype=torch.float64)
    actual = TokenCategorical(logits).log_prob(x)
    expected = torch.tensor(
        [
            0.5 - math.log(math.exp(1.0) + math.exp(-2.0) + math.exp(0.5)),
            3.0 - math.log(math.exp(0.0) + math.exp(3.0) + math.exp(-1.0)),
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(actual, expected, rtol=1e-12)
    # values broadcast against the batch: a particle dim in front of the sequences
    many = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1).expand(3, 2, 1)
    table = torch.log_softmax(logits, -1)
    assert torch.allclose(TokenCategorical(logits).log_prob(many), table.T, rtol=1e-12)
    # exact for extreme logits (no probabilities underflow to log 0)
    assert TokenCategorical(torch.tensor([0.0, -200.0])).log_prob(torch.tensor([1.0])).item() == pytest.approx(-200)


def test_token_categorical_samples_temperature_and_validation():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    d = TokenCategorical(logits)
    assert d.event_shape == (1,) and d.batch_shape == ()
    torch.manual_seed(0)
    draws = d.sample((20000,))
    assert draws.shape == (20000, 1) and draws.dtype == torch.float32
    frequencies = torch.bincount(draws[:, 0].long(), minlength=3).float() / 20000
    assert torch.allclose(frequencies, torch.tensor([0.5, 0.3, 0.2]), atol=0.015)  # 4 standard errors
    cold = d.with_temperature(0.5)  # p^2 renormalized
    p2 = torch.tensor([0.25, 0.09, 0.04]) / 0.38
    assert torch.allclose(cold.log_prob(torch.tensor([[0.0], [1.0], [2.0]])), p2.log(), atol=1e-6)
    assert d.expand((4, 2)).log_prob(torch.zeros(4, 2, 1)).shape == (4, 2)
    checked = TokenCategorical(logits, validate_args=True)
    for bad in (1.5, -1.0, 3.0):  # not a whole number, below 0, beyond V - 1
        with pytest.raises(ValueError):
            checked.log_prob(torch.tensor([bad]))


# ---------------------------------------------------------------- the models


def hand_rnn_log_likelihood(net, x, mask):
    """sum_t mask_t log softmax(phi_dec(h_{t-1}))[x_t], h_t = f(phi_x(x_t), h_{t-1}), one sequence at a time."""
    total = torch.zeros(())
    for b in range(x.shape[0]):
        h = c = torch.zeros(1, net.hidden)
        for t in range(int(mask[b].sum())):
            head = net.decoder(h)  # the decoder's last module returns the distribution: read its logits
            total = total + torch.log_softmax(head.logits, -1)[0, int(x[b, t, 0])]
            features = net.phi_x.rest(net.phi_x.embedding.weight[int(x[b, t, 0])] + net.phi_x.bias)[None]
            h, c = net.rnn(features, (h, c))
    return total


@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_rnn_elbo_is_the_hand_computed_log_likelihood(scoring):
    config, model, guide, net = build_tokens("rnn-gauss", 6, scoring)
    x, mask = token_batch()
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, net, x, mask, record=Record())
    expected = hand_rnn_log_likelihood(net, x, mask)
    assert torch.allclose(loss, -expected, rtol=1e-5), (loss, expected)


@pytest.mark.parametrize("name", TOKEN_MODELS)
@pytest.mark.parametrize("scoring", ["batched", "steps"])
def test_padding_changes_nothing(name, scoring):
    """Any token ids in the padded steps: the same loss, the same random draws; and the two forms agree."""
    config, model, guide, net = build_tokens(name, 6, scoring)
    x, mask = token_batch()
    garbage = torch.where(mask[..., None], x, torch.randint(0, 6, x.shape).float())
    assert not torch.equal(garbage, x)
    losses = []
    for batch in (x, garbage):
        pyro.set_rng_seed(7)
        losses.append(
            Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, net, batch, mask, record=Record())
        )
    assert torch.equal(losses[0], losses[1])
    other = build_tokens(name, 6, "steps" if scoring == "batched" else "batched")[1]
    pyro.set_rng_seed(7)
    loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(other, guide, net, x, mask, record=Record())
    assert torch.allclose(loss, losses[0], rtol=1e-5)


def test_padded_batch_equals_its_sequences_alone():
    config, model, guide, net = build_tokens("rnn-gauss", 6)
    x, mask = token_batch()
    elbo = Trace_ELBO(max_plate_nesting=1)
    batch_loss = elbo.differentiable_loss(model, guide, net, x, mask, record=Record())
    alone = sum(
        elbo.differentiable_loss(model, guide, net, x[b : b + 1, : int(n)], mask[b : b + 1, : int(n)], record=Record())
        for b, n in enumerate(mask.sum(1))
    )
    assert torch.allclose(batch_loss, alone, rtol=1e-5)


def test_rnn_learns_a_deterministic_token_sequence():
    """The cycle 0 1 2 3 4 0 1 ...: every token follows from the last, so the loss falls to near 0 nats."""
    config, model, guide, net = build_tokens("rnn-gauss", 5, hidden=16, x_features=8, dec_hidden=16)
    x = (torch.arange(12) % 5).float().view(1, 12, 1).expand(8, 12, 1)
    mask = torch.ones(8, 12, dtype=torch.bool)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.03)
    elbo = Trace_ELBO(max_plate_nesting=1)
    first = None
    for _ in range(150):
        optimizer.zero_grad()
        loss = elbo.differentiable_loss(model, guide, net, x, mask, record=Record()) / mask.sum()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
    assert first > 1.0  # about log 5 = 1.61 nats a token at the start
    assert loss.item() < 0.02, loss.item()


@pytest.mark.parametrize("name", TOKEN_MODELS[1:])
def test_models_generate_tokens_of_the_vocabulary(name):
    config, model, guide, net = build_tokens(name, 6, "steps")
    from pyro_vrnn.report.sampling import generate

    prime = torch.tensor([[2.0], [3.0]])
    x = generate(models.MODELS[name].model, net, 3, 9, prime=prime, guide=guide, tau=0.8)
    assert x.shape == (3, 9, 1)
    assert torch.equal(x[:, :2], prime.expand(3, 2, 1))
    assert ((x == x.round()) & (x >= 0) & (x < 6)).all()


# ---------------------------------------------------------------- the schema


def write_tokens(path, splits, vocabulary, **attrs):
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "tokens"
        if vocabulary is not None:
            f.attrs["vocabulary"] = vocabulary
        for key, value in attrs.items():
            f.attrs[key] = value
        for split in ("train", "valid", "test"):
            seqs = splits[split]
            group = f.create_group(split)
            group["data"] = np.concatenate(seqs).reshape(-1, 1) if seqs else np.zeros((0, 1), np.int64)
            group["offsets"] = np.cumsum([0] + [len(s) for s in seqs])


def token_splits():
    return {"train": [np.array([0, 1, 2, 1]), np.array([2, 2])], "valid": [np.array([1, 0])], "test": []}


def test_a_tokens_file_of_ones_own_loads_with_its_vocabulary(tmp_path, capsys):
    path = str(tmp_path / "mine.h5")
    write_tokens(path, token_splits(), ["a", "b", "c"])
    loaded = data.load("hdf5", data_dir=path, cache_dir=str(tmp_path / "cache"))
    assert "dim 1 (tokens, 3 tokens)" in capsys.readouterr().out
    train = loaded["train"]
    assert (train.kind, train.dim, train.vocabulary) == ("tokens", 1, ["a", "b", "c"])
    assert train[0].tolist() == [[0.0], [1.0], [2.0], [1.0]]
    assert decode(train[0], train.vocabulary) == "abcb"
    # the writer of the built-in sets stores the same attribute
    write_h5(
        str(tmp_path / "built.h5"),
        token_splits(),
        "tokens",
        "built",
        [0],
        [1],
        "t",
        vocabulary=["e2e4", "d2d4", "g1f3"],
    )
    built = SequenceDataset(str(tmp_path / "built.h5"), "train")
    assert built.vocabulary == ["e2e4", "d2d4", "g1f3"] and decode(built[0], built.vocabulary) == "e2e4 d2d4 g1f3 d2d4"


@pytest.mark.parametrize(
    "splits_change,vocabulary,match",
    [
        (
            {"valid": [np.array([1.0, 2.5])]},
            ["a", "b", "c"],
            r"valid sequence 0 \(row 1\) holds 2.5, a token outside the vocabulary",
        ),
        ({"train": [np.array([0, -1])]}, ["a", "b", "c"], r"holds -1, a token outside the vocabulary"),
        (
            {},
            ["a", "b"],
            r"train sequence 0 \(row 2\) uses token id 2, but the vocabulary has only 2 tokens.*add every",
        ),
        ({}, None, "kind 'tokens' has no attribute vocabulary"),
        ({}, ["a", "b", "a"], "has 'a' twice"),
        ({}, ["a", "", "c"], "an empty token at id 1"),
    ],
)
def test_token_file_errors_are_one_line(tmp_path, splits_change, vocabulary, match):
    path = str(tmp_path / "bad.h5")
    write_tokens(path, {**token_splits(), **splits_change}, vocabulary)
    with pytest.raises(DataError, match=match) as error:
        validate_h5(path)
    assert "\n" not in str(error.value)


def test_token_file_needs_one_column_and_a_vocabulary_only_for_tokens(tmp_path):
    path = str(tmp_path / "wide.h5")
    with h5py.File(path, "w") as f:
        f.attrs["kind"], f.attrs["vocabulary"] = "tokens", ["a", "b"]
        for split in ("train", "valid", "test"):
            f.create_group(split)["data"] = np.zeros((2, 2))
            f[split]["offsets"] = [0, 2]
    with pytest.raises(DataError, match="needs D = 1"):
        validate_h5(path)
    with h5py.File(path, "a") as f:
        f.attrs["kind"] = "real"
    with pytest.raises(DataError, match="vocabulary is set on kind 'real'"):
        validate_h5(path)


def test_encode_reads_characters_or_words_and_names_an_unknown_token():
    chars = list(" abc")
    assert encode("ab ca", chars)[:, 0].tolist() == [1, 2, 0, 3, 1]
    moves = ["e2e4", "e7e5", "g1f3"]
    assert encode("e2e4 e7e5  g1f3", moves)[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"token 'd' \(at position 2\) is not in the model's vocabulary of 4"):
        encode("abd", chars)


# ---------------------------------------------------------------- next-token prediction


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_next_token_log_probs_add_up_to_the_exact_log_likelihood(name):
    """The RNN's predictive is exact; a latent model whose z reaches nothing (its weights from z set to 0) has
    p(x_t | x_{<t}) = p(x_t | z_t, x_{<t}) for every z, so the filter's estimate must equal log p(x | z) too."""
    from pyro_vrnn.infer.next_token import next_token_predictions
    from pyro_vrnn.infer.objectives import elbo_terms

    config, model, guide, net = build_tokens(name, 6, "steps")
    spec = models.MODELS[name]
    if spec.latent:
        with torch.no_grad():
            if name == "srnn":  # the decoder reads [z_t, d_t]: its weights on z_t
                net.decoder[0][0].weight[:, : config.z_dim] = 0
            else:  # phi_z(z) = ReLU(0) = 0 feeds the decoder and the recurrence
                for p in net.phi_z.parameters():
                    p.zero_()
    x, mask = token_batch()
    log_probs, predictions = next_token_predictions(net, spec.latent, x, mask, num_particles=4)
    log_likelihood, _ = elbo_terms(model, guide, net, x, mask)
    assert torch.allclose(log_probs.sum(1).float(), log_likelihood, rtol=1e-5)
    assert (log_probs[~mask] == 0).all() and (predictions[~mask] == -1).all()
    assert ((predictions[mask] >= 0) & (predictions[mask] < 6)).all()


def test_next_token_filter_of_a_latent_model_is_a_probability_per_step():
    """With z in use the filter's predictive is a distribution over the V tokens at each step: scoring every
    token v at step 1 (one sequence per v) gives probabilities that sum to 1."""
    from pyro_vrnn.infer.next_token import next_token_predictions

    config, model, guide, net = build_tokens("vrnn-gauss", 5, "steps")
    for p in net.parameters():  # larger weights: z matters
        p.data.normal_(0, 0.5)
    x = torch.arange(5).float().view(5, 1, 1)
    pyro.set_rng_seed(0)
    log_probs, _ = next_token_predictions(net, True, x, torch.ones(5, 1, dtype=torch.bool), num_particles=64)
    # each sequence draws its own particles: the sum is 1 up to their Monte Carlo error
    assert log_probs[:, 0].exp().sum().item() == pytest.approx(1.0, abs=0.05)


class ToyTokenForward:
    """A bootstrap filter's model of two tokens: z_t ~ N(0, 1), p(x_t = 0 | z_t) = sigmoid(2 c[b, t] z_t); the
    state sums the z (it is what resampling moves)."""

    def __init__(self, c):
        self.c = c  # [B, T]

    def initial_state(self, num_particles):
        return (self.c.new_zeros(num_particles, self.c.shape[0]),)

    def propose(self, t, state):
        z = torch.randn(state[0].shape)
        logits = torch.stack([self.c[:, t] * z, -self.c[:, t] * z], -1)
        return z, torch.distributions.Categorical(logits=logits)

    def advance(self, t, state, z):
        return (state[0] + z,)


def test_next_token_filter_resamples_only_before_a_real_step():
    """The bootstrap filter resamples as smc.py's does (smc.resampling_step): when the ESS is below K/2 and the
    sequence's next step is real. Sequence 1 ends at step 3 with weights spread at that step (c = 6): resampling
    there would change nothing of its own and would draw random numbers, which shifts every later draw of sequence
    0. So sequence 0's predictions are, to the bit, those of the same batch where sequence 1's last step is flat."""
    from pyro_vrnn.infer.next_token import _bootstrap

    x, mask = torch.zeros(2, 8, 1), torch.tensor([[True] * 8, [True] * 3 + [False] * 5])
    spread, flat = torch.full((2, 8), 0.3), torch.full((2, 8), 0.3)
    spread[1, 2] = 6.0
    runs = {}
    for name, c in (("spread", spread), ("flat", flat)):
        torch.manual_seed(0)
        runs[name] = _bootstrap(ToyTokenForward(c), x, mask, num_particles=32)[0]
    assert torch.equal(runs["spread"][0], runs["flat"][0])
    assert not torch.equal(runs["spread"][1], runs["flat"][1])  # its own last step differs: the test can tell
