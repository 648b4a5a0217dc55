"""The diagonal Gaussian of the VRNN's prior, guide and Gauss emission (Chung et al. 2015, eqs. 5, 6, 9):

    N(x; mu, diag(sigma^2)) = prod_d N(x_d; mu_d, sigma_d^2),
    log N = sum_d [ -u_d^2 / 2 - log sigma_d ] - D/2 log 2 pi,      u_d = (x_d - mu_d) / sigma_d

`DiagNormal(loc, scale)` is the distribution that `dist.Normal(loc, scale).to_event(1)` is, written as one
class so that the two costs it pays at every time step of every sample site are visible and small:

  log_prob  is `diag_normal_log_prob`, one autograd node whose backward is the three derivatives
            written out (below), where Normal's log_prob and Independent's sum leave about ten
            small nodes per site and step for the backward pass to walk through;
  expand    returns the distribution itself when the batch shape is already the asked one, which
            it is at every site inside the plate over sequences (Pyro's plates call expand at
            every sample site; Independent(Normal) would build two new distributions each time).

Everything else is torch's: `rsample` is loc + sigma * eps, and the analytic KL between two of them, or
one and Normal(loc, scale).to_event(1) (TraceMeanField_ELBO, free bits), is registered with
torch.distributions.kl_divergence; `as_diag_normal` takes either to a DiagNormal.
tests/test_diag_normal.py checks values, gradients (gradcheck), shapes and KL against Normal.to_event(1).
run/benchmark.py measures what it saves (docs/speed.md).
"""

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.autograd.function import once_differentiable
from torch.distributions import Independent, Normal, register_kl

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagNormalLogProb(torch.autograd.Function):
    """log N(x; mu, diag(sigma^2)) summed over the last dim, with its gradients, u = (x - mu) / sigma:

    d/dx = -u / sigma,    d/dmu = u / sigma,    d/dsigma = (u^2 - 1) / sigma

    each reduced to its input's shape (x, mu and sigma broadcast: a particle dim, an expanded prior).
    once_differentiable: no second derivatives (nothing here takes them), an error rather than a wrong one.
    """

    @staticmethod
    def forward(ctx, value, loc, scale):
        u = (value - loc) / scale
        ctx.save_for_backward(u, scale)
        ctx.shapes = value.shape, loc.shape, scale.shape
        return (-0.5 * u.pow(2) - scale.log()).sum(-1) - u.shape[-1] * HALF_LOG_2PI  # scale may broadcast

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        u, scale = ctx.saved_tensors
        value_shape, loc_shape, scale_shape = ctx.shapes
        grad = grad.unsqueeze(-1)
        grad_loc = grad * u / scale  # d/dmu; d/dx is its negative
        grad_value = -grad_loc.sum_to_size(value_shape) if ctx.needs_input_grad[0] else None
        grad_scale = (grad * (u * u - 1) / scale).sum_to_size(scale_shape) if ctx.needs_input_grad[2] else None
        return grad_value, grad_loc.sum_to_size(loc_shape) if ctx.needs_input_grad[1] else None, grad_scale


def diag_normal_log_prob(value, loc, scale):
    return DiagNormalLogProb.apply(value, loc, scale)


class DiagNormal(TorchDistribution):
    """N(loc, diag(scale^2)) over the last dim: batch_shape loc.shape[:-1], event_shape loc.shape[-1:]."""

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        if loc.shape != scale.shape:
            loc, scale = torch.broadcast_tensors(loc, scale)
        self.loc, self.scale = loc, scale
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:  # distributions are immutable: the same one will do
            return self
        shape = batch_shape + self.event_shape
        return DiagNormal(self.loc.expand(shape), self.scale.expand(shape), validate_args=self._validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return self.scale.pow(2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        eps = self.loc.new_empty(shape).normal_()  # as torch's Normal draws it: the same noise for a seed
        return self.loc + eps * self.scale

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return diag_normal_log_prob(value, self.loc, self.scale)

    def entropy(self):
        return (0.5 + HALF_LOG_2PI + self.scale.log()).sum(-1).expand(self.batch_shape)


def as_diag_normal(normal):
    """A DiagNormal from a DiagNormal or from Normal(loc, scale).to_event(1) (a network of one's own)."""
    if isinstance(normal, DiagNormal):
        return normal
    if (
        isinstance(normal, Independent)
        and isinstance(normal.base_dist, Normal)
        and normal.reinterpreted_batch_ndims == 1
    ):
        return DiagNormal(normal.base_dist.loc, normal.base_dist.scale)
    raise TypeError(f"expected a diagonal Normal (DiagNormal, or Normal(loc, scale).to_event(1)), got {normal}")


@register_kl(DiagNormal, Independent)
@register_kl(Independent, DiagNormal)
def _kl_diag_normal_and_independent(q, p):
    """KL between a DiagNormal and Normal(loc, scale).to_event(1), either way round; other pairs have none."""
    try:
        return _kl_diag_normal(as_diag_normal(q), as_diag_normal(p))
    except TypeError:
        raise NotImplementedError from None


@register_kl(DiagNormal, DiagNormal)
def _kl_diag_normal(q, p):
    """KL(q || p) = sum_d [ log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2 ]."""
    ratio = (q.scale / p.scale).pow(2)
    return 0.5 * (ratio + ((q.loc - p.loc) / p.scale).pow(2) - 1 - ratio.log()).sum(-1)
