"""The networks of the VRNN (Chung et al. 2015, eqs. 1-9), as one `torch.nn.Module`.

    phi_x, phi_z                feature extractors of x_t and z_t (MLPs)
    prior_net  = phi_prior      [mu_0,t, sigma_0,t] = phi_prior(h_{t-1})                 (eq. 5)
    encoder    = phi_enc        [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1})        (eq. 9)
    decoder    = phi_dec        theta_t = phi_dec(phi_z(z_t), h_{t-1})                    (eq. 6)
    rnn        = f (an LSTM)    h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})                  (eq. 7)

The Pyro programs in `models/` and `guides/` call these methods once per time step, so the module
only maps tensors to tensors and distributions; it knows nothing of sample sites. Every method
accepts any number of leading batch dimensions (importance sampling adds a particle dimension).
Scales are softplus plus a floor (PAPER.md: sigma = softplus(.) + 1e-4).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import pyro.distributions as dist

from pyro_vrnn.distributions import DiagNormalMixture, StrokeMixture


def mlp(in_dim, width, layers):
    """`layers` ReLU layers of `width` units (the paper's phi networks)."""
    modules = []
    for _ in range(layers):
        modules += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*modules)


def cat(*tensors):
    """Concatenate features along the last dim, broadcasting the batch dims (particles x sequences)."""
    batch_shape = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(batch_shape + t.shape[-1:]) for t in tensors], dim=-1)


class NormalHead(nn.Module):
    """Features -> a diagonal Normal over `dim` variables: loc linear, scale softplus + floor."""

    def __init__(self, in_dim, dim, min_scale):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * dim)
        self.min_scale = min_scale

    def forward(self, features):
        loc, raw_scale = self.linear(features).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)


class EmissionHead(nn.Module):
    """Features -> the emission p(x_t | z_t, h_{t-1}) that suits the data's kind.

    kind="handwriting": (pen, dx, dy), Bernoulli pen bit and a mixture of bivariate Gaussians
        with one correlation each (Graves 2013); "gauss" is the one-component case.
    kind="real": a diagonal Gaussian ("gauss") or a mixture of diagonal Gaussians ("gmm").
    kind="binary": independent Bernoulli bits (piano rolls), whatever the model name says.
    """

    def __init__(self, in_dim, kind, x_dim, family, components, min_scale):
        super().__init__()
        if kind not in ("handwriting", "real", "binary"):
            raise ValueError(f"unknown data kind {kind!r}")
        if kind == "handwriting" and x_dim != 3:
            raise ValueError(f"handwriting data must be (pen, dx, dy), got dimension {x_dim}")
        self.kind, self.x_dim, self.min_scale = kind, x_dim, min_scale
        self.components = components if family == "gmm" and kind != "binary" else 1
        self.mixture = family == "gmm"
        k, d = self.components, x_dim
        sizes = {
            "handwriting": [1, k, 2 * k, 2 * k, k],  # pen, mixture logits, loc, scale, corr
            "real": [k, k * d, k * d] if self.mixture else [d, d],
            "binary": [d],
        }[kind]
        self.sizes = sizes
        self.linear = nn.Linear(in_dim, sum(sizes))

    def scale(self, raw):
        return F.softplus(raw) + self.min_scale

    def forward(self, features):
        params = self.linear(features).split(self.sizes, dim=-1)
        batch_shape = features.shape[:-1]
        if self.kind == "binary":
            return dist.Bernoulli(logits=params[0]).to_event(1)
        if self.kind == "real" and not self.mixture:
            loc, raw_scale = params
            return dist.Normal(loc, self.scale(raw_scale)).to_event(1)
        k = self.components
        if self.kind == "real":
            logits, loc, raw_scale = params
            shape = batch_shape + (k, self.x_dim)
            return DiagNormalMixture(logits, loc.reshape(shape), self.scale(raw_scale).reshape(shape))
        pen_logit, logits, loc, raw_scale, raw_corr = params
        shape = batch_shape + (k, 2)
        # tanh keeps each correlation strictly inside (-1, 1); the factor keeps 1 - rho^2 > 0 in float32
        corr = torch.tanh(raw_corr) * (1 - 1e-5)
        return StrokeMixture(pen_logit.squeeze(-1), logits, loc.reshape(shape),
                             self.scale(raw_scale).reshape(shape), corr)


