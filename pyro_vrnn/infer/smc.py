"""Sequential Monte Carlo over a batch of sequences, one particle population per sequence: the filter of
FIVO training (with gradients) and of evaluation's SMC estimate of log p(x) (without).

For each sequence, K particles, the guide as proposal q and the model's p (Maddison et al. 2017, alg. 1;
Le et al. 2018; Naesseth et al. 2018):

    z_t^k ~ q(z_t | x, z_{<t}^k)                                    the proposal, reparameterized
    alpha_t^k = p(z_t^k | z_{<t}^k, x_{<t}) p(x_t | z_{<=t}^k, x_{<t}) / q(z_t^k | x, z_{<t}^k)
    log p^(x) = sum_t log sum_k wbar_{t-1}^k alpha_t^k              the log mean incremental weight, each step
    wbar_t^k  = wbar_{t-1}^k alpha_t^k / sum_j wbar_{t-1}^j alpha_t^j,   wbar_0^k = 1/K
    ESS_t     = 1 / sum_k (wbar_t^k)^2;  if ESS_t < K/2:  z_{<=t}^k, h_t^k <- those of particle a^k,
              a^k ~ systematic resampling of wbar_t,  wbar_t^k = 1/K

E[p^(x)] = p(x) (Del Moral 2004), so E[log p^(x)] <= log p(x): FIVO, the filtering variational bound.
Each sequence of the batch is its own population: its ESS decides its resampling, and a sequence's steps
past its end (mask False) have alpha = 1, add nothing and never resample (nor does its last real step).
Resampling moves a particle's whole past, the recurrence's state (h_t, c_t) with it. No resampling at all is
importance sampling (log (1/K) sum_k w_k, the IWAE bound of Burda et al. 2016); K = 1 never resamples
(ESS = 1 >= 1/2): the ELBO.
Gradients: through z (reparameterized) and the weights; the resampling decisions' own score-function terms
are dropped, as FIVO does (their variance is too high to be of use; Maddison et al. 2017, sec. 4).

Pyro's `pyro.infer.SMCFilter` does not fit: it keeps one population (log-weights of shape [num_particles]),
its weights are updated under torch.no_grad, and it rescales them by their maximum, discarding log p^(x).
So the filter runs on the per-step network calls the Pyro programs make, through a stepper:

    stepper.mask                            [B, T], True at real steps
    stepper.initial_state(K)                -> state: a tuple of tensors, particles first, [K, B, ...]
    stepper.proposal(t, state)              -> q(z_t | ...): a reparameterized distribution, batch shape [K, B]
    stepper.transition(t, state, z)         -> (log p(z_t | past) [K, B], log p(x_t | z_t, past) [K, B], next state)
    stepper.reorder(state, ancestors)       -> the state with particle k of sequence b taken from ancestors[k, b]

A network with latent variables makes its own: `network.stepper(x, mask, guide_name)` (vrnn_networks.VRNNStepper,
srnn_networks.SRNNStepper), which calls the very methods that the model and guide programs call (prior, posterior,
emission, step): the filter adds the weights and the resampling, nothing of the model.
"""

import math
from typing import NamedTuple

import torch


class SMCResult(NamedTuple):
    """log p^(x) [B] (float64); the particles' log-weights [K, B] at the end, on the scale where their mean is
    p^(x) (with no resampling: importance sampling's log w_k); the resampling events of each sequence [B]."""

    log_evidence: torch.Tensor
    log_weights: torch.Tensor
    resamples: torch.Tensor


def systematic_ancestors(weights):
    """Ancestors [K, B] from normalized weights [K, B]: a^k = min{j : sum_{i<=j} w^i >= (k + u) / K}, one u ~ U(0, 1)
    per sequence (lower variance than multinomial; Douc et al. 2005)."""
    num_particles, batch = weights.shape
    positions = (
        torch.arange(num_particles, device=weights.device)[:, None]
        + torch.rand(batch, device=weights.device, dtype=weights.dtype)
    ) / num_particles
    cdf = weights.cumsum(0).T.contiguous()
    return torch.searchsorted(cdf, positions.T.contiguous()).T.clamp(max=num_particles - 1)


