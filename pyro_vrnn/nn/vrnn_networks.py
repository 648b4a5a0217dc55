"""The networks of the VRNN (Chung et al. 2015, eqs. 1-9; docs/paper.md), as one `torch.nn.Module`.

    phi_x, phi_z                feature extractors of x_t and z_t (MLPs)
    prior_net  = phi_prior      [mu_0,t, sigma_0,t] = phi_prior(h_{t-1})                  (eq. 5)
    encoder    = phi_enc        [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1})         (eq. 9)
    decoder    = phi_dec        theta_t = phi_dec(phi_z(z_t), h_{t-1})                     (eq. 6)
    rnn        = f              h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})                   (eq. 7)
    backward_rnn = g            a_t = g(a_{t+1}, phi_x(x_t)), for the smoothing guide only, whose
                                encoder reads phi_enc(a_t, h_{t-1}) in place of phi_enc(phi_x(x_t), h_{t-1})

f is an LSTM cell (the paper's, `--cell lstm`) or a GRU cell (`--cell gru`, as DVAE and later
VRNN code use). The Pyro programs in `models/` and `guides/` thread a `State` (h_{t-1}, and the
LSTM's cell c_{t-1}) through time and call one method per equation and step: `prior(h)`,
`posterior(phi_x_t, h)`, `emission(z_t, h)`, `step(phi_x_t, z_t, state)`. Each maps tensors to
tensors or to a distribution; the programs own the sample sites. Every method accepts any number
of leading batch dimensions: importance sampling adds a particle dimension in front of the
sequences. The output layers, NormalHead and EmissionHead, are in heads.py.
"""

from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from pyro_vrnn.distributions.diag_normal import DiagNormal, as_diag_normal
from pyro_vrnn.infer.smc import take_particles
from pyro_vrnn.nn.heads import EmissionHead, NormalHead
from pyro_vrnn.nn.normalization import NOT_FOR_TOKENS, FeatureMLP

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}
BACKWARD_RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}  # the smoothing guide's RNN over x, run back in time
EMISSION_BLOCK_BYTES = 2**22  # see emission_log_prob_in_blocks


def mlp(in_dim, width, layers):
    """`layers` ReLU layers of `width` units (the paper's phi networks)."""
    modules = []
    for _ in range(layers):
        modules += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*modules)


class TokenFeatures(nn.Module):
    """phi_x of a token (kind "tokens"): x_t = (k,) -> the ReLU MLP of the one-hot vector e_k, its first layer
    an embedding lookup (W e_k + b is column k of W plus b: the same function without the [.., V] one-hot)."""

    def __init__(self, vocabulary_size, width, layers):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary_size, width)
        self.bias = nn.Parameter(torch.zeros(width))
        self.rest = nn.Sequential(nn.ReLU(), mlp(width, width, layers - 1)) if layers else nn.Identity()

    def forward(self, x):
        return self.rest(self.embedding(x[..., 0].long()) + self.bias)


def feature_net(kind, x_dim, vocabulary_size, width, layers, feature_norm="none"):
    """phi_x for data of this kind: the paper's ReLU MLP over x_t (batch-normalized with feature_norm "batch":
    pyro_vrnn/nn/normalization.py), or over the one-hot token (TokenFeatures)."""
    if kind == "tokens":
        if x_dim != 1 or not vocabulary_size:
            raise ValueError(f"token data are rows of one id over a vocabulary, got D = {x_dim}, V = {vocabulary_size}")
        if feature_norm != "none":
            raise ValueError(NOT_FOR_TOKENS)
        return TokenFeatures(vocabulary_size, width, layers)
    return FeatureMLP(x_dim, width, layers, batch_norm=feature_norm == "batch")


def cell_step(rnn, inputs, h, c):
    """(h_t, c_t) of an LSTM cell (c None for a GRU) from inputs [*S, I] and (h_{t-1}, c_{t-1}) [*S, H]. The cell
    wants one flat batch dim; the programs may have two (particles, sequences), so the batch is flattened and
    shaped back."""
    batch_shape = torch.broadcast_shapes(inputs.shape[:-1], h.shape[:-1])
    inputs, h, c = (
        None if t is None else t.expand(batch_shape + t.shape[-1:]).reshape(-1, t.shape[-1]) for t in (inputs, h, c)
    )
    if c is not None:
        h, c = rnn(inputs, (h, c))
        return h.reshape(batch_shape + h.shape[-1:]), c.reshape(batch_shape + c.shape[-1:])
    return rnn(inputs, h).reshape(batch_shape + h.shape[-1:]), None


