"""Handwriting synthesis: a model conditioned on text (models/conditional.py) writes a given text (Graves 2013,
section 5), one step at a time from the network's equations:

    z_t ~ p(z_t | h_{t-1}, w_{t-1})     (the conditional VRNN; the RNN has no z)
    x_t ~ p_B(x_t | z_t, h_{t-1}, w_{t-1})
    h_t = f(phi_x(x_t), phi_z(z_t), w_{t-1}, h_{t-1}),   (kappa_t, w_t) = window(h_t, kappa_{t-1}, c)

p_B is the emission with Graves's sampling bias B >= 0 (eqs. 61-62): mixture weights softmax((1 + B) pi^) and
standard deviations exp(sigma^ - B), sigma / e^B; B = 0 is the model itself, larger B neater and less varied.

A line ends where the window has passed its last character, Graves's criterion: phi(t, U + 1) > phi(t, u) for
every u <= U, the U + 1-th position being past the text. Each line stops there on its own (its steps after are
not drawn); `max_steps` caps the lines that never get there.

Priming (Graves 2013, section 5.3): to write in the style of a real line x* of text c*, the guide runs over x*
with the text c* + " " + c (the RNN runs its own recurrence over it), and writing goes on from the state where
x* ends, with the window then at the start of c.
"""

from typing import NamedTuple

import numpy as np
import pyro.poutine as poutine
import torch

from pyro_vrnn.data.text import random_text
from pyro_vrnn.distributions.emissions import StrokeMixture
from pyro_vrnn.infer.record import Record
from pyro_vrnn.nn.text_window import encode_texts, unknown_characters
from pyro_vrnn.report.sampling import to_data_units


class Written(NamedTuple):
    """What `write` returns: lines [N, T, D] (normalized units) and each line's length [N] (steps until the
    window passed the end, or max_steps), and whether it ended so (finished [N] bool)."""

    x: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor


def biased(emission, bias):
    """Graves's sampling bias on a handwriting emission: logits * (1 + B), scales / exp(B)."""
    if bias == 0:
        return emission
    if not isinstance(emission, StrokeMixture):
        raise ValueError(f"the sampling bias is defined for handwriting emissions, not a {type(emission).__name__}")
    return StrokeMixture(
        emission.pen_logits,
        emission.logits * (1 + bias),
        emission.loc,
        emission.scale * torch.exp(torch.tensor(-float(bias))),
        emission.corr,
    )


def past_the_end(window, h, kappa_prev, text):
    """[B] bool: phi(t, U_b + 1) > phi(t, u) for every u <= U_b, U_b the length of text b (Graves's stop)."""
    alpha, beta, kappa = window.parameters_of(h, kappa_prev)
    lengths = text.mask.sum(-1)  # U_b
    positions = torch.arange(1, text.chars.shape[1] + 2, device=h.device, dtype=h.dtype)  # u = 1..U + 1
    phi = window.weights(alpha, beta, kappa, positions)  # [B, U + 1]
    after = phi.gather(-1, lengths[:, None]).squeeze(-1)  # phi(t, U_b + 1)
    inside = torch.where(positions[:-1] <= lengths[:, None], phi[..., :-1], phi.new_tensor(-float("inf")))
    return after > inside.max(-1).values


@torch.no_grad()
def primed_state(net, guide, line, text):
    """The state after a real line [T, D] (normalized), its text `Text` of one or more rows: the guide's, whose
    draws of z_t it also feeds its recurrence (the RNN: its recurrence on the line)."""
    x = line[None].expand(text.chars.shape[0], -1, -1)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if net.latent:
        record = Record()
        poutine.trace(guide).get_trace(net, x, mask, record=record, text=text)
        return record.states[-1]
    state = net.initial_state(x, text)
    for t in range(x.shape[1]):
        state = net.step(net.phi_x(x[:, t]), None, state, text)
    return state


@torch.no_grad()
def write(net, texts, max_steps, bias=0.0, guide=None, prime=None, prime_text=None):
    """Write each of `texts` (strings in the network's alphabet) once; returns `Written`.

    prime, prime_text: a real line [P, D] (normalized) and what it says, to write in its style (`guide`: the
    model's guide, for the conditional VRNN)."""
    device = next(net.parameters()).device
    if prime is not None:
        texts = [f"{prime_text} {text}" for text in texts]
    text = encode_texts(texts, net.alphabet, device)
    num = len(texts)
    shape = torch.zeros(num, 1, net.x_dim, device=device)
    if prime is not None:
        state = primed_state(net, guide, torch.as_tensor(prime, dtype=torch.float32, device=device), text)
    else:
        state = net.initial_state(shape, text)
    x = torch.zeros(num, max_steps, net.x_dim, device=device)
    lengths = torch.full((num,), max_steps, dtype=torch.long, device=device)
    finished = torch.zeros(num, dtype=torch.bool, device=device)
    for t in range(max_steps):
        z_t = net.prior(state).sample() if net.latent else None
        x_t = biased(net.emission(z_t, state), bias).sample()
        x[:, t] = torch.where(finished[:, None], x.new_zeros(()), x_t)
        new_state = net.step(net.phi_x(x_t), z_t, state, text)
        done = past_the_end(net.window, new_state.h, state.kappa, text) & ~finished
        lengths = torch.where(done, torch.full_like(lengths, t + 1), lengths)
        finished = finished | done
        state = new_state
        if finished.all():
            break
    return Written(x[:, : int(lengths.max())], lengths, finished)


STEPS_PER_CHARACTER = 40  # the default step cap a character: hershey writes ~10 points a character, IAM-OnDB ~25


def check_text(text, alphabet, longest):
    """One line for a text the model cannot write: characters outside its alphabet, or more than `longest`."""
    missing = unknown_characters(text, alphabet)
    if missing:
        raise ValueError(
            f"the model never saw the character(s) {', '.join(repr(c) for c in missing)} in training; "
            f"it writes only {alphabet!r}"
        )
    if not text:
        raise ValueError("nothing to write: the text is empty")
    if longest and len(text) > longest:
        raise ValueError(
            f"the text has {len(text)} characters; this model was trained on lines of at most {longest}: "
            "write it in pieces of that length"
        )


def write_lines(run, texts, bias=0.0, max_steps=None, prime=None, prime_text=None):
    """`write` for a rebuilt run (figures.Run): each line in data units, [T_i, D] numpy, cut where it ended; and
    whether each ended by the window passing its text (not by the step cap)."""
    for text in texts:
        check_text(text, run.vrnn.alphabet, run.config.longest_text)
    max_steps = max_steps or STEPS_PER_CHARACTER * (max(len(t) for t in texts) + 1)
    written = write(run.vrnn, texts, max_steps, bias, run.guide, prime, prime_text)
    x = to_data_units(written.x, run.info)
    return [x[i, :n] for i, n in enumerate(written.lengths.tolist())], written.finished.tolist()


def phrases(alphabet, num, seed=0, longest=0):
    """`num` short phrases of the embedded vocabulary (data/text.py) in the characters of `alphabet` (and at most
    `longest` of them, if given): what the end-of-run figure of a model conditioned on text writes."""
    rng = np.random.default_rng(seed)
    lines = []
    while len(lines) < num:
        line = "".join(c for c in " ".join(random_text(rng)) if c in alphabet)[: longest or None].strip()
        lines.append(line or alphabet.strip()[:5] or "a")
    return lines
