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

Each call creates the `Record` that carries the guide's recurrence to the model (pyro_vrnn/infer/record.py).

Training may also use `FreeBitsELBO`, the ELBO with free bits (Kingma et al. 2016), which keeps the
optimizer from pushing q(z_t | ...) onto the prior for the last few nats of each step, or a tighter
bound on log p(x) from K particles: `IWAEELBO` (Burda et al. 2016) and `FIVOELBO` (Maddison et al. 2017;
Le et al. 2018; Naesseth et al. 2018), both per sequence.
"""

import math
import numbers

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.importance import vectorized_importance_weights
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pyro_vrnn.infer.record import Record
from pyro_vrnn.infer.smc import particle_filter
from pyro_vrnn.infer.stacked_elbo import (
    Objective,
    StackedTrace_ELBO,
    broadcast_shape,
    group_log_prob,
    masked,
    model_guide_traces,
    sample_sites,
    stackable_groups,
    stacked_mask,
    stacked_normal,
    stacked_scale,
    vectorized_particles,
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


class FreeBitsELBO(StackedTrace_ELBO):
    """The ELBO with free bits (Kingma et al. 2016, eq. 15), a training objective:

        sum_t [ E_q log p(x_t | z_{<=t}, x_{<t})  -  max(lambda, mean_b KL_t,b) ]

    KL_t,b = KL(q(z_t | ...) || p(z_t | h_{t-1})) of sequence b at step t, in closed form (both are diagonal
    Gaussians, as in TraceMeanField_ELBO). While the batch's mean KL at a step is below `free_bits` (lambda
    nats) it counts as lambda and gives no gradient: the guide may carry that much information at every
    step for free, so the optimizer has nothing to gain by collapsing z onto the prior early in training.
    Above lambda it is the ELBO's own term. Reported bounds (validation, evaluation) are the true ELBO. A site's
    scale s (the plate's, a KL weight, or a tensor from poutine.scale: a weight per sequence) weighs both sides,
    max(lambda sum_b s_b, sum_b s_b KL_t,b) over the real sequences: s times the clamp above when s is one number.

    The traces and the other sites are StackedTrace_ELBO's (stacked_elbo.py); the KL of all steps is one
    call. With lambda 0 this is TraceMeanField_ELBO's loss, which `--elbo meanfield --scoring batched`
    trains; as there, a pair with no closed-form KL contributes log q - log p at the guide's draw.
    """

    def __init__(self, free_bits, **kwargs):
        super().__init__(**kwargs)
        self.free_bits = float(free_bits)

    def latent_cost(self, pairs):
        cost = 0.0
        for group in stackable_groups(pairs, sites_of=tuple):  # the (q, p) of z_t of all steps: one KL call
            guide_sites = [guide_site for guide_site, _ in group]
            kl = self.step_kl(group)  # [S, (K,) B]: KL_t,b of each step t of the group
            mask = stacked_mask(guide_sites, kl)
            weight = torch.where(mask, broadcast_scales(guide_sites, kl), kl.new_zeros(()))  # s_t,b; 0 on padding
            step_kl = (torch.where(mask, kl, kl.new_zeros(())) * weight).flatten(1).sum(1)  # [S]: sum_b s KL_t,b
            if self.free_bits > 0:  # lambda for each real sequence, weighed as its KL is: max(lambda, KL) if s is one
                step_kl = torch.maximum(step_kl, self.free_bits * weight.flatten(1).sum(1))
            cost = cost + step_kl.sum()
        return cost

    @staticmethod
    def step_kl(pairs):
        """KL(q || p) of each (guide site, model site) pair, stacked: [S, *batch]; one call for DiagNormals. A pair
        with no closed form gets log q - log p at the guide's draw, as in TraceMeanField_ELBO."""
        if len(pairs) > 1:
            shape = broadcast_shape(*pairs[0])
            return kl_divergence(
                stacked_normal([q for q, _ in pairs], shape), stacked_normal([p for _, p in pairs], shape)
            )
        ((guide_site, model_site),) = pairs
        try:
            kl = kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            value = guide_site["value"]
            kl = guide_site["fn"].log_prob(value) - model_site["fn"].log_prob(value)
        return kl.unsqueeze(0)


def broadcast_scales(sites, like):
    """The sites' scales, to broadcast with `like` [S, *batch]: numbers (the plate's, times a KL weight) as a column
    [S, 1, ...], one copy to the device; a tensor scale (a weight per sequence, from poutine.scale) expanded."""
    if all(isinstance(site["scale"], numbers.Number) for site in sites):
        return stacked_scale(sites, like).reshape((-1,) + (1,) * (like.dim() - 1))
    return torch.stack([torch.as_tensor(site["scale"]).to(like).expand(like.shape[1:]) for site in sites])


NO_KL_WEIGHT = "a particle bound weighs every site alike; a KL weight (--kl-anneal-epochs) has no place in it"


class ParticleBound(Objective):
    """A K-particle bound on sum_b log p(x_b) as a Pyro ELBO: `differentiable_loss` is -(plate scale) times the
    sum over the batch of each sequence's bound, so that `bound(Program(model), Program(guide))` is an
    ELBOModule that pyro_vrnn/train/svi_step.py trains (and DDP wraps) as it does Trace_ELBO's. No KL weight: the
    weights p(x, z) / q(z | x) are only a bound with every site counted once (kl_scale must be 1)."""

    def __init__(self, num_particles):
        self.num_particles = num_particles

    def per_sequence(self, model, guide, *args, **kwargs):
        """The bound of each sequence [B], and the plate's scale (the data set's size over the batch's)."""
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs):
        bound, scale = self.per_sequence(model, guide, *args, **kwargs)
        return -scale * bound.sum()

    def traces(self, model, guide, args, kwargs):
        """(model trace, guide trace) with the K particles vectorized: a plate at dim -2, left of the sequences'."""
        particles = vectorized_particles(self.num_particles, max_plate_nesting=1)
        return model_guide_traces(particles(model), particles(guide), args, kwargs, max_plate_nesting=2)


