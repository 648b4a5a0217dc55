"""Per-sequence ELBO terms and importance weights from Pyro's traces (Chung et al. 2015; docs/paper.md).

The ELBO of one sequence is

    E_q [ sum_t log p(x_t | z_{<=t}, x_{<t})  -  sum_t ( log q(z_t | x_{<=t}, z_{<t}) - log p(z_t | x_{<t}, z_{<t}) ) ]

A guide trace and the model replayed on it hold every term at its sample site, already masked at
padding steps, with the shape of the plates around it (sequences, and particles when vectorized).
Summing the sites and keeping those dimensions gives one number per sequence, which is what the
paper reports; Pyro's own ELBO objects give the sum over the batch.

Table 1's "~" rows estimate log p(x) itself by importance sampling with the guide as proposal:

    log p(x) ~ log (1/K) sum_k w_k,    w_k = p(x, z^k) / q(z^k | x),   z^k ~ q(z | x)

Pyro's `vectorized_importance_weights` draws the K particles in one pass (a particle plate at dim -2
over the sequence plate at dim -1); its traces give log w as a [K, B] tensor, so every sequence gets
its own estimate. The same particles give the K-sample ELBO estimate mean_k log w_k, and by Jensen's
inequality log mean_k w_k >= mean_k log w_k for every sequence: the "~" number is never below the ">=" one.

Each call creates the `Record` that carries the guide's recurrence to the model (pyro_vrnn/record.py).

Training may also use `FreeBitsELBO`, the ELBO with free bits (Kingma et al. 2016), which keeps the
optimizer from pushing q(z_t | ...) onto the prior for the last few nats of each step, or a tighter
bound on log p(x) from K particles: `IWAEELBO` (Burda et al. 2016) and `FIVOELBO` (Maddison et al. 2017;
Le et al. 2018; Naesseth et al. 2018), both per sequence.
"""

import math

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, TraceMeanField_ELBO
from pyro.infer.importance import vectorized_importance_weights
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pyro_vrnn.record import Record
from pyro_vrnn.smc import particle_filter, stepper_for
from pyro_vrnn.stacked_elbo import (
    broadcast_shape,
    stackable,
    stackable_groups,
    stacked_mask,
    stacked_normal,
    stacked_scale,
    stacked_traces,
)


def site_log_prob_sum(trace, observed, dtype=None):
    """Sum of the masked log-densities of the sample sites (observed or latent) of a trace, per sequence.

    dtype: accumulate in this dtype (float64 for long sequences), default the sites' own.
    """
    trace.compute_log_prob()
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"] == observed and not site_is_subsample(site):
            log_prob = site["log_prob"]
            total = total + (log_prob if dtype is None else log_prob.to(dtype))
    return total


def traces(model, guide, vrnn, x, mask, **kwargs):
    """(guide trace, model trace replayed on it), the record of the guide's pass passed to both."""
    record = Record()
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask, record=record, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        vrnn, x, mask, record=record, **kwargs
    )
    return guide_trace, model_trace


def site_kl_sum(guide_trace, model_trace, dtype=None):
    """sum_t KL(q(z_t | ...) || p(z_t | ...)) per sequence (and particle): the KL of each latent site's guide
    distribution from the model's, in closed form, masked at padding as the sites' log-densities are.

    Both are conditioned on the guide's draws of the earlier steps, so the sum is the KL term of the ELBO
    along one path of draws: its expectation is the ELBO's KL term, as that of the sum of log q - log p
    at the draws is (Trace_ELBO's), but each step's term is exact, so it is never negative and varies less
    (the estimate TraceMeanField_ELBO optimizes). A pair with no closed form falls back to log q - log p.
    """
    total = 0.0
    for name, guide_site in guide_trace.nodes.items():
        if guide_site["type"] != "sample" or guide_site["is_observed"] or site_is_subsample(guide_site):
            continue
        model_site = model_trace.nodes[name]
        try:
            kl = kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            kl = guide_site["fn"].log_prob(guide_site["value"]) - model_site["fn"].log_prob(guide_site["value"])
        mask = guide_site["mask"]  # None or True: a step where every sequence is real
        kl = kl if mask is None or mask is True else scale_and_mask(kl, 1.0, mask)
        total = total + (kl if dtype is None else kl.to(dtype))
    return total


