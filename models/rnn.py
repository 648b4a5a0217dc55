"""The RNN baselines of Table 1 (RNN-Gauss, RNN-GMM) as a Pyro program with no latent variables.

    x_t | h_{t-1}  ~ emission(theta_t),   theta_t = phi_dec(h_{t-1})
    h_t            = f(phi_x(x_t), h_{t-1})

All randomness is in the emission, so log p(x) = sum_t log p(x_t | x_{<t}) is exact, the ELBO with
the empty guide equals it, and no guide is needed. `rnn_model` runs one step at a time, as written
above, and generates; `rnn_model_batched` computes the same log-density with the emission of every
step in one network call (models/vrnn.py explains the two forms).
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import step_masks, sum_over_steps


def rnn_model(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """Same arguments as `models.vrnn.vrnn_model`; kl_scale and record are accepted and unused (no z)."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    state = vrnn.initial_state(x)  # h_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]):
                x_t = pyro.sample(f"x_{t + 1}", vrnn.emission(None, state.h), obs=x[:, t])  # p(x_t | h_{t-1})
            state = vrnn.step(vrnn.phi_x(x_t), None, state)  # h_t = f(phi_x(x_t), h_{t-1})


def rnn_model_batched(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """`rnn_model` with the emission of every step scored in one call (`VRNN.emission_log_prob`).

    With x observed, h_1..h_T depend on the data alone: the recurrence runs first, then
    log p(x_t | h_{t-1}) of all steps is one call of phi_dec, observed as one factor per sequence.
    """
    batch, steps, _ = x.shape
    phi_x = vrnn.features(x, mask).unbind(1)  # phi_x(x_t) of every step in one call, as steps
    state = vrnn.initial_state(x)  # h_0 = 0
    h_prev = []
    for t in range(steps):
        h_prev.append(state.h)
        state = vrnn.step(phi_x[t], None, state)  # h_t = f(phi_x(x_t), h_{t-1})
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        log_px = vrnn.emission_log_prob(None, torch.stack(h_prev), x)  # log p(x_t | h_{t-1}), [T, B]
        pyro.factor("x", sum_over_steps(log_px, mask))  # sum_t log p(x_t | h_{t-1}), padding masked out
