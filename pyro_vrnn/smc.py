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

`VRNNStepper` wraps the VRNN; another model registers its own with `register_stepper(model_name, factory)`,
factory(network, guide_name, x, mask) -> stepper, and `stepper_for` finds it (the FIVO objective and the
evaluation call it with the run's --model and --guide).
"""

import math
from typing import NamedTuple

import torch

from pyro_vrnn.config import SRNN_MODELS
from pyro_vrnn.networks import State
from pyro_vrnn.srnn import SRNNStepper


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
    identity = torch.arange(num_particles, device=mask.device)[:, None].expand(num_particles, batch)
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
        # only before a real step: after a sequence's last one, resampling would change nothing it reports
        ess = torch.exp(-torch.logsumexp(2 * log_wbar, dim=0))
        resample = mask[:, t + 1] & (ess < ess_threshold * num_particles)
        if resample.any():  # a step where no sequence resamples draws nothing and moves nothing
            drawn = RESAMPLERS[resampling](log_wbar.detach().exp())
            state = stepper.reorder(state, torch.where(resample, drawn, identity))
            log_wbar = torch.where(resample, -math.log(num_particles), log_wbar)
            resamples = resamples + resample
    log_weights = log_wbar + log_evidence + math.log(num_particles)
    return SMCResult(log_evidence, log_weights, resamples)


def take_particles(tensor, ancestors):
    """tensor [K, B, ...] with [k, b] replaced by [ancestors[k, b], b]: rows of the flat [K * B, ...] (index_select,
    whose backward is one index_add, is some 2x faster than gather on CPU)."""
    num_particles, batch = ancestors.shape
    rows = (ancestors * batch + torch.arange(batch, device=ancestors.device)).reshape(-1)
    flat = tensor.reshape((num_particles * batch,) + tensor.shape[2:])
    return flat.index_select(0, rows).reshape(tensor.shape)


class VRNNStepper:
    """The VRNN (networks.VRNN) and its guide, one step at a time, as models/vrnn.py and guides/ compute them:

        proposal    q(z_t | x_t, h_{t-1}) = vrnn.posterior(phi_x(x_t), h_{t-1}); with the smoothing guide
                    vrnn.posterior(a_t, h_{t-1}), a = vrnn.backward_states(phi_x(x), mask)
        transition  log p(z_t | h_{t-1}) = vrnn.prior(h_{t-1}),
                    log p(x_t | z_t, h_{t-1}) = vrnn.emission(z_t, h_{t-1}),  h_t = vrnn.step(phi_x(x_t), z_t, h_{t-1})
    The state is (h,) for a GRU, (h, c) for an LSTM, each [K, B, H].
    """

    def __init__(self, vrnn, guide_name, x, mask):
        if guide_name not in ("filtering", "smoothing"):
            raise ValueError(f"unknown guide {guide_name!r} for the VRNN's particle filter")
        self.vrnn, self.x, self.mask = vrnn, x, mask
        phi_x = vrnn.phi_x(x)  # [B, T, F], every step in one call, as the guides do
        features = vrnn.backward_states(phi_x, mask) if guide_name == "smoothing" else phi_x
        # one tensor a step: the backward pass then stacks T gradients once, where slicing [:, t] would add T
        # gradients of the whole [B, T, F] (quadratic in T)
        self.phi_x, self.features, self.values = phi_x.unbind(1), features.unbind(1), x.unbind(1)

    def initial_state(self, num_particles):
        h0 = self.vrnn.initial_state(self.x)  # h_0 = 0 (and c_0 = 0)
        return tuple(t.expand((num_particles,) + t.shape) for t in h0 if t is not None)

    def proposal(self, t, state):
        h = state[0]  # expanded to the particles here: a broadcasting concatenation costs 4x as much
        return self.vrnn.posterior(self.features[t].expand(h.shape[:-1] + (-1,)), h)

    def transition(self, t, state, z):
        h = state[0]
        log_prior = self.vrnn.prior(h).log_prob(z)
        log_likelihood = self.vrnn.emission(z, h).log_prob(self.values[t])
        phi_x = self.phi_x[t].expand(h.shape[:-1] + (-1,))
        following = self.vrnn.step(phi_x, z, State(h, state[1] if len(state) > 1 else None))
        return log_prior, log_likelihood, tuple(s for s in following if s is not None)

    def reorder(self, state, ancestors):
        return tuple(take_particles(s, ancestors) for s in state)


STEPPERS = {name: VRNNStepper for name in ("vrnn-i-gauss", "vrnn-gauss", "vrnn-gmm")}
# The SRNN's guide is always its smoothing one: its stepper takes no guide name.
STEPPERS.update({name: (lambda net, guide_name, x, mask: SRNNStepper(net, x, mask)) for name in SRNN_MODELS})


def register_stepper(model_name, factory):
    """Make `--model model_name` usable by FIVO and the SMC estimate: factory(network, guide_name, x, mask)."""
    STEPPERS[model_name] = factory


def stepper_for(config_or_model_name, network, guide_name, x, mask):
    """The stepper of a model (a Config, whose .model is read, or a model name) over the batch x [B, T, D]."""
    name = getattr(config_or_model_name, "model", config_or_model_name)
    if name not in STEPPERS:
        raise ValueError(f"--model {name} has no particle filter (latent models: {', '.join(sorted(STEPPERS))})")
    return STEPPERS[name](network, guide_name, x, mask)
