"""The SRNN's smoothing inference network q(z_{<=T} | x_{<=T}) = prod_t q(z_t | z_{t-1}, a_t), as a Pyro program
(Fraccaro et al. 2016, "SRNN (smooth)"; the labels (S1)-(S6) are pyro_vrnn/nn/srnn_networks.py's):

    d_t                  = f(d_{t-1}, phi_x(x_{t-1}))                (S1)  the model's own d, from the data
    a_t                  = g(a_{t+1}, [d_t, phi_x(x_t)])             (S4)  a backward RNN, from each sequence's end
    z_t | z_{t-1}, a_t   ~ N(mu_q,t, diag(sigma_q,t^2))              (S5)  from [z_{t-1}, a_t]
                           mu_q,t = mu_p,t + residual with Resq      (S6)  mu_p,t: the prior's mean (S2)

The true posterior of z_t given z_{t-1} depends on d_t and on x_t .. x_T (the model's d_{t+1}, ... carry no z),
which a_t summarizes. The SRNN has no filtering guide: `--guide` does not apply to it (config.check_config).

d is what the model needs too, and it depends on x alone: the guide runs f over all of x in one call and
leaves d_1..d_T in the `record` for the model replayed on this pass, with every z_t it draws.
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import step_masks


def srnn_guide(srnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """Same arguments as `models.srnn.srnn_model`, with which it is paired site by site (z_1..z_T)."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    d, phi_x = srnn.forward_states(x)  # d_t = f(d_{t-1}, phi_x(x_{t-1})) of every step, in one call
    if record is not None:
        record.add_data_states(x, d)  # for the model, replayed on this pass: d depends on x alone
    a = srnn.backward_states(d, phi_x, mask)  # a_t = g(a_{t+1}, [d_t, phi_x(x_t)]): what d_t, x_t .. x_T say
    a, d_steps = a.unbind(1), d.unbind(1)  # steps (unbind: one stack in the backward pass, not T gradients)
    z_prev = srnn.initial_z(x)  # z_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]), poutine.scale(scale=kl_scale):
                z_t = pyro.sample(f"z_{t + 1}", srnn.posterior(z_prev, a[t], d_steps[t]))  # q(z_t | z_{t-1}, a_t)
            if record is not None:
                record.add(z_t)  # for the batched model, which scores the guide's z_t
            z_prev = z_t