class VRNN(nn.Module):
    """All networks of one Table 1 model.

    latent=False gives the RNN baselines (x_t ~ emission(phi_dec(h_{t-1})), h_t = f(phi_x(x_t), h_{t-1}));
    conditional_prior=False gives VRNN-I (z_t ~ N(0, I), independent across time).
    """

    def __init__(self, config, kind, x_dim, latent, conditional_prior, emission):
        super().__init__()
        c = config
        self.kind, self.x_dim, self.z_dim, self.hidden = kind, x_dim, c.z_dim, c.hidden
        self.latent, self.conditional_prior = latent, conditional_prior
        self.phi_x = mlp(x_dim, c.x_features, c.mlp_layers)
        rnn_input = c.x_features
        dec_input = c.hidden
        if latent:
            self.phi_z = mlp(c.z_dim, c.z_features, c.mlp_layers)
            self.encoder = nn.Sequential(mlp(c.x_features + c.hidden, c.enc_hidden, c.mlp_layers),
                                         NormalHead(c.enc_hidden, c.z_dim, c.min_scale))
            if conditional_prior:
                self.prior_net = nn.Sequential(mlp(c.hidden, c.prior_hidden, c.mlp_layers),
                                               NormalHead(c.prior_hidden, c.z_dim, c.min_scale))
            rnn_input += c.z_features
            dec_input += c.z_features
        self.decoder = nn.Sequential(mlp(dec_input, c.dec_hidden, c.mlp_layers),
                                     EmissionHead(c.dec_hidden, kind, x_dim, emission,
                                                  c.components, c.min_scale))
        self.rnn = nn.LSTMCell(rnn_input, c.hidden)

    def initial_state(self, batch_size, device=None):
        """(h_0, c_0) = 0: the LSTM's hidden output h and its cell c."""
        zeros = torch.zeros(batch_size, self.hidden, device=device)
        return zeros, zeros

    def prior(self, h):
        """p(z_t | h_{t-1}): N(mu_0,t, sigma_0,t^2), or N(0, I) for VRNN-I."""
        if self.conditional_prior:
            return self.prior_net(h)
        zeros = h.new_zeros(h.shape[:-1] + (self.z_dim,))
        return dist.Normal(zeros, 1.0).to_event(1)

    def posterior(self, phi_x_t, h):
        """q(z_t | x_t, h_{t-1}) = N(mu_z,t, sigma_z,t^2), [mu, sigma] = phi_enc(phi_x(x_t), h_{t-1})."""
        return self.encoder(cat(phi_x_t, h))

    def emission(self, phi_z_t, h):
        """p(x_t | z_t, h_{t-1}) with theta_t = phi_dec(phi_z(z_t), h_{t-1}) (phi_dec(h_{t-1}) for RNNs)."""
        return self.decoder(h if phi_z_t is None else cat(phi_z_t, h))

    def step(self, phi_x_t, phi_z_t, state):
        """h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}); the LSTM cell wants one flat batch dim."""
        inputs = phi_x_t if phi_z_t is None else cat(phi_x_t, phi_z_t)
        h, c = state
        batch_shape = torch.broadcast_shapes(inputs.shape[:-1], h.shape[:-1])
        inputs = inputs.expand(batch_shape + inputs.shape[-1:]).reshape(-1, inputs.shape[-1])
        h = h.expand(batch_shape + h.shape[-1:]).reshape(-1, self.hidden)
        c = c.expand(batch_shape + c.shape[-1:]).reshape(-1, self.hidden)
        h, c = self.rnn(inputs, (h, c))
        return h.reshape(batch_shape + (self.hidden,)), c.reshape(batch_shape + (self.hidden,))