def unscaled_site_sum(sites, zeros):
    """sum over the sample sites of their masked, unscaled log-densities (one call per stackable group), broadcast
    to the shape of `zeros`; and the sites' common scale (raises if the sites' scales differ: a KL weight)."""
    terms, scales = [zeros], {float(site["scale"]) for site in sites}
    if len(scales) > 1:
        raise ValueError(NO_KL_WEIGHT)
    for group in stackable_groups(sites):
        log_prob = masked(group, group_log_prob(group))  # [S, *batch], padding exactly 0
        terms.extend(log_prob.unbind(0) if log_prob.shape[1:] != zeros.shape else [log_prob.sum(0)])
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
        model_trace, guide_trace = self.traces(model, guide, args, kwargs)
        x = args[-2]  # (vrnn,) x, mask: the programs' arguments
        zeros = x.new_zeros(self.num_particles, x.shape[0])
        log_p, scale = unscaled_site_sum(sample_sites(model_trace), zeros)
        log_q, _ = unscaled_site_sum(sample_sites(guide_trace), zeros)
        return torch.logsumexp(log_p - log_q, dim=0) - math.log(self.num_particles), scale


class FIVOELBO(ParticleBound):
    """The filtering variational objective of each sequence (Maddison et al. 2017, eq. 3; Le et al. 2018;
    Naesseth et al. 2018), summed over the batch: E log p^(x_b), p^ the particle filter's estimate of p(x_b)
    with K particles, the guide as proposal, each sequence resampled (systematically) when its ESS < K/2;
    pyro_vrnn/infer/smc.py has the equations. The filter runs on the networks of the Programs (a Program's
    .vrnn; or the programs' first argument), through the network's own stepper, not on Pyro traces; the
    resampling decisions' score-function gradient terms are dropped, as FIVO does. K = 1 is the ELBO.
    """

    def __init__(self, num_particles, guide_name="filtering", resampling="systematic"):
        super().__init__(num_particles)
        self.guide_name, self.resampling = guide_name, resampling

    def per_sequence(self, model, guide, *args, num_sequences=None, kl_scale=1.0, record=None):
        if kl_scale != 1.0:
            raise ValueError(NO_KL_WEIGHT)
        vrnn, x, mask = (guide.vrnn, *args) if hasattr(guide, "vrnn") else args
        stepper = vrnn.stepper(x, mask, self.guide_name)
        result = particle_filter(stepper, self.num_particles, self.resampling)
        return result.log_evidence.to(x.dtype), (num_sequences or x.shape[0]) / x.shape[0]
