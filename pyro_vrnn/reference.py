"""The VRNN's ELBO and importance-sampled log p(x) in plain PyTorch: the yardstick for the Pyro programs.

The same quantities as `models/` + `guides/` under Pyro's `Trace_ELBO` / `TraceMeanField_ELBO` and
`vectorized_importance_weights`, computed from the same modules (vrnn.phi_x, encoder, phi_z, rnn,
prior_net, decoder) with no Pyro inference machinery, written the way one would by hand for speed:

    1. one loop over time for the recurrence, sampling z_t ~ q(z_t | x_t, h_{t-1}) with rsample
       (the only part that is sequential: h_t needs z_t, which needs h_{t-1});
    2. then every step at once: the prior p(z_t | h_{t-1}), the emission p(x_t | z_t, h_{t-1}) and
       their log-densities (or the analytic KL) as one batched call over [T, ..., B] (the emission in
       blocks, through the call the Pyro path makes, so that its parameters never exist for all steps
       at once);
    3. padding masked out, summed per sequence.

The noise is drawn as the guide draws it (z_1, ..., z_T, one rsample each, particles included), so
with the same RNG seed the loss, its gradients and the log-weights equal the Pyro ones
(tests/test_reference.py); run/benchmark.py times the two against each other.
"""
import math

import torch
from torch.distributions import Independent, Normal, kl_divergence


def filter_path(vrnn, x, num_particles=None):
    """Run the recurrence on x, z_t drawn from the guide: (h_prev [T, *S, H], z [T, *S, Z], q [T, *S]).

    S = (B,) or (K, B) with num_particles K. h_prev[t] is h_{t-1} (h_0 = 0); z and q are None for the
    RNN baselines, whose recurrence is driven by x alone.
    """
    batch, steps, _ = x.shape
    shape = torch.Size((batch,) if num_particles is None else (num_particles, batch))
    n = shape.numel()
    phi_x = vrnn.phi_x(x).transpose(0, 1)  # [T, B, F], computed once
    phi_x = phi_x.reshape((steps,) + (1,) * (len(shape) - 1) + phi_x.shape[1:])  # [T, 1, B, F] with particles
    phi_x = phi_x.expand((steps,) + shape + phi_x.shape[-1:]).reshape(steps, n, -1).unbind(0)  # (a backward
    # through T views of one unbind is one stack; through T indexings it would be T full-size tensors)
    h = c = x.new_zeros(n, vrnn.hidden)  # the LSTM cell wants one flat batch dim
    hs, zs, locs, scales = [], [], [], []
    for t in range(steps):
        hs.append(h)
        if vrnn.latent:
            q = vrnn.encoder(torch.cat([phi_x[t], h], dim=-1))  # q(z_t | x_t, h_{t-1})
            z = q.rsample()
            locs.append(q.base_dist.loc)
            scales.append(q.base_dist.scale)
            zs.append(z)
            inputs = torch.cat([phi_x[t], vrnn.phi_z(z)], dim=-1)
        else:
            inputs = phi_x[t]
        h, c = vrnn.rnn(inputs, (h, c))  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})

    def unflatten(tensors):
        return torch.stack(tensors).reshape((steps,) + shape + tensors[0].shape[-1:])

    h_prev = unflatten(hs)
    if not vrnn.latent:
        return h_prev, None, None
    q = Independent(Normal(unflatten(locs), unflatten(scales)), 1)
    return h_prev, unflatten(zs), q


def emission_log_prob(vrnn, x, h_prev, z):
    """log p(x_t | z_t, h_{t-1}) [T, *S]: the decoder on every step at once, in blocks without gradients (the
    emission's parameters for every step at once can be large: 20 x 200 means and scales per particle,
    sequence and step for speech); VRNN.emission_log_prob is that call."""
    return vrnn.emission_log_prob(h_prev, z, x.transpose(0, 1))


