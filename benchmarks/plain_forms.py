"""The VRNN's ELBO and importance weights in plain PyTorch, in two hand-written forms: the yardstick.

The same quantities as `models/` + `guides/` under Pyro's `Trace_ELBO` / `TraceMeanField_ELBO` and
`vectorized_importance_weights`, from the same step of the VRNN (its methods prior, posterior, emission,
step: pyro_vrnn/nn/vrnn_networks.py), with no Pyro inference machinery, written the two ways one writes them by hand:

  per_step   one loop over time that computes every term at its step: q(z_t | x_t, h_{t-1}), a draw
             z_t, the prior, the emission and their log-densities (or the analytic KL), then h_t;
  batched    the loop runs the recurrence only (h_t needs z_t, which needs h_{t-1}: the one sequential
             part); then the prior, the emission and every log-density are one call over [T, ..., B].

Neither is always the faster: batching pays when each step is small (handwriting, D = 3), a step at
a time pays when each step's emission is big (a 20-component mixture over 200-dim speech frames),
whose batched intermediates no longer fit the caches. run/benchmark.py times the Pyro programs
against the faster of the two. The noise is drawn as the guide draws it (z_1, ..., z_T, one rsample
each, particles included), so with the same RNG seed both forms give the Pyro programs' loss,
gradients and log-weights (tests/test_reference.py).

The K-particle bounds have their plain forms too: `iwae_loss` (either form, with K particles) and
`smc_log_evidence` / `fivo_loss`, the particle filter of pyro_vrnn/infer/smc.py written out as one loop over
the same methods, particles and sequences flattened into one batch of K * B rows, with no stepper in between;
with the same seed they give IWAEELBO's and FIVOELBO's numbers and smc.particle_filter's (tests/test_bounds.py).
"""

import math

import torch
from torch.distributions import kl_divergence

from pyro_vrnn.distributions.diag_normal import DiagNormal, as_diag_normal
from pyro_vrnn.nn.vrnn_networks import State, stack_steps as stack, sum_over_steps

FORMS = ("per_step", "batched")