def multinomial_ancestors(weights):
    """Ancestors [K, B]: K independent draws from each sequence's normalized weights [K, B]."""
    return torch.multinomial(weights.T, weights.shape[0], replacement=True).T


RESAMPLERS = {"systematic": systematic_ancestors, "multinomial": multinomial_ancestors}


def resampling_step(log_wbar, next_real, ess_threshold=0.5, resampler=systematic_ancestors):
    """The resampling after step t, given log wbar_t [K, B] and next_real = mask[:, t + 1] [B]: a sequence resamples
    when ESS_t < ess_threshold * K and its next step is real (after its last one, resampling would change nothing it
    reports, and its draw would shift the random numbers of the sequences beside it). Its ancestors are drawn from
    its detached weights and its wbar_t becomes 1/K. Returns (ancestors [K, B], the identity for the sequences that
    do not resample, or None where none does: nothing drawn; log wbar_t after; which resampled [B])."""
    num_particles, batch = log_wbar.shape
    ess = torch.exp(-torch.logsumexp(2 * log_wbar, dim=0))
    resample = next_real & (ess < ess_threshold * num_particles)
    if not resample.any():
        return None, log_wbar, resample
    identity = torch.arange(num_particles, device=log_wbar.device)[:, None].expand(num_particles, batch)
    ancestors = torch.where(resample, resampler(log_wbar.detach().exp()), identity)
    return ancestors, torch.where(resample, -math.log(num_particles), log_wbar), resample


def particle_filter(stepper, num_particles, resampling="systematic", ess_threshold=0.5):
    """Run the filter of the module docstring over the stepper's batch; returns an SMCResult.

    ess_threshold: resample a sequence when its ESS < ess_threshold * K (0: never, importance sampling).
    Differentiable when called with gradients enabled (FIVO); the ancestors are drawn from detached weights.
    """
    mask = stepper.mask
    batch, steps = mask.shape
    state = stepper.initial_state(num_particles)
    log_wbar = mask.new_full((num_particles, batch), -math.log(num_particles), dtype=torch.float64)
    log_evidence = log_wbar.new_zeros(batch)
    resamples = torch.zeros(batch, dtype=torch.long, device=mask.device)
    for t in range(steps):
        real = mask[:, t]
        proposal = stepper.proposal(t, state)
        z = proposal.rsample()
        log_prior, log_likelihood, state = stepper.transition(t, state, z)
        log_alpha = torch.where(real, (log_prior + log_likelihood - proposal.log_prob(z)).double(), 0.0)
        step_log_evidence = torch.logsumexp(log_wbar + log_alpha, dim=0)  # log sum_k wbar_{t-1}^k alpha_t^k
        log_evidence = log_evidence + torch.where(real, step_log_evidence, 0.0)
        log_wbar = torch.where(real, log_wbar + log_alpha - step_log_evidence, log_wbar)
        if t + 1 == steps:
            break
        ancestors, log_wbar, resampled = resampling_step(
            log_wbar, mask[:, t + 1], ess_threshold, RESAMPLERS[resampling]
        )
        if ancestors is not None:
            state = stepper.reorder(state, ancestors)
            resamples = resamples + resampled
    log_weights = log_wbar + log_evidence + math.log(num_particles)
    return SMCResult(log_evidence, log_weights, resamples)


def take_particles(tensor, ancestors):
    """tensor [K, B, ...] with [k, b] replaced by [ancestors[k, b], b]: rows of the flat [K * B, ...] (index_select,
    whose backward is one index_add, is some 2x faster than gather on CPU)."""
    num_particles, batch = ancestors.shape
    rows = (ancestors * batch + torch.arange(batch, device=ancestors.device)).reshape(-1)
    flat = tensor.reshape((num_particles * batch,) + tensor.shape[2:])
    return flat.index_select(0, rows).reshape(tensor.shape)
