"""The output layers of the VRNN's networks (Chung et al. 2015, eqs. 5, 6 and 9): features -> a distribution.

    NormalHead     the Gaussians over z_t of the prior (eq. 5) and the encoder (eq. 9): [mu, sigma]
    EmissionHead   the emission p(x_t | z_t, h_{t-1}) of eq. 6, in the form that suits the data's kind

Scales are softplus plus a floor (sigma = softplus(.) + 1e-4, as the authors).
"""

import math

import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F

from pyro_vrnn.distributions.diag_normal import DiagNormal
from pyro_vrnn.distributions.emissions import DiagNormalMixture, StrokeMixture
from pyro_vrnn.distributions.token_categorical import TokenCategorical

MIXTURES = ("shared", "independent")  # the two forms of the real-valued mixture (EmissionHead)


class NormalHead(nn.Module):
    """Features -> a diagonal Normal (pyro_vrnn/distributions/diag_normal.py) over `dim` variables: loc linear,
    scale softplus + floor."""

    def __init__(self, in_dim, dim, min_scale):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * dim)
        self.min_scale = min_scale

    def forward(self, features):
        loc, raw_scale = self.linear(features).chunk(2, dim=-1)
        return DiagNormal(loc, F.softplus(raw_scale) + self.min_scale)


class EmissionHead(nn.Module):
    """Features -> the emission p(x_t | z_t, h_{t-1}) that suits the data's kind.

    kind="handwriting": (pen, dx, dy), Bernoulli pen bit and a mixture of bivariate Gaussians
        with one correlation each (Graves 2013); "gauss" is the one-component case.
    kind="real": a diagonal Gaussian ("gauss") or a mixture of diagonal Gaussians ("gmm").
    kind="binary": independent Bernoulli bits (piano rolls), whatever the model name says.
    kind="tokens": one categorical over the vocabulary's V tokens (TokenCategorical), whatever the model name says.

    The real-valued mixture has two forms (`mixture`). "independent": every component's mean and
    scale is its own linear output. "shared" (the default): a mean and raw scale common to all
    components plus an offset per component, loc_k = m + a_k and sigma_k = softplus(s + b_k) + floor,
    the same family reparameterized. The common part is the single Gaussian's and learns from every
    frame; an independent component learns only from the frames it is responsible for, so on small
    data each of its K mean functions is fitted to a K-th of the frames and the mixture falls below
    the single Gaussian (docs/ablations.md).
    """

    def __init__(self, in_dim, kind, x_dim, family, components, min_scale, mixture="shared", vocabulary_size=None):
        super().__init__()
        if kind not in ("handwriting", "real", "binary", "tokens"):
            raise ValueError(f"unknown data kind {kind!r}")
        if kind == "handwriting" and x_dim != 3:
            raise ValueError(f"handwriting data must be (pen, dx, dy), got dimension {x_dim}")
        if mixture not in MIXTURES:
            raise ValueError(f"unknown --mixture {mixture!r}; choose one of {', '.join(MIXTURES)}")
        self.kind, self.x_dim, self.min_scale = kind, x_dim, min_scale
        if kind == "tokens" and not vocabulary_size:
            raise ValueError("token data need the vocabulary's size")
        self.components = components if family == "gmm" and kind in ("handwriting", "real") else 1
        self.mixture = family == "gmm"
        k, d = self.components, x_dim
        self.sizes = {
            "handwriting": [1, k, 2 * k, 2 * k, k],  # pen, mixture logits, loc, scale, corr
            "real": [k, k * d, k * d] if self.mixture else [d, d],
            "binary": [d],
            "tokens": [vocabulary_size],
        }[kind]
        self.linear = nn.Linear(in_dim, sum(self.sizes))
        self.shared = None
        if kind == "real" and self.mixture and mixture == "shared":
            self.shared = nn.Linear(in_dim, 2 * d)  # the common mean m and raw scale s
            self.init_shared_mixture()

    @torch.no_grad()
    def init_shared_mixture(self):
        """Start the shared mixture where standardized data is (mean 0, std 1 per dimension, as the
        README asks of real data): every sigma_k = 1 (softplus(s) + floor = 1, where PyTorch's default
        init gives about 0.69), and the components apart, a_k ~ N(0, I): K points drawn from the data's
        marginal, not K copies of one near 0, so that each component starts responsible for other frames.

        A floor of 1 or more (--min-scale) cannot start at 1, and one just below 1 would put s deep in
        softplus's flat tail (slope sigmoid(s): 1e-4 for a floor of 0.9999), where the scale hardly
        learns: softplus(s) starts at 0.5 or more (slope 0.38), so sigma_k at max(1, floor + 0.5)."""
        k, d = self.components, self.x_dim
        self.shared.bias[d:] = math.log(math.expm1(max(1 - self.min_scale, 0.5)))  # softplus^-1(sigma_k - floor)
        self.linear.bias[k : k + k * d] = torch.randn(k * d)
        self.linear.bias[k + k * d :] = 0

    def scale(self, raw):
        return F.softplus(raw) + self.min_scale

    def forward(self, features):
        params = self.linear(features).split(self.sizes, dim=-1)
        batch_shape = features.shape[:-1]
        if self.kind == "binary":
            return dist.Bernoulli(logits=params[0]).to_event(1)
        if self.kind == "tokens":
            return TokenCategorical(params[0])
        if self.kind == "real" and not self.mixture:
            loc, raw_scale = params
            return DiagNormal(loc, self.scale(raw_scale))
        k = self.components
        if self.kind == "real":
            logits, loc, raw_scale = params
            shape = batch_shape + (k, self.x_dim)
            loc, raw_scale = loc.reshape(shape), raw_scale.reshape(shape)
            if self.shared is not None:  # loc_k = m + a_k, raw scale_k = s + b_k
                shared_loc, shared_raw = self.shared(features).unsqueeze(-2).chunk(2, dim=-1)
                loc, raw_scale = shared_loc + loc, shared_raw + raw_scale
            return DiagNormalMixture(logits, loc, self.scale(raw_scale))
        pen_logit, logits, loc, raw_scale, raw_corr = params
        shape = batch_shape + (k, 2)
        # tanh keeps each correlation strictly inside (-1, 1); the factor keeps 1 - rho^2 > 0 in float32
        corr = torch.tanh(raw_corr) * (1 - 1e-5)
        return StrokeMixture(
            pen_logit.squeeze(-1), logits, loc.reshape(shape), self.scale(raw_scale).reshape(shape), corr
        )