def per_step_terms(vrnn, x, num_particles=None, analytic_kl=False):
    """(log p(x_t | z_t, h_{t-1}) [T, *S], KL_t or log q - log p [T, *S] or None), one step at a time.

    S = (B,), or (K, B) with num_particles K. The RNN baselines have no z and no KL term.
    """
    phi_x = vrnn.phi_x(x).unbind(1)  # steps; unbind: one stack in the backward pass, as the guides
    state = vrnn.initial_state(x)
    log_px, kl = [], []
    for t in range(x.shape[1]):
        z = None
        if vrnn.latent:
            q = vrnn.posterior(phi_x[t], state.h)  # q(z_t | x_t, h_{t-1})
            z = q.rsample() if num_particles is None or t > 0 else q.rsample((num_particles,))
            prior = vrnn.prior(state.h)  # p(z_t | h_{t-1})
            kl.append(kl_divergence(q, prior) if analytic_kl else q.log_prob(z) - prior.log_prob(z))
        log_px.append(vrnn.emission(z, state.h).log_prob(x[:, t]))  # p(x_t | z_t, h_{t-1})
        state = vrnn.step(phi_x[t], z, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
    return stack(log_px), (stack(kl) if vrnn.latent else None)


def batched_terms(vrnn, x, num_particles=None, analytic_kl=False):
    """The same as `per_step_terms`: the recurrence in a loop, then every step's terms in one call each."""
    phi_x = vrnn.phi_x(x).unbind(1)
    state = vrnn.initial_state(x)
    hs, zs, posteriors = [], [], []
    for t in range(x.shape[1]):
        hs.append(state.h)
        z = None
        if vrnn.latent:
            q = vrnn.posterior(phi_x[t], state.h)
            z = q.rsample() if num_particles is None or t > 0 else q.rsample((num_particles,))
            zs.append(z)
            posteriors.append(as_diag_normal(q))
        state = vrnn.step(phi_x[t], z, state)
    h_prev = stack(hs)  # [T, *S, H]: h_0 .. h_{T-1}
    if not vrnn.latent:
        return vrnn.emission_log_prob(None, h_prev, x), None
    z = stack(zs)
    q = DiagNormal(stack([d.loc for d in posteriors]), stack([d.scale for d in posteriors]))
    prior = vrnn.prior(h_prev)
    kl = kl_divergence(q, prior) if analytic_kl else q.log_prob(z) - prior.log_prob(z)
    # the emission in blocks of steps, exactly as the Pyro model's batched form scores it
    return vrnn.emission_log_prob(z, h_prev, x), kl


TERMS = {"per_step": per_step_terms, "batched": batched_terms}


def per_sequence(terms, mask, dtype=None):
    """sum_t mask_bt * terms[t, ..., b]: [T, *S] -> [*S], padding steps contributing exactly 0."""
    return sum_over_steps(terms if dtype is None else terms.to(dtype), mask)


def elbo_terms(vrnn, x, mask, analytic_kl=False, form="batched"):
    """One-sample ELBO parts per sequence: (sum_t log p(x_t | ...) [B], sum_t KL_t [B] or zeros)."""
    log_px, kl = TERMS[form](vrnn, x, analytic_kl=analytic_kl)
    log_likelihood = per_sequence(log_px, mask)
    return log_likelihood, (per_sequence(kl, mask) if kl is not None else torch.zeros_like(log_likelihood))


def elbo_loss(vrnn, x, mask, num_sequences=None, kl_scale=1.0, analytic_kl=False, form="batched"):
    """-ELBO of the batch, scaled to num_sequences as the plate over sequences scales it: the value and the
    gradient of Trace_ELBO (analytic_kl=False) or TraceMeanField_ELBO (True) on the Pyro programs."""
    log_likelihood, kl = elbo_terms(vrnn, x, mask, analytic_kl, form)
    scale = (num_sequences or x.shape[0]) / x.shape[0]
    return -(log_likelihood.sum() - kl_scale * kl.sum()) * scale


@torch.no_grad()
def particle_log_weights(vrnn, x, mask, num_samples, form="batched"):
    """log w [K, B] (float64) = log p(x, z^k) - log q(z^k | x) for K particles, all in one pass."""
    if not vrnn.latent:  # nothing to sample: every particle weighs the exact p(x)
        log_px, _ = TERMS[form](vrnn, x)
        return per_sequence(log_px, mask, torch.float64).expand(num_samples, x.shape[0])
    log_px, log_q_minus_log_p = TERMS[form](vrnn, x, num_particles=num_samples)
    return per_sequence(log_px, mask, torch.float64) - per_sequence(log_q_minus_log_p, mask, torch.float64)


@torch.no_grad()
def importance_log_weights(vrnn, x, mask, num_samples=100, chunk_size=None, form="batched"):
    """log w [K, B] for K particles, `chunk_size` particles per vectorized pass; chunking bounds the memory
    of the [T, K, B, ...] tensors of one pass."""
    chunk_size = chunk_size or num_samples
    chunks = [
        particle_log_weights(vrnn, x, mask, min(chunk_size, num_samples - start), form)
        for start in range(0, num_samples, chunk_size)
    ]
    return torch.cat(chunks, dim=0)


def iwae_loss(vrnn, x, mask, num_particles, num_sequences=None, form="batched"):
    """-(N / B) sum_b [log sum_k w_kb - log K] (Burda et al. 2016), the value and gradient of IWAEELBO."""
    log_px, log_q_minus_log_p = TERMS[form](vrnn, x, num_particles=num_particles)
    log_w = per_sequence(log_px, mask) - per_sequence(log_q_minus_log_p, mask)  # [K, B]
    scale = (num_sequences or x.shape[0]) / x.shape[0]
    return -scale * (torch.logsumexp(log_w, 0) - math.log(num_particles)).sum()


def smc_log_evidence(vrnn, x, mask, num_particles, smoothing=False):
    """log p^(x) [B] (float64) of smc.particle_filter on the VRNN with its guide (systematic resampling of a
    sequence when its ESS < K/2, before a real step), inlined: row k * B + b is particle k of sequence b."""
    k, (batch, steps, _) = num_particles, x.shape
    phi_x = vrnn.phi_x(x)
    features = vrnn.backward_states(phi_x, mask) if smoothing else phi_x
    # per step, [B, .] -> [K * B, .]; unbind, not [:, t]: one stack in the backward pass, not T whole-size gradients
    phi_x, features, values = ([u.repeat(k, 1) for u in v.unbind(1)] for v in (phi_x, features, x))
    state = State(*(None if s is None else s.repeat(k, 1) for s in vrnn.initial_state(x)))  # h_0 = 0 of every row
    log_wbar = x.new_full((k, batch), -math.log(k), dtype=torch.float64)
    log_evidence = log_wbar.new_zeros(batch)
    columns, identity = torch.arange(batch, device=x.device), torch.arange(k, device=x.device)[:, None]
    for t in range(steps):
        real = mask[:, t]
        h = state.h
        q = vrnn.posterior(features[t], h)  # q(z_t | x_t or a_t, h_{t-1})
        z = q.rsample()
        log_alpha = vrnn.prior(h).log_prob(z) + vrnn.emission(z, h).log_prob(values[t]) - q.log_prob(z)
        log_alpha = torch.where(real, log_alpha.reshape(k, batch).double(), 0.0)
        step = torch.logsumexp(log_wbar + log_alpha, 0)
        log_evidence = log_evidence + torch.where(real, step, 0.0)
        log_wbar = torch.where(real, log_wbar + log_alpha - step, log_wbar)
        state = vrnn.step(phi_x[t], z, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
        if t + 1 == steps:
            break
        resample = mask[:, t + 1] & (torch.exp(-torch.logsumexp(2 * log_wbar, 0)) < k / 2)
        if resample.any():
            positions = (identity + torch.rand(batch, device=x.device, dtype=torch.float64)) / k
            cdf = log_wbar.detach().exp().cumsum(0).T.contiguous()
            ancestors = torch.searchsorted(cdf, positions.T.contiguous()).T.clamp(max=k - 1)
            rows = (torch.where(resample, ancestors, identity) * batch + columns).reshape(-1)
            state = State(*(None if s is None else s.index_select(0, rows) for s in state))
            log_wbar = torch.where(resample, -math.log(k), log_wbar)
    return log_evidence


def fivo_loss(vrnn, x, mask, num_particles, num_sequences=None, smoothing=False):
    """-(N / B) sum_b log p^(x_b): the value and gradient of FIVOELBO."""
    scale = (num_sequences or x.shape[0]) / x.shape[0]
    return -scale * smc_log_evidence(vrnn, x, mask, num_particles, smoothing).to(x.dtype).sum()
