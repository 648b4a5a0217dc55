"""Ancestral sampling from a trained model: z_t from the prior, x_t from the emission, h_t updated.

    z_t ~ p(z_t | h_{t-1}),   x_t ~ p(x_t | z_t, h_{t-1}),   h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})

The model program already says how to generate (Chung et al. 2015, eqs. 5-7): run it with its
observations removed (`poutine.uncondition`) and every x_t site draws from its emission, and that
draw is what feeds the recurrence. Nothing here re-implements the model; three effect handlers
change what the same program does:

  * `poutine.uncondition`  the observed x_t sites sample instead;
  * `poutine.condition`    priming: the first P steps are pinned to a real sequence, x_{<=P}, and
                           (for a VRNN) z_{<=P} to a draw of the guide q(z | x) on it, so that h_P
                           is the filtered state of that sequence and steps P+1.. continue it;
  * `TemperatureMessenger` Graves' (2013) sampling bias on the emission: mixture logits / tau and
                           scales * sqrt(tau) (Bernoulli logits / tau); tau < 1 gives cleaner, more
                           probable samples, tau = 1 is the model itself. The prior of z is left alone.
"""

import math

import numpy as np
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger

from pyro_vrnn.distributions.diag_normal import DiagNormal


def check_temperature(tau):
    """tau must be a finite number above 0: inf makes the emission's scales infinite (every sample
    NaN), and nan slips through a `tau <= 0` test."""
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"temperature must be a finite number above 0, got {tau}")


def tempered(fn, tau):
    """The emission distribution `fn` at temperature tau (tau = 1 returns it unchanged)."""
    if tau == 1:
        return fn
    check_temperature(tau)
    if hasattr(fn, "with_temperature"):  # DiagNormalMixture, StrokeMixture
        return fn.with_temperature(tau)
    if isinstance(fn, dist.Independent):  # diagonal Gaussian / independent bits: .to_event(1)
        return tempered(fn.base_dist, tau).to_event(fn.reinterpreted_batch_ndims)
    if isinstance(fn, DiagNormal):
        return DiagNormal(fn.loc, fn.scale * math.sqrt(tau))
    if isinstance(fn, dist.Normal):
        return dist.Normal(fn.loc, fn.scale * math.sqrt(tau))
    if isinstance(fn, dist.Bernoulli):
        return dist.Bernoulli(logits=fn.logits / tau)
    if isinstance(fn, dist.ExpandedDistribution):
        return tempered(fn.base_dist, tau).expand(fn.batch_shape)
    raise ValueError(f"no temperature is defined for a {type(fn).__name__} emission; use --temperature 1")


class TemperatureMessenger(Messenger):
    """Effect handler: every x_t site that is about to be *sampled* draws from `tempered(fn, tau)`.

    Observed sites (data, or the primed steps) keep their distribution. Wrap it around
    `poutine.condition`, so that it runs after it and sees which sites are pinned.
    """

    def __init__(self, tau):
        super().__init__()
        self.tau = float(tau)
        check_temperature(self.tau)

    def _pyro_sample(self, msg):
        if msg["name"].startswith("x_") and not msg["is_observed"] and msg["value"] is None:
            msg["fn"] = tempered(msg["fn"], self.tau)


@torch.no_grad()
def prime_sites(guide, vrnn, prime, num):
    """The sites that pin the first P = len(prime) steps: x_t = prime[t] and z_t ~ q(z_t | x_{<=t}, z_{<t}).

    The guide runs the model's recurrence on its own z samples, so its draw of z_{<=P} together
    with x_{<=P} determines h_P exactly as the model would compute it.
    """
    prime = torch.as_tensor(prime, dtype=torch.float32, device=next(vrnn.parameters()).device)
    x = prime.expand(num, -1, -1)
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
    data = {f"x_{t + 1}": x[:, t] for t in range(x.shape[1])}
    data.update(
        {
            name: site["value"]
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and name.startswith("z_")
        }
    )
    return data


@torch.no_grad()
def generate(model, vrnn, num, steps, prime=None, guide=None, tau=1.0):
    """Sample `num` sequences of `steps` steps; returns x [num, steps, D] in the data's normalized units.

    prime: optional [P, D] real sequence (P <= steps, normalized units); its P steps are kept as the
    first P steps of every sample and steps P+1..steps are generated from where it leaves off.
    guide: the model's guide, used to infer z_{<=P} on the prime (None: z_{<=P} from the prior).
    tau: the emission's temperature (see `TemperatureMessenger`).
    """
    check_temperature(tau)
    device = next(vrnn.parameters()).device
    x = torch.zeros(num, steps, vrnn.x_dim, device=device)  # a shape only: uncondition never reads it
    mask = torch.ones(num, steps, dtype=torch.bool, device=device)
    program = poutine.uncondition(model)
    if prime is not None:
        prime = torch.as_tensor(prime, dtype=torch.float32)[:steps]
        data = (
            prime_sites(guide, vrnn, prime, num)
            if guide is not None
            else {f"x_{t + 1}": prime[t].to(device).expand(num, -1) for t in range(len(prime))}
        )
        program = poutine.condition(program, data=data)
    program = TemperatureMessenger(tau)(program)
    trace = poutine.trace(program).get_trace(vrnn, x, mask)
    return torch.stack([trace.nodes[f"x_{t + 1}"]["value"] for t in range(steps)], dim=1)


def to_data_units(x, info):
    """Undo the data set's normalization (stored in the checkpoint's data_info): x * std + mean."""
    x = np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)
    return x * np.asarray(info["std"]) + np.asarray(info["mean"])
