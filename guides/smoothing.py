"""A smoothing guide for the VRNN: q(z_{<=T} | x_{<=T}) = prod_t q(z_t | z_{<t}, x_{1:T}), as a Pyro program.

    a_t                   = g(a_{t+1}, phi_x(x_t))                   a backward RNN over x (from x_T to x_t)
    z_t | h_{t-1}, a_t    ~ N(mu_z,t, diag(sigma_z,t^2)),  [mu_z,t, sigma_z,t] = phi_enc(a_t, h_{t-1})
    h_t                   = f(phi_x(x_t), phi_z(z_t), h_{t-1})

The paper's filtering guide (guides/filtering.py) sees x_{<=t} only. But z_t shapes every later
x_{t+1}, x_{t+2}, ... through h_t, so the true posterior p(z_t | z_{<t}, x_{1:T}) depends on the
future too; a guide that cannot see it is far from the posterior (a large gap between the
importance-sampled log p(x) and the ELBO) and tends to leave z unused. Reading a summary a_t of
x_t .. x_T, as the smoothing proposals of SRNN (Fraccaro et al. 2016) and FIVO (Maddison et al.
2017) do, removes that blindness; h_{t-1} still carries z_{<t} and x_{<t}. Same sites, same record.
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import step_masks


def smoothing_guide(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """Same arguments and sites (z_1..z_T) as `models.vrnn.vrnn_model`; vrnn built with guide="smoothing"."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    phi_x = vrnn.features(x, mask)  # phi_x(x_t) of every step in one call
    a = vrnn.backward_states(phi_x, mask).unbind(1)  # a_t = g(a_{t+1}, phi_x(x_t)): what x_t .. x_T say
    phi_x = phi_x.unbind(1)  # steps (unbind: one stack in the backward pass, as guides/filtering.py)
    state = vrnn.initial_state(x)  # h_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]), poutine.scale(scale=kl_scale):
                z_t = pyro.sample(f"z_{t + 1}", vrnn.posterior(a[t], state.h))  # q(z_t | h_{t-1}, a_t)
            state = vrnn.step(phi_x[t], z_t, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
            if record is not None:
                record.add(z_t, state)  # for the model, replayed on this z_t
