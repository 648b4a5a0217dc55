"""The models conditioned on text as a Pyro program: the conditional VRNN and Graves's (2013, section 5)
synthesis network, the RNN-GMM that reads the text through the same soft window (pyro_vrnn/nn/text_window.py).

    z_t | h_{t-1}, w_{t-1}       ~ N(mu_0,t, diag(sigma_0,t^2))       [mu_0,t, sigma_0,t] = phi_prior(h_{t-1}, w_{t-1})
    x_t | z_t, h_{t-1}, w_{t-1}  ~ emission(phi_dec(phi_z(z_t), h_{t-1}, w_{t-1}))
    h_t                          = f(phi_x(x_t), phi_z(z_t), w_{t-1}, h_{t-1})
    (kappa_t, w_t)               = window(h_t, kappa_{t-1}, c)        (Graves 2013, eqs. 46-51)

so p(x_{<=T}, z_{<=T} | c) = prod_t p(z_t | x_{<t}, z_{<t}, c) p(x_t | x_{<t}, z_{<=t}, c). The RNN (latent
False) has no z_t: its log p(x | c) is exact. `text` is the batch's `Text` (text_window.text_inputs).

One form only (this program scores and generates): the `record` of the guide's pass (pyro_vrnn/infer/record.py)
hands the model the guide's state after each step, so that replayed on the guide's draws it does not run
the recurrence again. Padding steps (mask False) are masked out of every log-density; padding characters
have no weight in the window.
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import step_masks


def conditional_model(net, x, mask, num_sequences=None, kl_scale=1.0, record=None, text=None):
    """x: [B, T, D] sequences, mask: [B, T] True at real steps, text: their `Text`; the other arguments as
    `models.vrnn.vrnn_model`'s."""
    if text is None:
        raise ValueError("a model conditioned on text needs the batch's text (text_window.text_inputs)")
    batch, steps, _ = x.shape
    masks = step_masks(mask)
    state = net.initial_state(x, text)  # h_0 = 0, and the window read from it: w_0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            x_obs = x[:, t]
            with poutine.mask(mask=masks[t]):
                z_t = None
                if net.latent:
                    with poutine.scale(scale=kl_scale):
                        z_t = pyro.sample(f"z_{t + 1}", net.prior(state))  # p(z_t | h_{t-1}, w_{t-1})
                x_t = pyro.sample(f"x_{t + 1}", net.emission(z_t, state), obs=x_obs)  # p(x_t | z_t, h_{t-1}, w_{t-1})
            if record is not None and net.latent and record.drew(t, z_t) and x_t is x_obs:
                state = record.states[t]  # the guide's h_t, kappa_t, w_t, from this very z_t and x_t
            else:
                state = net.step(net.phi_x(x_t), z_t, state, text)
