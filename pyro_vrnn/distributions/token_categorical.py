"""The emission of token data (characters, chess moves; Chung et al. 2015, eq. 6, for the kind "tokens"):
p(x_t | z_t, h_{t-1}) = softmax(phi_dec(...))[x_t], one categorical over the vocabulary of V tokens. The other
emission families, and what every one of them honours (batch dims, expand, validate_args): emissions.py.
"""

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch.distributions.utils import lazy_property

from pyro_vrnn.distributions.emissions import check_temperature

__all__ = ["TokenCategorical"]


class _TokenIds(constraints.Constraint):
    """Support of a token row: one whole number in 0 .. V-1, stored as a float in a row of width 1 (the data of
    every kind are float rows [T, D]; a float32 holds every id below 2^24 exactly)."""

    event_dim = 1

    def __init__(self, vocabulary_size):
        self.vocabulary_size = vocabulary_size
        super().__init__()

    def check(self, value):
        token = value[..., 0]
        return (token == token.round()) & (token >= 0) & (token < self.vocabulary_size)

    def __repr__(self):
        return f"TokenIds(vocabulary_size={self.vocabulary_size})"


class TokenCategorical(dist.TorchDistribution):
    """The emission over a vocabulary of V tokens (characters, chess moves): x_t = (k,), one token id, with

        p(x_t = (k,)) = softmax(logits)_k,   log p = logits_k - logsumexp(logits)

    the cross-entropy loss of a char-RNN. The value is a row of width 1 (event_shape (1,)) holding the id
    as a float, as every kind's data are float rows [T, D]; padding rows of zeros are token 0, inside the
    support (and masked out by the programs).

    Args:
        logits: [..., V] unnormalized log-probabilities; the leading dims are the batch_shape.
    """

    arg_constraints = {"logits": constraints.independent(constraints.real, 1)}
    has_rsample = False

    def __init__(self, logits, validate_args=None):
        if logits.dim() < 1:
            raise ValueError(f"TokenCategorical: need logits [..., V]; got {tuple(logits.shape)}")
        self.logits = logits
        super().__init__(logits.shape[:-1], torch.Size((1,)), validate_args=validate_args)

    @property
    def vocabulary_size(self):
        return self.logits.shape[-1]

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return _TokenIds(self.vocabulary_size)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(TokenCategorical, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape + (self.vocabulary_size,))
        super(TokenCategorical, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_probs = F.log_softmax(self.logits, dim=-1)
        index = value.long()  # [..., 1]: the id, which gather reads as the position along V
        batch_shape = torch.broadcast_shapes(log_probs.shape[:-1], index.shape[:-1])
        log_probs = log_probs.expand(batch_shape + log_probs.shape[-1:])
        return log_probs.gather(-1, index.expand(batch_shape + (1,))).squeeze(-1)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            k = dist.Categorical(logits=self.logits, validate_args=False).sample(sample_shape)
            return k.unsqueeze(-1).to(self.logits.dtype)

    @lazy_property
    def probs(self):
        return F.softmax(self.logits, dim=-1)

    def entropy(self):
        log_probs = F.log_softmax(self.logits, dim=-1)
        return -(log_probs.exp() * log_probs).sum(-1)

    def with_temperature(self, tau):
        """Sampling temperature: logits / tau (tau < 1 sharper, 1 the model itself)."""
        check_temperature(tau)
        return TokenCategorical(self.logits / tau, validate_args=self._validate_args)
