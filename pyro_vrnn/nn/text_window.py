"""The networks of the models conditioned on text: Graves's (2013, section 5) soft window over the characters,
and a VRNN (Chung et al. 2015) or an RNN with a mixture emission that reads the text through it.

The window (Graves 2013, eqs. 46-51). With c = c_1 .. c_U the text as one-hot vectors over the alphabet,
after the recurrence's step t:

    (alpha^_t, beta^_t, kappa^_t) = W h_t + b                                  K of each          (eq. 48)
    alpha_t = exp(alpha^_t),  beta_t = exp(beta^_t),  kappa_t = kappa_{t-1} + exp(kappa^_t)        (eqs. 49-51)
    phi(t, u) = sum_k alpha_t^k exp(-beta_t^k (kappa_t^k - u)^2)                                    (eq. 46)
    w_t = sum_{u=1..U} phi(t, u) c_u                                                                  (eq. 47)

kappa_t only grows: the window's position moves forward along the text, never back. Characters past a
line's end (padding) have c_u = 0, so they add nothing to w_t, whatever their index.

The conditional VRNN (`--model cvrnn-gmm`) threads w through the paper's equations as Graves threads it
through his synthesis network: the state after step t is (h_t, c_t, kappa_t, w_t), and

    z_t | h_{t-1}, w_{t-1}       ~ N(mu_0,t, sigma_0,t^2),   [mu_0,t, sigma_0,t] = phi_prior(h_{t-1}, w_{t-1})
    x_t | z_t, h_{t-1}, w_{t-1}  ~ emission(phi_dec(phi_z(z_t), h_{t-1}, w_{t-1}))
    h_t = f(phi_x(x_t), phi_z(z_t), w_{t-1}, h_{t-1}),   then (kappa_t, w_t) = window(h_t, kappa_{t-1}, c)

and the filtering guide q(z_t | x_t, h_{t-1}, w_{t-1}) = N(phi_enc(phi_x(x_t), h_{t-1}, w_{t-1})) runs the
same recurrence, window included. w_{t-1} is a function of h_{t-1}, kappa_{t-2} and the text, so the prior
is still the paper's p(z_t | x_{<t}, z_{<t}), now also given c. The conditional RNN (`--model crnn-gmm`,
Graves's synthesis network with one LSTM layer) is the same without z.

`text_inputs` turns a batch's strings into what the programs take: `Text(chars [B, U] long, mask [B, U],
one_hot [B, U, A])`, character indices into the model's alphabet, padded, and the c_u of eq. 47, built once
per batch by `encode_texts` (the window reads them at every step of the model and of the guide).
"""

import math
from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from pyro_vrnn.data.schema import DataError
from pyro_vrnn.nn.heads import EmissionHead, NormalHead
from pyro_vrnn.nn.vrnn_networks import CELLS, cat, cell_step, mlp

WINDOW_COMPONENTS = 10  # K of Graves's window (he used 10)
# exp(kappa^) starts near this many characters a step: about ten pen points a character in the handwriting
# sets (hershey: 60-160 points for 5-14 letters), so that the window starts out moving at a plausible pace
INITIAL_PACE = 0.1


class Text(NamedTuple):
    """A batch's texts: chars [B, U] indices into the alphabet (0 at padding), mask [B, U] True at characters,
    one_hot [B, U, A] float, c_u of eq. 47: each character's one-hot vector over the alphabet, 0 at padding."""

    chars: torch.Tensor
    mask: torch.Tensor
    one_hot: torch.Tensor

    def to(self, device):
        return Text(self.chars.to(device), self.mask.to(device), self.one_hot.to(device))


def alphabet_of(texts):
    """The characters the texts use, sorted, as one string (the model's alphabet)."""
    return "".join(sorted(set("".join(texts))))


def unknown_characters(text, alphabet):
    """The characters of `text` outside `alphabet`, in order of first appearance."""
    return "".join(dict.fromkeys(c for c in text if c not in alphabet))