def cat(*tensors):
    """Concatenate features along the last dim, broadcasting the batch dims (particles x sequences)."""
    if any(t.shape[:-1] != tensors[0].shape[:-1] for t in tensors):
        batch_shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
        tensors = [t.expand(batch_shape + t.shape[-1:]) for t in tensors]
    return torch.cat(tensors, dim=-1)


def step_masks(mask):
    """The masks for poutine.mask at each step t: mask[:, t], or plainly True at steps where every
    sequence is real (most steps of a length-bucketed batch). The same log-densities; Pyro then
    skips the masking work at those sites."""
    full = mask.all(0).tolist()  # one look at the mask per batch
    return [True if full[t] else mask[:, t] for t in range(mask.shape[1])]


def sum_over_steps(terms, mask):
    """sum_t mask[b, t] * terms[t, ..., b]: [T, *S] -> [*S] (S: sequences, or particles x sequences),
    the padding steps contributing exactly 0 whatever their values."""
    mask = mask.transpose(0, 1)  # [T, B], and [T, 1, B] against particles
    mask = mask.reshape(mask.shape[:1] + (1,) * (terms.dim() - 2) + mask.shape[1:])
    return torch.where(mask, terms, terms.new_zeros(())).sum(0)


def stack_steps(tensors):
    """[T, ...] from T tensors whose batch dims broadcast (h_0 has no particle dim, h_1 on may have one)."""
    if any(t.shape != tensors[-1].shape for t in tensors):
        tensors = torch.broadcast_tensors(*tensors)
    return torch.stack(tensors)


def unbind_steps(normal):
    """A diagonal Normal (DiagNormal, or Normal(loc, scale).to_event(1) from a network of one's own) of batch
    shape [T, ...] as T per-step DiagNormals of batch shape [...], for one sample site per step (unbind, not
    indexing: its backward is one stack, not T scatters)."""
    normal = as_diag_normal(normal)
    return [DiagNormal(loc, scale) for loc, scale in zip(normal.loc.unbind(0), normal.scale.unbind(0))]


def backward_states(rnn, inputs, mask):
    """a_t = g(a_{t+1}, inputs_t) for every step: [B, T, A] from inputs [B, T, F] and a batch-first nn.LSTM or
    nn.GRU g, run from each sequence's last real step back to its first. Each sequence is reversed within
    its own length, so that what a real step sees never includes padding (the padded steps get values that
    only padded steps use)."""
    steps = torch.arange(inputs.shape[1], device=inputs.device)
    reverse = (mask.sum(1, keepdim=True) - 1 - steps).clamp(min=0)  # [B, T]: t -> length - 1 - t
    reversed_inputs = inputs.gather(1, reverse[..., None].expand_as(inputs))
    out, _ = rnn(reversed_inputs)  # out[:, s] has read inputs_{L-1}, ..., inputs_{L-1-s}
    return out.gather(1, reverse[..., None].expand(-1, -1, out.shape[-1]))


