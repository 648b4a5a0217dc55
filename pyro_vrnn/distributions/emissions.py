"""Emission distributions p(x_t | z_t, h_{t-1}) of the VRNN (Chung et al. 2015, eq. 6; docs/paper.md).

The decoder phi_dec(phi_z(z_t), h_{t-1}) outputs the parameters theta_t of one of four emission
families (Table 1's "Gauss" / "GMM" column, per data kind):

  speech, real-valued frames
    Gauss   diagonal Gaussian           dist.Normal(loc, scale).to_event(1)        (no class here)
    GMM     mixture of diagonal Gaussians                                       DiagNormalMixture
  handwriting, x_t = (pen, dx, dy)  ("a Bernoulli pen-up bit and a bivariate Gaussian (Gauss) or a
  mixture of bivariate Gaussians with a correlation per component (GMM), as in Graves (2013)")
    Gauss   StrokeMixture with K = 1
    GMM     StrokeMixture with K components                       (Graves 2013, eqs. 23-26)
  binary data (piano rolls)
            independent Bernoulli bits  dist.Bernoulli(logits=logits).to_event(1)  (no class here)
  tokens (characters, chess moves: x_t one token of a vocabulary of V)
            one categorical over V      softmax(logits)[x_t]      TokenCategorical (token_categorical.py)

The two mixtures here and TokenCategorical are ordinary Pyro `TorchDistribution`s: they broadcast over any
leading batch dims (a particle dim from vectorized ELBOs or importance sampling, then sequences), score values
that broadcast against batch_shape, support `expand` (Pyro's plates call it) and honour
`validate_args`. Mixtures are summed in log space (logsumexp) so that a component far from the
data, a peaked scale (the paper's floor is sigma >= 1e-4) or extreme mixture logits never turn
the log-likelihood into inf or nan. Mixture sampling is not reparameterizable (the component
index is discrete), so neither mixture has `rsample`; the ELBO only ever scores observed x_t.

`with_temperature(tau)` is Graves' sampling "bias": mixture logits / tau and scales * sqrt(tau);
tau < 1 gives cleaner, more probable samples, tau = 1 is the model itself.
"""

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch.distributions.utils import lazy_property

__all__ = ["DiagNormalMixture", "StrokeMixture"]

_LOG_2PI = math.log(2 * math.pi)


class _OpenInterval(constraints.Constraint):
    """lower < value < upper. torch only has the closed `interval`; a correlation of exactly +-1
    makes the bivariate density singular (1 - rho^2 = 0), so the bounds themselves are invalid."""

    def __init__(self, lower_bound, upper_bound):
        self.lower_bound, self.upper_bound = lower_bound, upper_bound
        super().__init__()

    def check(self, value):
        return (self.lower_bound < value) & (value < self.upper_bound)

    def __repr__(self):
        return f"OpenInterval(lower_bound={self.lower_bound}, upper_bound={self.upper_bound})"


class _PenAndOffsets(constraints.Constraint):
    """Support of a stroke point (pen, dx, dy): pen in {0, 1} and finite offsets.

    The value is a mixed discrete/continuous vector, which no stock constraint describes;
    real_vector would accept pen = 0.5 and silently give a meaningless Bernoulli term (e.g. if
    the pen column were normalized by mistake), so validation checks the pen bit explicitly.
    Padding rows of zeros (pad_batch) are inside the support, so masked steps validate too.
    """

    event_dim = 1

    def check(self, value):
        pen, offsets = value[..., 0], value[..., 1:]
        return ((pen == 0) | (pen == 1)) & torch.isfinite(offsets).all(-1)

    def __repr__(self):
        return "PenAndOffsets()"


def _shape_error(name, msg):
    return ValueError(f"{name}: {msg}")


def check_temperature(tau):
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    return math.sqrt(tau)