@torch.no_grad()
def elbo_terms(model, guide, vrnn, x, mask, **condition):
    """One-sample estimates, per sequence, of the reconstruction term and of the KL term.

    Returns (log_likelihood [B], kl [B]) with ELBO = log_likelihood - kl: the reconstruction at the guide's
    draws, and the KL in closed form at each step along them (`site_kl_sum`; never negative). For models
    without latent variables kl is zero and log_likelihood is the exact log p(x).
    """
    guide_trace, model_trace = traces(model, guide, vrnn, x, mask, **condition)
    log_likelihood = site_log_prob_sum(model_trace, observed=True)
    zeros = x.new_zeros(x.shape[0])
    return zeros + log_likelihood, zeros + site_kl_sum(guide_trace, model_trace)


@torch.no_grad()
def exact_log_likelihood(model, vrnn, x, mask, **condition):
    """log p(x) [B] of a model without latent variables: the sum of its observed sites, exactly. condition: the
    program's further keyword arguments (a text), here and below."""
    trace = poutine.trace(model).get_trace(vrnn, x, mask, **condition)
    return x.new_zeros(x.shape[0], dtype=torch.float64) + site_log_prob_sum(trace, True, torch.float64)


@torch.no_grad()
def particle_terms(model, guide, vrnn, x, mask, num_samples, **condition):
    """(log p(x | z^k), log q(z^k | x) - log p(z^k), the closed-form KL along z^k), each [K, B], for K particles
    drawn in one vectorized pass; the difference of the first two is the log-weight
    log w_k = log p(x, z^k) - log q(z^k | x), and the third (`site_kl_sum`) is what reports call the KL term.

    Pyro pools the weights over the batch; its traces keep them apart: every site's log-prob has
    the particles at dim -2 and the sequences at dim -1 (padding steps are masked to zero).
    """
    _, model_trace, guide_trace = vectorized_importance_weights(
        model, guide, vrnn, x, mask, record=Record(), num_samples=num_samples, max_plate_nesting=1, **condition
    )
    shape = (num_samples, x.shape[0])
    for trace in (model_trace, guide_trace):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site_is_subsample(site) and site["log_prob"].shape != shape:
                raise RuntimeError(
                    f"site {name} has log-densities of shape {tuple(site['log_prob'].shape)}, "
                    f"expected {shape} (particles x sequences)"
                )
    zeros = x.new_zeros(shape, dtype=torch.float64)
    log_likelihood = zeros + site_log_prob_sum(model_trace, True, torch.float64)
    log_q_minus_log_p = (
        zeros
        + site_log_prob_sum(guide_trace, False, torch.float64)
        - site_log_prob_sum(model_trace, False, torch.float64)
    )
    return log_likelihood, log_q_minus_log_p, zeros + site_kl_sum(guide_trace, model_trace, torch.float64)


def particle_log_weights(model, guide, vrnn, x, mask, num_samples, **condition):
    """log w [K, B] = log p(x, z^k) - log q(z^k | x) for K particles drawn in one vectorized pass."""
    log_likelihood, log_q_minus_log_p, _ = particle_terms(model, guide, vrnn, x, mask, num_samples, **condition)
    return log_likelihood - log_q_minus_log_p


def summarize_log_weights(log_w, kl=None):
    """Per-sequence figures from log w [K, B]: the K-sample ELBO mean_k log w_k, the IS estimate
    log (1/K) sum_k w_k, and the effective sample size (sum_k w_k)^2 / sum_k w_k^2 (1 to K); with the
    particles' closed-form KL terms kl [K, B] (`site_kl_sum`), their mean, the ELBO's KL part."""
    num_samples = log_w.shape[0]
    log_sum = torch.logsumexp(log_w, dim=0)
    figures = {
        "elbo": log_w.mean(0),
        "log_px": log_sum - math.log(num_samples),
        "ess": torch.exp(2 * log_sum - torch.logsumexp(2 * log_w, dim=0)),
    }
    if kl is not None:
        figures["kl"] = kl.mean(0)
    return figures


