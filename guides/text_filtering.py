"""The conditional VRNN's filtering guide q(z_{<=T} | x_{<=T}, c) as a Pyro program (Chung et al. 2015, eq. 9,
with Graves's window over the text c; pyro_vrnn/nn/text_window.py):

    z_t | x_t, h_{t-1}, w_{t-1}  ~ N(mu_z,t, diag(sigma_z,t^2))
    [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1}, w_{t-1})
    h_t = f(phi_x(x_t), phi_z(z_t), w_{t-1}, h_{t-1}),   (kappa_t, w_t) = window(h_t, kappa_{t-1}, c)

The guide runs the model's recurrence, window included, on its own draws, and writes each state into the
`record` for the model replayed on them (guides/filtering.py explains why).
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import step_masks


def conditional_guide(net, x, mask, num_sequences=None, kl_scale=1.0, record=None, text=None):
    """Same arguments as `models.conditional.conditional_model`, with which it is paired site by site."""
    if text is None:
        raise ValueError("a guide conditioned on text needs the batch's text (text_window.text_inputs)")
    batch, steps, _ = x.shape
    masks = step_masks(mask)
    phi_x = net.phi_x(x).unbind(1)  # phi_x(x_t) of every step in one call
    state = net.initial_state(x, text)
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]), poutine.scale(scale=kl_scale):
                z_t = pyro.sample(f"z_{t + 1}", net.posterior(phi_x[t], state))  # q(z_t | x_t, h_{t-1}, w_{t-1})
            state = net.step(phi_x[t], z_t, state, text)
            if record is not None:
                record.add(z_t, state)


def conditional_empty_guide(net, x, mask, num_sequences=None, kl_scale=1.0, record=None, text=None):
    """The conditional RNN has no latent sites: nothing to guess (it takes the text as its model does)."""