class DiagNormalMixture(dist.TorchDistribution):
    """Mixture of K diagonal Gaussians over R^D (the speech "GMM" emission).

        p(x) = sum_k softmax(logits)_k prod_d N(x_d; loc_kd, scale_kd^2)

    Args:
        logits: [..., K] unnormalized mixture log-weights.
        loc:    [..., K, D] component means.
        scale:  [..., K, D] component standard deviations (> 0).
    The leading dims of the three broadcast to batch_shape; event_shape is (D,).
    """

    arg_constraints = {
        "logits": constraints.independent(constraints.real, 1),
        "loc": constraints.independent(constraints.real, 2),
        "scale": constraints.independent(constraints.positive, 2),
    }
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits, loc, scale, validate_args=None):
        if logits.dim() < 1 or loc.dim() < 2 or scale.dim() < 2:
            raise _shape_error(
                "DiagNormalMixture",
                "need logits [..., K], loc and scale [..., K, D]; got "
                f"{tuple(logits.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}",
            )
        k = logits.shape[-1]
        if loc.shape[-2] != k or scale.shape[-2] != k:
            raise _shape_error(
                "DiagNormalMixture",
                f"number of components differs: logits {tuple(logits.shape)}, "
                f"loc {tuple(loc.shape)}, scale {tuple(scale.shape)}",
            )
        try:
            d = torch.broadcast_shapes(loc.shape[-1:], scale.shape[-1:])[0]
            batch_shape = torch.broadcast_shapes(logits.shape[:-1], loc.shape[:-2], scale.shape[:-2])
        except RuntimeError as e:
            raise _shape_error(
                "DiagNormalMixture",
                f"shapes do not broadcast: logits {tuple(logits.shape)}, "
                f"loc {tuple(loc.shape)}, scale {tuple(scale.shape)}",
            ) from e
        self.logits = logits.expand(batch_shape + (k,))
        self.loc = loc.expand(batch_shape + (k, d))
        self.scale = scale.expand(batch_shape + (k, d))
        super().__init__(batch_shape, torch.Size((d,)), validate_args=validate_args)

    @property
    def num_components(self):
        return self.logits.shape[-1]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiagNormalMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        k, d = self.loc.shape[-2:]
        new.logits = self.logits.expand(batch_shape + (k,))
        new.loc = self.loc.expand(batch_shape + (k, d))
        new.scale = self.scale.expand(batch_shape + (k, d))
        super(DiagNormalMixture, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        x = value.unsqueeze(-2)  # [..., 1, D] against [..., K, D]
        z = (x - self.loc) / self.scale
        component = (-0.5 * z.pow(2) - self.scale.log() - 0.5 * _LOG_2PI).sum(-1)  # [..., K]
        return torch.logsumexp(F.log_softmax(self.logits, dim=-1) + component, dim=-1)

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)  # sample_shape + batch_shape + (D,)
        with torch.no_grad():
            k = dist.Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
            index = k[..., None, None].expand(shape[:-1] + (1, shape[-1]))
            loc = self.loc.expand(shape[:-1] + self.loc.shape[-2:]).gather(-2, index).squeeze(-2)
            scale = self.scale.expand(shape[:-1] + self.scale.shape[-2:]).gather(-2, index).squeeze(-2)
            return loc + scale * torch.randn(shape, dtype=loc.dtype, device=loc.device)

    @lazy_property
    def mixture_probs(self):
        return F.softmax(self.logits, dim=-1)

    @property
    def mean(self):
        return (self.mixture_probs.unsqueeze(-1) * self.loc).sum(-2)

    @property
    def variance(self):
        second_moment = (self.mixture_probs.unsqueeze(-1) * (self.scale.pow(2) + self.loc.pow(2))).sum(-2)
        return second_moment - self.mean.pow(2)

    def with_temperature(self, tau):
        """Graves' sampling bias: mixture logits / tau, scales * sqrt(tau); tau = 1 is the identity."""
        root_tau = check_temperature(tau)
        return DiagNormalMixture(self.logits / tau, self.loc, self.scale * root_tau, validate_args=self._validate_args)


