"""The SRNN generative model p(x_{<=T}, z_{<=T}) as a Pyro program (Fraccaro et al. 2016, Sec. 3; the labels
(S1)-(S3) are pyro_vrnn/nn/srnn_networks.py's):

    d_t             = f(d_{t-1}, phi_x(x_{t-1}))        (S1)   d_0 = 0, x_0 = 0
    z_t | z_{t-1}   ~ N(mu_p,t, diag(sigma_p,t^2))      (S2)   [mu_p,t, sigma_p,t] from [z_{t-1}, d_t], z_0 = 0
    x_t | z_t, d_t  ~ emission(decoder([z_t, d_t]))     (S3)

d depends on the data alone, never on z. Replayed on the guide's draws (every ELBO, importance sampling)
with x observed, the guide has already run f over all of x in one call, and the model reads d_1..d_T from
the `record` (pyro_vrnn/infer/record.py). Wherever x_{t-1} is not the data (generation: `poutine.uncondition`
draws it at the step before), d_t must be stepped from that draw: `srnn_model` does so.

Two forms, side by side, as models/vrnn.py. `srnn_model` is the model step by step, as the equations read:
it takes d from the record while its x_{<t} are the data and steps f only when it must, so it both scores and
generates. `srnn_model_batched` scores the same densities from the guide's record with one network call over
all steps for the prior and one for the emission (per-step calls are what costs at small sizes), and cannot
generate. `--scoring` picks the form for training and evaluation, as for the VRNN.
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import stack_steps, step_masks, sum_over_steps, unbind_steps


def srnn_model(srnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """The arguments of `models.vrnn.vrnn_model`: x [B, T, D], mask [B, T] (True at real steps), the size of
    the data set for minibatch scaling, the KL weight on the z sites, and the guide's record (or None)."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    d = None if record is None else record.data_states(x)  # the guide's d_1..d_T, if it read this very x
    state = srnn.initial_state(x)  # d_0 = 0
    x_prev, z_prev = x.new_zeros(batch, srnn.x_dim), srnn.initial_z(x)  # x_0 = 0, z_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            if d is not None:
                d_t = d[:, t]  # the guide's d_t = f(d_{t-1}, x_{t-1}), from the same data x_{<t}
            else:
                state = srnn.step(x_prev, state)  # d_t = f(d_{t-1}, phi_x(x_{t-1})): x_{t-1} may be a draw
                d_t = state.h
            x_obs = x[:, t]
            with poutine.mask(mask=masks[t]):
                with poutine.scale(scale=kl_scale):
                    z_t = pyro.sample(f"z_{t + 1}", srnn.prior(z_prev, d_t))  # p(z_t | z_{t-1}, d_t)
                x_t = pyro.sample(f"x_{t + 1}", srnn.emission(z_t, d_t), obs=x_obs)  # p(x_t | z_t, d_t)
            if d is not None and x_t is not x_obs:  # x_t drawn, not the data: d_{t+1} on is the model's own
                d, state = None, srnn.state_after(x[:, : t + 1])  # f's state at d_t, from the data x_{<t}
            x_prev, z_prev = x_t, z_t


def srnn_model_batched(srnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """`srnn_model` with its networks run on every step at once: the form training and evaluation use.

    Replayed on the guide's pass, d_1..d_T and every z_t are known before the model runs (the `record`), so
    the prior p(z_t | z_{t-1}, d_t) of all steps is one call of prior_net, and the emission of all steps
    one call of the decoder (`SRNN.emission_log_prob`), observed as one factor per sequence. The z_t sites
    stay one per step, as the guide's. It needs the record, so it cannot generate: `srnn_model` does.
    """
    batch, steps, _ = x.shape
    masks = step_masks(mask)
    d = None if record is None else record.data_states(x)
    if d is None or len(record) != steps:
        raise ValueError(
            "srnn_model_batched is replayed on the guide's record of this batch; "
            "run srnn_model to generate or to run the model alone"
        )
    z_prev = stack_steps([srnn.initial_z(x)] + record.z[:-1])  # z_0..z_{T-1}, [T, (K,) B, Z]
    d = d.transpose(0, 1)  # [T, B, H]: d_t of every step, the same for every particle,
    d = d.reshape(d.shape[:1] + (1,) * (z_prev.dim() - 3) + d.shape[1:])  # so [T, 1, B, H] against particles
    priors = srnn.prior(z_prev, d)  # p(z_t | z_{t-1}, d_t) of every step: batch shape [T, (K,) B]
    priors = unbind_steps(priors)  # one per step, for the z_t sites
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]):
                with poutine.scale(scale=kl_scale):
                    z_t = pyro.sample(f"z_{t + 1}", priors[t])  # p(z_t | z_{t-1}, d_t)
            if not record.drew(t, z_t):
                raise ValueError(f"z_{t + 1} is not the guide's draw: srnn_model_batched scores the guide's pass only")
        log_px = srnn.emission_log_prob(stack_steps(record.z), d, x)  # log p(x_t | z_t, d_t), [T, (K,) B]
        pyro.factor("x", sum_over_steps(log_px, mask))  # sum_t log p(x_t | z_t, d_t), padding masked out
