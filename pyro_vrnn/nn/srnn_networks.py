"""The networks of the SRNN (Fraccaro, Sønderby, Paquet and Winther 2016, "Sequential Neural Models with
Stochastic Layers"), as one `torch.nn.Module`, and its stepper for particle methods.

The SRNN separates the deterministic and the stochastic parts of the VRNN: a forward RNN reads the data
alone, and a state-space model of z rides on top of it. With no input sequence, u_t = x_{t-1} (x_0 = 0).
The labels (S1)-(S6) are used across models/srnn.py and guides/srnn_smoothing.py; the paper's names in brackets:

    rnn = f        (S1)  d_t = f(d_{t-1}, phi_x(x_{t-1})), d_0 = 0                    [the deterministic layer]
    prior_net      (S2)  p(z_t | z_{t-1}, d_t) = N(mu_p,t, sigma_p,t^2) from [z_{t-1}, d_t], z_0 = 0   [p_theta_z]
    decoder        (S3)  p(x_t | z_t, d_t) = emission(decoder([z_t, d_t]))                             [p_theta_x]
    backward_rnn   (S4)  a_t = g(a_{t+1}, [d_t, phi_x(x_t)]), from each sequence's end    [g_phi_a, "smooth"]
    encoder        (S5)  q(z_t | z_{t-1}, a_t) = N(mu_q,t, sigma_q,t^2) from [z_{t-1}, a_t]              [q_phi]
                   (S6)  mu_q,t = mu_p,t + the encoder's mean: a residual on the prior's mean          ["Resq"]

so p(x, z | d) = prod_t p(z_t | z_{t-1}, d_t) p(x_t | z_t, d_t) and q(z | x) = prod_t q(z_t | z_{t-1}, a_t).
d depends on x alone: with x observed, f runs over all of x in one call (`forward_states`, an nn.LSTM or
nn.GRU by --cell), and the guide's d serves the model too (pyro_vrnn/infer/record.py); when x_{t-1} is drawn
(generation) the same module is stepped one input at a time (`step`). The emission is the VRNN's
(heads.EmissionHead: every data kind). f and g read x through phi_x, the VRNN's feature MLP, where the
paper feeds x itself: the two models then see the data alike. Methods accept leading particle dims in front
of the sequences.
"""

import torch
import torch.nn as nn

from pyro_vrnn.distributions.diag_normal import DiagNormal
from pyro_vrnn.nn.heads import EmissionHead, NormalHead
from pyro_vrnn.nn.vrnn_networks import (
    BACKWARD_RNNS,
    State,
    backward_states,
    cat,
    emission_log_prob_in_blocks,
    feature_net,
    mlp,
)

SEQUENCE_RNNS = BACKWARD_RNNS  # nn.LSTM, nn.GRU by --cell: whole sequences in one call; f forward, g backward