class StrokeMixture(dist.TorchDistribution):
    """The handwriting emission of Graves (2013), eqs. 23-26, over x = (pen, dx, dy).

        p(x) = Bernoulli(pen; sigmoid(pen_logits)) * sum_k pi_k N2((dx, dy); loc_k, scale_k, corr_k)

    with pi = softmax(logits) and N2 a bivariate normal with standard deviations scale_k and
    correlation corr_k. K = 1 is the paper's handwriting "Gauss" emission, K = 20 its "GMM".
    (Graves writes the pen bit as e_t = probability of the stroke ending; here pen_logits is its
    logit and pen = 1 marks the last point of a stroke, as in docs/paper.md.)

    Args:
        pen_logits: [...]          logit of pen = 1.
        logits:     [..., K]       unnormalized mixture log-weights.
        loc:        [..., K, 2]    component means of (dx, dy).
        scale:      [..., K, 2]    component standard deviations (> 0).
        corr:       [..., K]       component correlations, strictly inside (-1, 1).
    The leading dims broadcast to batch_shape; event_shape is (3,).
    """

    arg_constraints = {
        "pen_logits": constraints.real,
        "logits": constraints.independent(constraints.real, 1),
        "loc": constraints.independent(constraints.real, 2),
        "scale": constraints.independent(constraints.positive, 2),
        "corr": constraints.independent(_OpenInterval(-1.0, 1.0), 1),
    }
    support = _PenAndOffsets()
    has_rsample = False

    def __init__(self, pen_logits, logits, loc, scale, corr, validate_args=None):
        pen_logits = torch.as_tensor(pen_logits, dtype=logits.dtype, device=logits.device)
        shapes = (
            f"pen_logits {tuple(pen_logits.shape)}, logits {tuple(logits.shape)}, loc {tuple(loc.shape)}, "
            f"scale {tuple(scale.shape)}, corr {tuple(corr.shape)}"
        )
        if logits.dim() < 1 or loc.dim() < 2 or scale.dim() < 2 or corr.dim() < 1:
            raise _shape_error("StrokeMixture", f"need logits/corr [..., K], loc/scale [..., K, 2]; got {shapes}")
        k = logits.shape[-1]
        if loc.shape[-1] != 2 or scale.shape[-1] != 2:
            raise _shape_error("StrokeMixture", f"loc and scale must end in 2 (dx, dy); got {shapes}")
        if loc.shape[-2] != k or scale.shape[-2] != k or corr.shape[-1] != k:
            raise _shape_error("StrokeMixture", f"number of components differs; got {shapes}")
        try:
            batch_shape = torch.broadcast_shapes(
                pen_logits.shape, logits.shape[:-1], loc.shape[:-2], scale.shape[:-2], corr.shape[:-1]
            )
        except RuntimeError as e:
            raise _shape_error("StrokeMixture", f"shapes do not broadcast; got {shapes}") from e
        self.pen_logits = pen_logits.expand(batch_shape)
        self.logits = logits.expand(batch_shape + (k,))
        self.loc = loc.expand(batch_shape + (k, 2))
        self.scale = scale.expand(batch_shape + (k, 2))
        self.corr = corr.expand(batch_shape + (k,))
        super().__init__(batch_shape, torch.Size((3,)), validate_args=validate_args)

    @property
    def num_components(self):
        return self.logits.shape[-1]

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(StrokeMixture, _instance)
        batch_shape = torch.Size(batch_shape)
        k = self.num_components
        new.pen_logits = self.pen_logits.expand(batch_shape)
        new.logits = self.logits.expand(batch_shape + (k,))
        new.loc = self.loc.expand(batch_shape + (k, 2))
        new.scale = self.scale.expand(batch_shape + (k, 2))
        new.corr = self.corr.expand(batch_shape + (k,))
        super(StrokeMixture, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        pen = value[..., 0]
        # log Bernoulli(pen; sigmoid(l)) = pen * l - softplus(l): exact for |l| large
        log_pen = pen * self.pen_logits - F.softplus(self.pen_logits)
        offsets = value[..., None, 1:]  # [..., 1, 2] against [..., K, 2]
        z = (offsets - self.loc) / self.scale
        z1, z2 = z[..., 0], z[..., 1]
        rho = self.corr
        # log(1 - rho^2) without cancellation when |rho| is near 1
        log_one_minus_rho2 = torch.log1p(-rho) + torch.log1p(rho)
        quad = (z1.pow(2) + z2.pow(2) - 2 * rho * z1 * z2) / (2 * torch.exp(log_one_minus_rho2))
        log_norm = -_LOG_2PI - self.scale.log().sum(-1) - 0.5 * log_one_minus_rho2
        log_offsets = torch.logsumexp(F.log_softmax(self.logits, dim=-1) + log_norm - quad, dim=-1)
        return log_pen + log_offsets

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)  # sample_shape + batch_shape + (3,)
        batch = shape[:-1]
        with torch.no_grad():
            pen = torch.bernoulli(torch.sigmoid(self.pen_logits).expand(batch))
            k = dist.Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
            index = k[..., None]
            loc = self.loc.expand(batch + self.loc.shape[-2:]).gather(-2, index[..., None].expand(batch + (1, 2)))
            scale = self.scale.expand(batch + self.scale.shape[-2:]).gather(-2, index[..., None].expand(batch + (1, 2)))
            rho = self.corr.expand(batch + self.corr.shape[-1:]).gather(-1, index).squeeze(-1)
            loc, scale = loc.squeeze(-2), scale.squeeze(-2)
            e1, e2 = torch.randn(batch + (2,), dtype=loc.dtype, device=loc.device).unbind(-1)
            dx = loc[..., 0] + scale[..., 0] * e1
            dy = loc[..., 1] + scale[..., 1] * (rho * e1 + torch.sqrt((1 - rho) * (1 + rho)) * e2)
            return torch.stack([pen.to(loc.dtype), dx, dy], dim=-1)

    @lazy_property
    def mixture_probs(self):
        return F.softmax(self.logits, dim=-1)

    @property
    def mean(self):
        offsets = (self.mixture_probs.unsqueeze(-1) * self.loc).sum(-2)
        return torch.cat([torch.sigmoid(self.pen_logits).unsqueeze(-1), offsets], dim=-1)

    @property
    def variance(self):
        p = torch.sigmoid(self.pen_logits)
        second_moment = (self.mixture_probs.unsqueeze(-1) * (self.scale.pow(2) + self.loc.pow(2))).sum(-2)
        offsets_var = second_moment - self.mean[..., 1:].pow(2)
        return torch.cat([(p * (1 - p)).unsqueeze(-1), offsets_var], dim=-1)

    def with_temperature(self, tau):
        """Graves' sampling bias: mixture logits / tau, scales * sqrt(tau); tau = 1 is the identity.
        The pen bit and the correlations are left alone."""
        root_tau = check_temperature(tau)
        return StrokeMixture(
            self.pen_logits,
            self.logits / tau,
            self.loc,
            self.scale * root_tau,
            self.corr,
            validate_args=self._validate_args,
        )
