"""Next-token prediction by a trained model of token data (characters, chess moves): the predictive distribution
p(x_t | x_{<t}) at every step, its log-probability of the token that came and its most probable token.

The RNN's is exact: p(x_t | x_{<t}) = softmax(phi_dec(h_{t-1})). A latent model's integrates over z_{<=t} given
x_{<t} alone, the guide being no use here (it has seen x_t: the VRNN's filtering guide reads x_t, the SRNN's
smoothing guide all of x). So a bootstrap particle filter runs the model forward (Gordon et al. 1993), K
particles per sequence, the prior as proposal:

    z_t^k ~ p(z_t | past^k)                                   past: h_{t-1} (VRNN), z_{t-1} and d_t (SRNN)
    p^(x_t = v | x_{<t}) = sum_k wbar_{t-1}^k p(x_t = v | z_t^k, past^k)       the predictive, every token v
    wbar_t^k proportional to wbar_{t-1}^k p(x_t | z_t^k, past^k),  resampled (systematic) when ESS < K/2
                                                                and step t + 1 is real (smc.resampling_step)

sum_t log p^(x_t | x_{<t}) is the filter's estimate of log p(x), unbiased in p (so a stochastic lower bound on
log p(x), as FIVO's); the top-1 prediction is the argmax of p^(. | x_{<t}).
"""

import math

import torch

from pyro_vrnn.infer.smc import resampling_step, take_particles
from pyro_vrnn.nn.srnn_networks import SRNN
from pyro_vrnn.nn.vrnn_networks import State


@torch.no_grad()
def next_token_predictions(net, latent, x, mask, num_particles=16):
    """(log p^(x_t | x_{<t}) [B, T], argmax_v p^(x_t = v | x_{<t}) [B, T]) on token data x [B, T, 1], mask [B, T];
    0 and -1 at padding steps. latent=False: the RNN (exact; num_particles unused)."""
    if not latent:
        return _rnn(net, x, mask)
    if isinstance(net, SRNN):
        return _bootstrap(_SRNNForward(net, x), x, mask, num_particles)
    return _bootstrap(_VRNNForward(net, x), x, mask, num_particles)


def _finish(log_probs, predictions, mask):
    log_probs = torch.stack(log_probs, 1).masked_fill(~mask, 0.0)
    return log_probs, torch.stack(predictions, 1).masked_fill(~mask, -1)


def _rnn(net, x, mask):
    phi_x = net.phi_x(x).unbind(1)
    state = net.initial_state(x)
    log_probs, predictions = [], []
    for t in range(x.shape[1]):
        predictive = torch.log_softmax(net.emission(None, state.h).logits, -1)  # [B, V]
        log_probs.append(predictive.gather(-1, x[:, t].long()).squeeze(-1))
        predictions.append(predictive.argmax(-1))
        state = net.step(phi_x[t], None, state)
    return _finish(log_probs, predictions, mask)


class _VRNNForward:
    """The VRNN run forward from its prior: state (h, c), each [K, B, H] (c None for a GRU)."""

    def __init__(self, net, x):
        self.net, self.x, self.phi_x = net, x, net.phi_x(x).unbind(1)

    def initial_state(self, k):
        return tuple(None if s is None else s.expand((k,) + s.shape) for s in self.net.initial_state(self.x))

    def propose(self, t, state):
        h = state[0]
        z = self.net.prior(h).sample()
        return z, self.net.emission(z, h)

    def advance(self, t, state, z):
        phi_x = self.phi_x[t].expand(z.shape[:-1] + (-1,))
        return tuple(self.net.step(phi_x, z, State(*state)))


class _SRNNForward:
    """The SRNN run forward from its prior: d_t from x_{<t} is every particle's (computed once); state (z_{t-1},)."""

    def __init__(self, net, x):
        self.net, self.x = net, x
        self.d = net.forward_states(x)[0]  # [B, T, H]

    def initial_state(self, k):
        return (self.x.new_zeros(k, self.x.shape[0], self.net.z_dim),)

    def propose(self, t, state):
        d_t = self.d[:, t]
        z = self.net.prior(state[0], d_t).sample()
        return z, self.net.emission(z, d_t)

    def advance(self, t, state, z):
        return (z,)


def _bootstrap(forward, x, mask, num_particles):
    batch, steps = mask.shape
    state = forward.initial_state(num_particles)
    log_wbar = x.new_full((num_particles, batch), -math.log(num_particles), dtype=torch.float64)
    log_probs, predictions = [], []
    for t in range(steps):
        z, emission = forward.propose(t, state)
        token_log_probs = torch.log_softmax(emission.logits, -1).double()  # [K, B, V]
        predictive = torch.logsumexp(log_wbar[..., None] + token_log_probs, 0)  # [B, V]
        token = x[:, t].long()  # [B, 1]
        log_probs.append(predictive.gather(-1, token).squeeze(-1))
        predictions.append(predictive.argmax(-1))
        likelihood = token_log_probs.gather(-1, token.expand(num_particles, -1, -1)).squeeze(-1)  # [K, B]
        updated = log_wbar + likelihood
        updated = updated - torch.logsumexp(updated, 0)
        log_wbar = torch.where(mask[:, t], updated, log_wbar)
        state = forward.advance(t, state, z)
        if t + 1 < steps:  # as smc.py's filter: only before a sequence's next real step
            ancestors, log_wbar, _ = resampling_step(log_wbar, mask[:, t + 1])
            if ancestors is not None:
                state = tuple(None if s is None else take_particles(s, ancestors) for s in state)
    return _finish(log_probs, predictions, mask)