class FreeBitsELBO(TraceMeanField_ELBO):
    """The ELBO with free bits (Kingma et al. 2016, eq. 15), a training objective:

        sum_t [ E_q log p(x_t | z_{<=t}, x_{<t})  -  max(lambda, mean_b KL_t,b) ]

    KL_t,b = KL(q(z_t | ...) || p(z_t | h_{t-1})) of sequence b at step t, in closed form (both are diagonal
    Gaussians, as in TraceMeanField_ELBO). While the batch's mean KL at a step is below `free_bits` (lambda
    nats) it counts as lambda and gives no gradient: the guide may carry that much information at every
    step for free, so the optimizer has nothing to gain by collapsing z onto the prior early in training.
    Above lambda it is the ELBO's own term. Reported bounds (validation, evaluation) are the true ELBO.

    The KL of all steps is one call (stacked_elbo.py). With lambda 0 this is TraceMeanField_ELBO, which
    `--elbo meanfield --scoring batched` trains: where a latent pair is not two reparameterized DiagNormals
    or the guide has auxiliary sites, it is TraceMeanField_ELBO's own loss (its sampled fallback for a pair
    with no closed form, its entropy terms). With lambda > 0 every latent site needs the closed form.
    """

    def __init__(self, free_bits, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = float(free_bits)

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)  # TraceMeanField_ELBO's, with its checks
        return stacked_traces(model, guide, args, kwargs, self.max_plate_nesting)

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo, latent = 0.0, []
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
            elif site["type"] == "sample":
                latent.append((guide_trace.nodes[name], site))
        if self.free_bits == 0 and not self.stackable_mean_field(latent, model_trace, guide_trace):
            return super()._differentiable_loss_particle(model_trace, guide_trace)  # TraceMeanField_ELBO's
        for pairs in stackable_groups(latent, sites_of=tuple):  # the (q, p) of z_t of all steps: one KL call
            guide_sites = [guide_site for guide_site, _ in pairs]
            kl = self.step_kl(pairs)  # [S, (K,) B]: KL_t,b of each step t of the group
            mask = stacked_mask(guide_sites, kl)
            step_kl = torch.where(mask, kl, kl.new_zeros(())).flatten(1).sum(1)  # [S]: sum_b KL_t,b
            count = mask.flatten(1).sum(1)  # n_t, the real sequences at step t
            elbo = elbo - (stacked_scale(guide_sites, kl) * torch.clamp(step_kl, min=self.free_bits * count)).sum()
        return -torch_item(elbo), -elbo

    @staticmethod
    def stackable_mean_field(latent, model_trace, guide_trace):
        """Whether TraceMeanField_ELBO's loss is this class's with lambda 0: every latent (q, p) pair stackable,
        and no auxiliary guide site (one the model does not have)."""
        auxiliary = any(
            s["type"] == "sample" and name not in model_trace.nodes for name, s in guide_trace.nodes.items()
        )
        return not auxiliary and all(stackable(q) and stackable(p) for q, p in latent)

    @staticmethod
    def step_kl(pairs):
        """KL(q || p) of each (guide site, model site) pair, stacked: [S, *batch]; one call for DiagNormals."""
        if len(pairs) == 1:
            ((guide_site, model_site),) = pairs
            return kl_divergence(guide_site["fn"], model_site["fn"]).unsqueeze(0)
        shape = broadcast_shape(*pairs[0])
        return kl_divergence(stacked_normal([q for q, _ in pairs], shape), stacked_normal([p for _, p in pairs], shape))


NO_KL_WEIGHT = "a particle bound weighs every site alike; a KL weight (--kl-anneal-epochs) has no place in it"


class ParticleBound(ELBO):
    """A K-particle bound on sum_b log p(x_b) as a Pyro ELBO: `differentiable_loss` is -(plate scale) times the
    sum over the batch of each sequence's bound, so that `bound(Program(model), Program(guide))` is an
    ELBOModule that pyro_vrnn/svi.py trains (and DDP wraps) as it does Trace_ELBO's. No KL weight: the
    weights p(x, z) / q(z | x) are only a bound with every site counted once (kl_scale must be 1)."""

    def __init__(self, num_particles):
        super().__init__(num_particles=num_particles, max_plate_nesting=1, vectorize_particles=True)

    def per_sequence(self, model, guide, *args, **kwargs):
        """The bound of each sequence [B], and the plate's scale (the data set's size over the batch's)."""
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs):
        bound, scale = self.per_sequence(model, guide, *args, **kwargs)
        return -scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return torch_item(loss)

    def _get_trace(self, model, guide, args, kwargs):
        return stacked_traces(model, guide, args, kwargs, self.max_plate_nesting)  # the z_t sites scored at once