class SRNN(nn.Module):
    """All networks of one SRNN; the constructor takes what `models.build` passes every network."""

    def __init__(
        self, config, kind, x_dim, latent=True, conditional_prior=True, emission="gauss", vocabulary_size=None
    ):
        super().__init__()
        c = config
        if c.cell not in SEQUENCE_RNNS:
            raise ValueError(f"unknown --cell {c.cell!r}; choose one of {', '.join(SEQUENCE_RNNS)}")
        if not (latent and conditional_prior):
            raise ValueError("the SRNN has latent variables with a conditional prior by definition")
        self.kind, self.x_dim, self.z_dim, self.hidden = kind, x_dim, c.z_dim, c.hidden
        self.latent, self.conditional_prior, self.cell, self.resq = True, True, c.cell, c.srnn_resq
        self.phi_x = feature_net(kind, x_dim, vocabulary_size, c.x_features, c.mlp_layers)
        self.rnn = SEQUENCE_RNNS[c.cell](c.x_features, c.hidden, batch_first=True)  # f, forward in time
        backward_hidden = c.backward_hidden or c.hidden
        self.backward_rnn = SEQUENCE_RNNS[c.cell](c.hidden + c.x_features, backward_hidden, batch_first=True)  # g
        self.prior_net = nn.Sequential(
            mlp(c.z_dim + c.hidden, c.prior_hidden, c.mlp_layers), NormalHead(c.prior_hidden, c.z_dim, c.min_scale)
        )
        self.encoder = nn.Sequential(
            mlp(c.z_dim + backward_hidden, c.enc_hidden, c.mlp_layers), NormalHead(c.enc_hidden, c.z_dim, c.min_scale)
        )
        head = EmissionHead(
            c.dec_hidden, kind, x_dim, emission, c.components, c.min_scale, vocabulary_size=vocabulary_size
        )
        self.decoder = nn.Sequential(mlp(c.z_dim + c.hidden, c.dec_hidden, c.mlp_layers), head)
        self.emission_width = sum(head.sizes)  # the emission's parameters per sequence and step

    def stepper(self, x, mask, guide_name=None):
        """This network and its smoothing guide one step at a time over the batch x [B, T, D], for the particle
        filter of FIVO and the SMC estimate (pyro_vrnn/infer/smc.py); the SRNN has one guide, whatever `guide_name`."""
        return SRNNStepper(self, x, mask)

    # -- d: the deterministic recurrence over the data -----------------------------------------

    def shifted_features(self, x):
        """(phi_x(x_{t-1}) [B, T, F] for t = 1..T with x_0 = 0: f's inputs; phi_x(x_t) [B, T, F])."""
        phi_x = self.phi_x(x)
        first = self.phi_x(x.new_zeros(x.shape[0], 1, x.shape[2]))
        return torch.cat([first, phi_x[:, :-1]], dim=1), phi_x

    def forward_states(self, x):
        """(d [B, T, H], phi_x(x) [B, T, F]): d_t = f(d_{t-1}, phi_x(x_{t-1})) of every step, f run once over
        all of x. Padding comes after a sequence's real steps, and f runs forward: it never reaches them."""
        inputs, phi_x = self.shifted_features(x)
        d, _ = self.rnn(inputs)
        return d, phi_x

    def state_after(self, x):
        """The State of f after d_T (d_T and the LSTM's cell) from x [B, T, D]: f run once over x_0..x_{T-1}."""
        _, final = self.rnn(self.shifted_features(x)[0])
        h, c = final if self.cell == "lstm" else (final, None)
        return State(h[0], None if c is None else c[0])

    def initial_state(self, x):
        """d_0 = 0 (and the LSTM's cell c_0 = 0) for the batch x [B, T, D]."""
        zeros = x.new_zeros(x.shape[0], self.hidden)
        return State(zeros, zeros if self.cell == "lstm" else None)

    def step(self, x_prev, state):
        """The State after d_t = f(d_{t-1}, phi_x(x_{t-1})), one step of the same module as `forward_states`."""
        inputs = self.phi_x(x_prev)
        # nn.LSTM wants [N, 1, F] and states [1, N, H]; the programs may have two batch dims (particles, sequences)
        batch_shape = torch.broadcast_shapes(inputs.shape[:-1], state.h.shape[:-1])
        flat = [
            None if t is None else t.expand(batch_shape + t.shape[-1:]).reshape(1, -1, t.shape[-1])
            for t in (inputs, state.h, state.c)
        ]
        hidden = (flat[1], flat[2]) if self.cell == "lstm" else flat[1]
        _, final = self.rnn(flat[0].transpose(0, 1), hidden)
        h, c = final if self.cell == "lstm" else (final, None)
        return State(*(None if t is None else t.reshape(batch_shape + t.shape[-1:]) for t in (h, c)))

    # -- the state-space model on top of d ---------------------------------------------------

    def initial_z(self, x):
        """z_0 = 0 for the batch x [B, T, D]."""
        return x.new_zeros(x.shape[0], self.z_dim)

    def prior(self, z_prev, d_t):
        """p(z_t | z_{t-1}, d_t) = N(mu_p,t, sigma_p,t^2), [mu_p,t, sigma_p,t] = prior_net([z_{t-1}, d_t]) (S2)."""
        return self.prior_net(cat(z_prev, d_t))

    def emission(self, z_t, d_t):
        """p(x_t | z_t, d_t): the data kind's emission with parameters decoder([z_t, d_t]) (S3)."""
        return self.decoder(cat(z_t, d_t))

    def emission_log_prob(self, z, d, x):
        """log p(x_t | z_t, d_t) of every step at once: [T, *S] from z [T, *S, Z], d [T, *S, H] (1 for the
        particles: d is theirs in common) and the data x [B, T, D] (vrnn_networks.emission_log_prob_in_blocks)."""
        return emission_log_prob_in_blocks(self.emission, self.emission_width, z, d, x)

    def backward_states(self, d, phi_x, mask):
        """a_t = g(a_{t+1}, [d_t, phi_x(x_t)]) [B, T, A]: what d_t and x_t .. x_T say, run from each sequence's
        own last real step (vrnn_networks.backward_states keeps padding out)."""
        return backward_states(self.backward_rnn, torch.cat([d, phi_x], dim=-1), mask)

    def posterior(self, z_prev, a_t, d_t):
        """q(z_t | z_{t-1}, a_t) = N(mu_q,t, sigma_q,t^2) from encoder([z_{t-1}, a_t]) (S5); with Resq (S6),
        mu_q,t = mu_p,t + mu~_q,t: the guide predicts how far the posterior's mean is from the prior's."""
        q = self.encoder(cat(z_prev, a_t))
        if not self.resq:
            return q
        return DiagNormal(self.prior(z_prev, d_t).mean + q.loc, q.scale)


