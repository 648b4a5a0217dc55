"""The VRNN generative model p(x_{<=T}, z_{<=T}) as a Pyro program (Chung et al. 2015, eqs. 5-7).

    z_t | h_{t-1}       ~ N(mu_0,t, diag(sigma_0,t^2))      [mu_0,t, sigma_0,t] = phi_prior(h_{t-1})
    x_t | z_t, h_{t-1}  ~ emission(theta_t)                 theta_t = phi_dec(phi_z(z_t), h_{t-1})
    h_t                 = f(phi_x(x_t), phi_z(z_t), h_{t-1})

One program serves VRNN-Gauss, VRNN-GMM (the emission differs) and VRNN-I-Gauss (the prior is
N(0, I)): the differences live in the network `vrnn`, not here. Padding steps (mask False) are
masked out of every log-density, and because the recurrence only runs forward in time, what
happens after a sequence's end cannot change any of its terms.

Replayed on the guide's draws (every ELBO, importance sampling), the model's h_t is the one the
guide just computed from the same z_t and x_t: given the guide's `record` (pyro_vrnn/infer/record.py), it
takes h_t from there instead of running f again. Alone (generation) it runs its own recurrence.

Two forms of the one model, side by side: `vrnn_model` reads like the equations, one step at a
time, and is the one that generates; `vrnn_model_batched` computes the same densities with one
network call over all steps, from the guide's record, which is faster where steps are small
(run/benchmark.py, docs/speed.md). `--scoring` picks the form for training and evaluation.
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import stack_steps, step_masks, sum_over_steps, unbind_steps


def vrnn_model(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """x: [B, T, D] sequences, mask: [B, T] True at real steps.

    num_sequences: size of the data set the batch was drawn from, so that the ELBO is scaled to it
    (minibatch SVI); None means the batch is the whole data. kl_scale weights the z sites for KL
    annealing (as in Pyro's examples/dmm.py); the guide applies the same weight. record: the
    guide's pass over this batch (pyro_vrnn/infer/record.py), or None.
    """
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    state = vrnn.initial_state(x)  # h_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            x_obs = x[:, t]
            with poutine.mask(mask=masks[t]):
                with poutine.scale(scale=kl_scale):
                    z_t = pyro.sample(f"z_{t + 1}", vrnn.prior(state.h))  # p(z_t | h_{t-1})
                x_t = pyro.sample(f"x_{t + 1}", vrnn.emission(z_t, state.h), obs=x_obs)  # p(x_t | z_t, h_{t-1})
            if record is not None and record.drew(t, z_t) and x_t is x_obs:
                state = record.states[t]  # the guide's h_t, computed from this very z_t and x_t
            else:
                state = vrnn.step(vrnn.phi_x(x_t), z_t, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})


def vrnn_model_batched(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """`vrnn_model` with its networks run on every step at once: the form training and evaluation use.

    Replayed on the guide's pass, every h_{t-1} and z_t is known before the model runs (the `record`),
    so the prior p(z_t | h_{t-1}) of all steps is one call of phi_prior, and the emission
    log p(x_t | z_t, h_{t-1}) of all steps one call of phi_dec (`VRNN.emission_log_prob`), observed as
    one factor per sequence. The z_t sites stay one per step, as the guide's. Same ELBO, same gradients
    as `vrnn_model` (tests/test_record.py); it needs the record, so it cannot generate: `vrnn_model` does.
    """
    batch, steps, _ = x.shape
    masks = step_masks(mask)
    if record is None or len(record) != steps:
        raise ValueError(
            "vrnn_model_batched is replayed on the guide's record of this batch; "
            "run vrnn_model to generate or to run the model alone"
        )
    h_prev = stack_steps([vrnn.initial_state(x).h] + [state.h for state in record.states[:-1]])  # h_0..h_{T-1}
    priors = vrnn.prior(h_prev)  # p(z_t | h_{t-1}) of every step: batch shape [T, (K,) B]
    priors = unbind_steps(priors)  # one per step, for the z_t sites
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]):
                with poutine.scale(scale=kl_scale):
                    z_t = pyro.sample(f"z_{t + 1}", priors[t])  # p(z_t | h_{t-1})
            if not record.drew(t, z_t):
                raise ValueError(f"z_{t + 1} is not the guide's draw: vrnn_model_batched scores the guide's pass only")
        log_px = vrnn.emission_log_prob(stack_steps(record.z), h_prev, x)  # log p(x_t | z_t, h_{t-1}), [T, (K,) B]
        pyro.factor("x", sum_over_steps(log_px, mask))  # sum_t log p(x_t | z_t, h_{t-1}), padding masked out