def unscaled_site_sum(trace, zeros):
    """sum over the sample sites of their masked, unscaled log-densities, broadcast to the shape of `zeros`; and
    the sites' common scale (raises if the sites' scales differ: a KL weight)."""
    terms, scales = [zeros], set()
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            mask = site["mask"]  # None or True: a step where every sequence is real
            terms.append(
                site["unscaled_log_prob"]
                if mask is None or mask is True
                else scale_and_mask(site["unscaled_log_prob"], 1.0, mask)
            )
            scales.add(float(site["scale"]))
    if len(scales) > 1:
        raise ValueError(NO_KL_WEIGHT)
    # one stack and one sum, not a chain of additions: one node in the backward pass instead of one a site
    return torch.stack(torch.broadcast_tensors(*terms)).sum(0), scales.pop() if scales else 1.0


class IWAEELBO(ParticleBound):
    """The importance-weighted bound of each sequence (Burda et al. 2016, eq. 8), summed over the batch:

        sum_b log (1/K) sum_k w_kb,   w_kb = p(x_b, z^k_b) / q(z^k_b | x_b),   z^k_b ~ q(z | x_b)

    The K particles are drawn in one vectorized pass (Pyro's particle plate at dim -2, as RenyiELBO and
    vectorized_importance_weights draw them), the guide's `record` passed to both programs. log w [K, B]
    comes from the sites' masked, *unscaled* log-densities: RenyiELBO(alpha=0) keeps the sequences apart
    too, but it exponentiates the scaled ones, log mean_k exp(s log w_kb) for the plate's scale s = N / B,
    and it has no differentiable_loss, so it cannot be an ELBOModule (tests/test_bounds.py). The plate's
    scale multiplies the bound instead. K = 1 is Trace_ELBO's one-sample ELBO, with its gradient.
    """

    def per_sequence(self, model, guide, *args, **kwargs):
        kwargs.setdefault("record", Record())
        model_trace, guide_trace = next(self._get_traces(model, guide, args, kwargs))
        x = args[-2]  # (vrnn,) x, mask: the programs' arguments
        zeros = x.new_zeros(self.num_particles, x.shape[0])
        log_p, scale = unscaled_site_sum(model_trace, zeros)
        log_q, _ = unscaled_site_sum(guide_trace, zeros)
        return torch.logsumexp(log_p - log_q, dim=0) - math.log(self.num_particles), scale


class FIVOELBO(ParticleBound):
    """The filtering variational objective of each sequence (Maddison et al. 2017, eq. 3; Le et al. 2018;
    Naesseth et al. 2018), summed over the batch: E log p^(x_b), p^ the particle filter's estimate of p(x_b)
    with K particles, the guide as proposal, each sequence resampled (systematically) when its ESS < K/2;
    pyro_vrnn/smc.py has the equations. The filter runs on the networks of the Programs (a Program's
    .vrnn; or the programs' first argument), through the stepper of `model_name`, not on Pyro traces; the
    resampling decisions' score-function gradient terms are dropped, as FIVO does. K = 1 is the ELBO.
    """

    def __init__(self, num_particles, model_name, guide_name, resampling="systematic"):
        super().__init__(num_particles)
        self.model_name, self.guide_name, self.resampling = model_name, guide_name, resampling

    def per_sequence(self, model, guide, *args, num_sequences=None, kl_scale=1.0, record=None):
        if kl_scale != 1.0:
            raise ValueError(NO_KL_WEIGHT)
        vrnn, x, mask = (guide.vrnn, *args) if hasattr(guide, "vrnn") else args
        stepper = stepper_for(self.model_name, vrnn, self.guide_name, x, mask)
        result = particle_filter(stepper, self.num_particles, self.resampling)
        return result.log_evidence.to(x.dtype), (num_sequences or x.shape[0]) / x.shape[0]