class SRNNStepper:
    """The SRNN one step at a time, for particle methods (pyro_vrnn/infer/smc.py: SMC and FIVO), on one batch.

        stepper = SRNNStepper(net, x, mask)                 x [B, T, D], mask [B, T]
        state = stepper.initial_state(K)                    (z_0,), z_0 = 0 of shape [K, B, Z]
        q = stepper.proposal(t, state)                      q(z_t | z_{t-1}, a_t), batch shape [K, B]
        log_pz, log_px, state = stepper.transition(t, state, z)    each [K, B]
        state = stepper.reorder(state, ancestors)           ancestors [K, B]: particle indices per sequence

    t counts from 0 (step t is z_{t+1}, x_{t+1} in the programs). d and a depend on x alone, so they are
    computed once here and shared by every particle; the state is z_{t-1} alone. Padding steps (mask
    False) contribute 0 to log q (the proposal is masked), log p(z_t) and log p(x_t). Drawn with
    `proposal(t, state).rsample()` at every step, the same RNG stream as the guide under Pyro's
    `vectorized_importance_weights`, sum_t log p(z_t) + log p(x_t) - log q(z_t) is
    `objectives.particle_log_weights` (tests/test_srnn.py).
    """

    def __init__(self, net, x, mask):
        self.net, self.x, self.mask = net, x, mask
        self.d, phi_x = net.forward_states(x)  # d_t = f(d_{t-1}, x_{t-1}), [B, T, H]
        self.a = net.backward_states(self.d, phi_x, mask)  # a_t = g(a_{t+1}, [d_t, x_t]), [B, T, A]

    def initial_state(self, num_particles):
        """(z_0,) with z_0 = 0 [K, B, Z]."""
        return (self.x.new_zeros(num_particles, self.x.shape[0], self.net.z_dim),)

    def proposal(self, t, state):
        """q(z_t | z_{t-1}, a_t), batch shape [K, B], reparameterized; its log_prob is 0 at padding steps."""
        (z_prev,) = state
        return self.net.posterior(z_prev, self.a[:, t], self.d[:, t]).mask(self.mask[:, t])

    def transition(self, t, state, z):
        """(log p(z_t | z_{t-1}, d_t), log p(x_t | z_t, d_t), (z_t,)): the two [K, B], 0 at padding steps."""
        (z_prev,) = state
        log_pz = self.net.prior(z_prev, self.d[:, t]).log_prob(z)
        log_px = self.net.emission(z, self.d[:, t]).log_prob(self.x[:, t])
        real = self.mask[:, t]
        zero = log_pz.new_zeros(())
        return torch.where(real, log_pz, zero), torch.where(real, log_px, zero), (z,)

    def reorder(self, state, ancestors):
        """The state with particle k of sequence b taken from particle ancestors[k, b] of sequence b."""
        return tuple(s.gather(0, ancestors.reshape(ancestors.shape + (1,) * (s.dim() - 2)).expand_as(s)) for s in state)