def encode_texts(texts, alphabet, device=None):
    """Strings -> Text: each character's index in `alphabet`, padded to the longest text (at least one), and their
    one-hot vectors (float32)."""
    index = {c: i for i, c in enumerate(alphabet)}
    longest = max([1] + [len(t) for t in texts])
    chars = torch.zeros(len(texts), longest, dtype=torch.long)
    mask = torch.zeros(len(texts), longest, dtype=torch.bool)
    for b, text in enumerate(texts):
        missing = unknown_characters(text, alphabet)
        if missing:
            raise ValueError(f"characters outside the alphabet: {missing!r}")
        chars[b, : len(text)] = torch.tensor([index[c] for c in text], dtype=torch.long)
        mask[b, : len(text)] = True
    text = Text(chars, mask, nn.functional.one_hot(chars, len(alphabet)).float() * mask[..., None])
    return text if device is None else text.to(device)


def no_text(dataset):
    """The one-line error for a data set without texts given to a model conditioned on them."""
    return DataError(
        f"{dataset.path} has no text for its lines, and the models conditioned on text need one per line; "
        "prepare it with transcriptions (IAM-OnDB: unpack ascii-all.tar.gz beside lineStrokes) or add a "
        "'text' dataset to each split (schema.py)"
    )


def text_inputs(network, dataset, indices, device=None):
    """The keyword arguments that a batch of `dataset` (these `indices`) gives the network's programs:
    {"text": Text} for a network conditioned on text, {} for every other network."""
    if not isinstance(network, ConditionalVRNN):
        return {}
    if dataset.texts is None:
        raise no_text(dataset)
    texts = [dataset.texts[int(i)] for i in indices]
    try:
        return {"text": encode_texts(texts, network.alphabet, device)}
    except ValueError as error:
        raise DataError(f"{dataset.path} {dataset.split}: {error}, which the model was not trained on") from None


class SoftWindow(nn.Module):
    """Graves's window (eqs. 46-51): h_t and kappa_{t-1} -> (kappa_t, w_t) over a batch's text."""

    def __init__(self, hidden, alphabet_size, components=WINDOW_COMPONENTS):
        super().__init__()
        self.components, self.alphabet_size = components, alphabet_size
        self.linear = nn.Linear(hidden, 3 * components)
        with torch.no_grad():
            self.linear.bias[2 * components :] = math.log(INITIAL_PACE)

    def parameters_of(self, h, kappa_prev):
        """(alpha_t, beta_t, kappa_t), each [..., K]: eqs. 48-51."""
        alpha_hat, beta_hat, kappa_hat = self.linear(h).chunk(3, dim=-1)
        return torch.exp(alpha_hat), torch.exp(beta_hat), kappa_prev + torch.exp(kappa_hat)

    @staticmethod
    def weights(alpha, beta, kappa, positions):
        """phi(t, u) = sum_k alpha^k exp(-beta^k (kappa^k - u)^2) for u in `positions` [U']: [..., U'] (eq. 46)."""
        return (alpha[..., None] * torch.exp(-beta[..., None] * (kappa[..., None] - positions) ** 2)).sum(-2)

    def forward(self, h, kappa_prev, text):
        """(kappa_t [..., K], w_t [..., B, A]) from h_t [..., B, H] and kappa_{t-1}; padding characters count
        for nothing (c_u = 0 there)."""
        if text.one_hot.shape[-1] != self.alphabet_size:
            raise ValueError(
                f"the text is encoded over {text.one_hot.shape[-1]} characters and the window reads "
                f"{self.alphabet_size}; encode it with the model's alphabet (text_inputs)"
            )
        alpha, beta, kappa = self.parameters_of(h, kappa_prev)
        positions = torch.arange(1, text.chars.shape[1] + 1, device=h.device, dtype=h.dtype)  # u = 1..U
        phi = self.weights(alpha, beta, kappa, positions)  # [..., B, U]
        one_hot = text.one_hot.to(h.dtype)  # c_u, built once per batch (encode_texts); no copy in float32
        return kappa, torch.matmul(phi.unsqueeze(-2), one_hot).squeeze(-2)  # sum_u phi(t, u) c_u (eq. 47)


class WindowState(NamedTuple):
    """The recurrence after step t: h_t, c_t (the LSTM's cell; None for a GRU), kappa_t and w_t."""

    h: torch.Tensor
    c: Optional[torch.Tensor]
    kappa: torch.Tensor
    w: torch.Tensor