def emission_log_prob_in_blocks(emission, width, z, context, x):
    """log p(x_t | z_t, context_t) of every step t at once: [T, *S] from `emission(z, context)` (a distribution),
    z [T, *S, Z] (None for the RNNs), context [T, *S, H] (the VRNN's h_{t-1}, the SRNN's d_t) and the data
    x [B, T, D] (S: sequences, or particles x sequences); `width`: the emission's parameters per row.

    The decoder runs on blocks of steps whose emission parameters take at most EMISSION_BLOCK_BYTES:
    all T steps in one block for small emissions (handwriting: 121 numbers per sequence and step),
    a few steps for big ones (speech: a 20-component mixture over 200 dimensions, 8,020 numbers), whose
    temporaries would otherwise outgrow the processor's caches (run/benchmark.py measures both).
    """
    values = x.transpose(0, 1)  # [T, B, D], and [T, 1, B, D] against particles
    values = values.reshape(values.shape[:1] + (1,) * (context.dim() - 3) + values.shape[1:])
    rows = (
        context.shape[1:-1].numel() if z is None else torch.broadcast_shapes(context.shape[1:-1], z.shape[1:-1]).numel()
    )
    per_step = 4 * width * rows  # float32 parameters of one step
    block = max(1, EMISSION_BLOCK_BYTES // per_step)
    # split, not [s:s + block]: a slice's backward writes its gradient into zeros of the whole [T, ...] tensor,
    # T / block times over; split's is one concatenation
    z_blocks = [None] * -(-len(context) // block) if z is None else z.split(block)
    log_probs = [
        emission(z_block, context_block).log_prob(values_block)
        for z_block, context_block, values_block in zip(z_blocks, context.split(block), values.split(block))
    ]
    return log_probs[0] if len(log_probs) == 1 else torch.cat(log_probs)


class State(NamedTuple):
    """The recurrence after a step: h_t, and c_t, the LSTM's cell (None for a GRU)."""

    h: torch.Tensor
    c: Optional[torch.Tensor]


class VRNN(nn.Module):
    """All networks of one Table 1 model.

    latent=False gives the RNN baselines (x_t ~ emission(phi_dec(h_{t-1})), h_t = f(phi_x(x_t), h_{t-1}));
    conditional_prior=False gives VRNN-I (z_t ~ N(0, I), independent across time).
    """

    def __init__(self, config, kind, x_dim, latent, conditional_prior, emission, vocabulary_size=None):
        super().__init__()
        c = config
        if c.cell not in CELLS:
            raise ValueError(f"unknown --cell {c.cell!r}; choose one of {', '.join(CELLS)}")
        self.kind, self.x_dim, self.z_dim, self.hidden = kind, x_dim, c.z_dim, c.hidden
        self.latent, self.conditional_prior, self.cell = latent, conditional_prior, c.cell
        self.phi_x = feature_net(kind, x_dim, vocabulary_size, c.x_features, c.mlp_layers, c.feature_norm)
        self.feature_norm = c.feature_norm == "batch"  # phi_x then takes the mask (`features`)
        rnn_input, dec_input = c.x_features, c.hidden
        if latent:
            self.phi_z = mlp(c.z_dim, c.z_features, c.mlp_layers)
            encoder_input = c.x_features  # phi_x(x_t), or a_t for the smoothing guide
            if c.guide == "smoothing":
                encoder_input = c.backward_hidden or c.hidden
                self.backward_rnn = BACKWARD_RNNS[c.cell](c.x_features, encoder_input, batch_first=True)
            self.encoder = nn.Sequential(
                mlp(encoder_input + c.hidden, c.enc_hidden, c.mlp_layers),
                NormalHead(c.enc_hidden, c.z_dim, c.min_scale),
            )
            if conditional_prior:
                self.prior_net = nn.Sequential(
                    mlp(c.hidden, c.prior_hidden, c.mlp_layers), NormalHead(c.prior_hidden, c.z_dim, c.min_scale)
                )
            rnn_input += c.z_features
            dec_input += c.z_features
        head = EmissionHead(c.dec_hidden, kind, x_dim, emission, c.components, c.min_scale, c.mixture, vocabulary_size)
        self.decoder = nn.Sequential(mlp(dec_input, c.dec_hidden, c.mlp_layers), head)
        self.emission_width = sum(head.sizes)  # the emission's parameters per sequence and step (either form)
        self.rnn = CELLS[c.cell](rnn_input, c.hidden)

    def stepper(self, x, mask, guide_name="filtering"):
        """This network and its guide (`guide_name`: filtering or smoothing) one step at a time over the batch x
        [B, T, D], for the particle filter of FIVO and the SMC estimate (pyro_vrnn/infer/smc.py)."""
        if not self.latent:
            raise ValueError("a model without latent variables has nothing to filter: its log p(x) is exact")
        return VRNNStepper(self, guide_name, x, mask)

    def features(self, x, mask):
        """phi_x(x_t) of every step of x [B, T, D] in one call: [B, T, F]. With --feature-norm batch, phi_x takes
        the mask too, so that its batch statistics skip padding (pyro_vrnn/nn/normalization.py)."""
        return self.phi_x(x, mask) if self.feature_norm else self.phi_x(x)

    def initial_state(self, x):
        """h_0 = 0 (and c_0 = 0 for an LSTM) for the batch x [B, T, D]."""
        zeros = x.new_zeros(x.shape[0], self.hidden)
        return State(zeros, zeros if self.cell == "lstm" else None)

    def prior(self, h):
        """p(z_t | h_{t-1}) = N(mu_0,t, sigma_0,t^2), [mu_0,t, sigma_0,t] = phi_prior(h_{t-1}); N(0, I) for VRNN-I."""
        if not self.conditional_prior:
            loc = h.new_zeros(h.shape[:-1] + (self.z_dim,))
            return DiagNormal(loc, torch.ones_like(loc))
        return self.prior_net(h)

    def posterior(self, features_t, h):
        """q(z_t | x_t, h_{t-1}) = N(mu_z,t, sigma_z,t^2), [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1}), with
        features_t = phi_x(x_t); the smoothing guide passes a_t (`backward_states`), which has seen x_t .. x_T."""
        return self.encoder(cat(features_t, h))

    def backward_states(self, phi_x, mask):
        """a_t = g(a_{t+1}, phi_x(x_t)) for every step: [B, T, A] from phi_x [B, T, F] (backward_states)."""
        return backward_states(self.backward_rnn, phi_x, mask)

    def emission(self, z_t, h):
        """p(x_t | z_t, h_{t-1}) with theta_t = phi_dec(phi_z(z_t), h_{t-1}); phi_dec(h_{t-1}) for the RNNs
        (z_t None)."""
        return self.decoder(h if z_t is None else cat(self.phi_z(z_t), h))

    def emission_log_prob(self, z, h_prev, x):
        """log p(x_t | z_t, h_{t-1}) of every step t at once: [T, *S] from z [T, *S, Z] (None for the RNNs),
        h_prev [T, *S, H] and the data x [B, T, D] (vrnn_networks.emission_log_prob_in_blocks)."""
        return emission_log_prob_in_blocks(self.emission, self.emission_width, z, h_prev, x)

    def step(self, phi_x_t, z_t, state):
        """The state after step t: h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}); f(phi_x(x_t), h_{t-1}) for the RNNs."""
        inputs = phi_x_t if z_t is None else cat(phi_x_t, self.phi_z(z_t))
        return State(*cell_step(self.rnn, inputs, state.h, state.c))


class VRNNStepper:
    """The VRNN and its guide one step at a time, for particle methods (pyro_vrnn/infer/smc.py), from the methods the
    programs call:

        proposal    q(z_t | x_t, h_{t-1}) = vrnn.posterior(phi_x(x_t), h_{t-1}); with the smoothing guide
                    vrnn.posterior(a_t, h_{t-1}), a = vrnn.backward_states(phi_x(x), mask)
        transition  log p(z_t | h_{t-1}) = vrnn.prior(h_{t-1}),
                    log p(x_t | z_t, h_{t-1}) = vrnn.emission(z_t, h_{t-1}),  h_t = vrnn.step(phi_x(x_t), z_t, h_{t-1})
    The state is (h,) for a GRU, (h, c) for an LSTM, each [K, B, H].
    """

    def __init__(self, vrnn, guide_name, x, mask):
        if guide_name not in ("filtering", "smoothing"):
            raise ValueError(f"unknown guide {guide_name!r} for the VRNN's particle filter")
        self.vrnn, self.x, self.mask = vrnn, x, mask
        phi_x = vrnn.features(x, mask)  # phi_x(x_t) [B, T, F], every step in one call, as the guides do
        features = vrnn.backward_states(phi_x, mask) if guide_name == "smoothing" else phi_x
        # one tensor a step: the backward pass then stacks T gradients once, where slicing [:, t] would add T
        # gradients of the whole [B, T, F] (quadratic in T)
        self.phi_x, self.features, self.values = phi_x.unbind(1), features.unbind(1), x.unbind(1)

    def initial_state(self, num_particles):
        h0 = self.vrnn.initial_state(self.x)  # h_0 = 0 (and c_0 = 0)
        return tuple(t.expand((num_particles,) + t.shape) for t in h0 if t is not None)

    def proposal(self, t, state):
        h = state[0]  # expanded to the particles here: a broadcasting concatenation costs 4x as much
        return self.vrnn.posterior(self.features[t].expand(h.shape[:-1] + (-1,)), h)

    def transition(self, t, state, z):
        h = state[0]
        log_prior = self.vrnn.prior(h).log_prob(z)
        log_likelihood = self.vrnn.emission(z, h).log_prob(self.values[t])
        phi_x = self.phi_x[t].expand(h.shape[:-1] + (-1,))
        following = self.vrnn.step(phi_x, z, State(h, state[1] if len(state) > 1 else None))
        return log_prior, log_likelihood, tuple(s for s in following if s is not None)

    def reorder(self, state, ancestors):
        return tuple(take_particles(s, ancestors) for s in state)