def step_terms(vrnn, x, h_prev, z, q, analytic_kl=False):
    """Per step, batched over time: (log p(x_t | z_t, h_{t-1}) [T, *S], KL_t or log q - log p [T, *S] or None)."""
    if not vrnn.latent:
        return emission_log_prob(vrnn, x, h_prev, None), None
    if vrnn.conditional_prior:
        prior = vrnn.prior_net(h_prev)
    else:
        prior = Independent(Normal(torch.zeros_like(z), 1.0), 1)
    kl = kl_divergence(q, prior) if analytic_kl else q.log_prob(z) - prior.log_prob(z)
    return emission_log_prob(vrnn, x, h_prev, z), kl


def per_sequence(terms, mask, dtype=None):
    """sum_t mask_bt * terms[t, ..., b]: [T, *S] -> [*S], padding steps contributing exactly 0."""
    if dtype is not None:
        terms = terms.to(dtype)
    mask = mask.transpose(0, 1)  # [T, B], and [T, 1, B] against particles
    mask = mask.reshape(mask.shape[:1] + (1,) * (terms.dim() - 2) + mask.shape[1:])
    return torch.where(mask, terms, terms.new_zeros(())).sum(0)


def elbo_terms(vrnn, x, mask, analytic_kl=False):
    """One-sample ELBO parts per sequence: (sum_t log p(x_t | ...) [B], sum_t KL_t [B] or zeros)."""
    h_prev, z, q = filter_path(vrnn, x)
    log_px, kl = step_terms(vrnn, x, h_prev, z, q, analytic_kl)
    log_likelihood = per_sequence(log_px, mask)
    return log_likelihood, (per_sequence(kl, mask) if kl is not None else torch.zeros_like(log_likelihood))


def elbo_loss(vrnn, x, mask, num_sequences=None, kl_scale=1.0, analytic_kl=False):
    """-ELBO of the batch, scaled to num_sequences as the plate over sequences scales it: the value and the
    gradient of Trace_ELBO (analytic_kl=False) or TraceMeanField_ELBO (True) on the Pyro programs."""
    log_likelihood, kl = elbo_terms(vrnn, x, mask, analytic_kl)
    scale = (num_sequences or x.shape[0]) / x.shape[0]
    return -(log_likelihood.sum() - kl_scale * kl.sum()) * scale


@torch.no_grad()
def particle_log_weights(vrnn, x, mask, num_samples):
    """log w [K, B] (float64) = log p(x, z^k) - log q(z^k | x) for K particles, all in one pass."""
    if not vrnn.latent:  # nothing to sample: every particle weighs the exact p(x)
        h_prev, _, _ = filter_path(vrnn, x)
        log_px, _ = step_terms(vrnn, x, h_prev, None, None)
        return per_sequence(log_px, mask, torch.float64).expand(num_samples, x.shape[0])
    h_prev, z, q = filter_path(vrnn, x, num_samples)
    log_px, log_q_minus_log_p = step_terms(vrnn, x, h_prev, z, q)
    return per_sequence(log_px, mask, torch.float64) - per_sequence(log_q_minus_log_p, mask, torch.float64)


@torch.no_grad()
def importance_log_weights(vrnn, x, mask, num_samples=100, chunk_size=None):
    """log w [K, B] for K particles, `chunk_size` particles per vectorized pass (never a loop over single
    particles); chunking bounds the memory of the [T, K, B, ...] tensors of one pass."""
    chunk_size = chunk_size or num_samples
    chunks = [particle_log_weights(vrnn, x, mask, min(chunk_size, num_samples - start))
              for start in range(0, num_samples, chunk_size)]
    return torch.cat(chunks, dim=0)


def log_px_estimate(log_w):
    """log (1/K) sum_k w_k per sequence, from log w [K, B]."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


__all__ = ["filter_path", "emission_log_prob", "step_terms", "elbo_terms", "elbo_loss", "particle_log_weights",
           "importance_log_weights", "log_px_estimate"]