class ConditionalVRNN(nn.Module):
    """All networks of a model conditioned on text: the VRNN's (latent=True) or the RNN's, each reading
    [h_{t-1}, w_{t-1}] where the unconditional one reads h_{t-1}, and the window. Same constructor as
    vrnn_networks.VRNN; the alphabet is config.alphabet (set from the training texts)."""

    def __init__(self, config, kind, x_dim, latent, conditional_prior, emission, vocabulary_size=None):
        super().__init__()
        c = config
        if kind == "tokens" or vocabulary_size is not None:
            raise ValueError(f"{c.model} reads text beside continuous data; token data take rnn, vrnn or srnn models")
        if not c.alphabet:
            raise ValueError("a model conditioned on text needs config.alphabet: the characters of its training texts")
        if c.cell not in CELLS:
            raise ValueError(f"unknown --cell {c.cell!r}; choose one of {', '.join(CELLS)}")
        self.kind, self.x_dim, self.z_dim, self.hidden = kind, x_dim, c.z_dim, c.hidden
        self.latent, self.conditional_prior, self.cell = latent, True, c.cell
        self.alphabet = c.alphabet
        context = c.hidden + len(c.alphabet)  # [h_{t-1}, w_{t-1}]
        self.phi_x = mlp(x_dim, c.x_features, c.mlp_layers)
        rnn_input, dec_input = c.x_features + len(c.alphabet), context
        if latent:
            self.phi_z = mlp(c.z_dim, c.z_features, c.mlp_layers)
            self.encoder = nn.Sequential(
                mlp(c.x_features + context, c.enc_hidden, c.mlp_layers), NormalHead(c.enc_hidden, c.z_dim, c.min_scale)
            )
            self.prior_net = nn.Sequential(
                mlp(context, c.prior_hidden, c.mlp_layers), NormalHead(c.prior_hidden, c.z_dim, c.min_scale)
            )
            rnn_input += c.z_features
            dec_input += c.z_features
        head = EmissionHead(c.dec_hidden, kind, x_dim, emission, c.components, c.min_scale, c.mixture)
        self.decoder = nn.Sequential(mlp(dec_input, c.dec_hidden, c.mlp_layers), head)
        self.rnn = CELLS[c.cell](rnn_input, c.hidden)
        self.window = SoftWindow(c.hidden, len(c.alphabet), c.window_components)

    def initial_state(self, x, text):
        """h_0 = 0 (c_0 = 0), kappa_0 and w_0 the window read from h_0 (kappa_{-1} = 0): what the first
        step sees of the text."""
        h = x.new_zeros(x.shape[0], self.hidden)
        kappa, w = self.window(h, h.new_zeros(h.shape[:-1] + (self.window.components,)), text)
        return WindowState(h, h if self.cell == "lstm" else None, kappa, w)

    @staticmethod
    def context(state):
        return cat(state.h, state.w)  # [h_{t-1}, w_{t-1}]

    def prior(self, state):
        """p(z_t | h_{t-1}, w_{t-1})."""
        return self.prior_net(self.context(state))

    def posterior(self, phi_x_t, state):
        """q(z_t | x_t, h_{t-1}, w_{t-1})."""
        return self.encoder(cat(phi_x_t, self.context(state)))

    def emission(self, z_t, state):
        """p(x_t | z_t, h_{t-1}, w_{t-1}); p(x_t | h_{t-1}, w_{t-1}) for the RNN (z_t None)."""
        context = self.context(state)
        return self.decoder(context if z_t is None else cat(self.phi_z(z_t), context))

    def step(self, phi_x_t, z_t, state, text):
        """h_t = f(phi_x(x_t), phi_z(z_t), w_{t-1}, h_{t-1}) (no z_t for the RNN), then the window reads h_t."""
        inputs = cat(phi_x_t, state.w) if z_t is None else cat(phi_x_t, self.phi_z(z_t), state.w)
        h, c = cell_step(self.rnn, inputs, state.h, state.c)
        kappa, w = self.window(h, state.kappa, text)
        return WindowState(h, c, kappa, w)


def training_alphabet(splits):
    """The alphabet of a model conditioned on text: the characters of the data set's texts, those of every split
    (the texts are given, not modelled: a character that only a test line has gets its own, untrained, input
    rather than making that line unreadable)."""
    for dataset in splits:
        if dataset.texts is None:
            raise no_text(dataset)
    return alphabet_of([text for dataset in splits for text in dataset.texts])
