"""The VRNN generative model p(x_{<=T}, z_{<=T}) as a Pyro program (Chung et al. 2015, eqs. 5-7).

    z_t | h_{t-1}       ~ N(mu_0,t, diag(sigma_0,t^2))      [mu_0,t, sigma_0,t] = phi_prior(h_{t-1})
    x_t | z_t, h_{t-1}  ~ emission(theta_t)                 theta_t = phi_dec(phi_z(z_t), h_{t-1})
    h_t                 = f(phi_x(x_t), phi_z(z_t), h_{t-1})

One program serves VRNN-Gauss, VRNN-GMM (the emission differs) and VRNN-I-Gauss (the prior is
N(0, I)): the differences live in the network `vrnn`, not here. Padding steps (mask False) are
masked out of every log-density, and because the recurrence only runs forward in time, what
happens after a sequence's end cannot change any of its terms.

Replayed on the guide's samples (every ELBO, importance sampling), the model's recurrence is the one
the guide just ran: the network then reuses it rather than running it twice (pyro_vrnn/networks.py,
`Recurrence`). The program and its numbers are the same either way; alone (generation) it runs its own.
"""
import torch
import pyro
import pyro.poutine as poutine

from pyro_vrnn.networks import step_masks


def vrnn_model(vrnn, x, mask, num_sequences=None, kl_scale=1.0):
    """x: [B, T, D] sequences, mask: [B, T] True at real steps.

    num_sequences: size of the data set the batch was drawn from, so that the ELBO is scaled to it
    (minibatch SVI); None means the batch is the whole data. kl_scale weights the z sites for KL
    annealing (as in Pyro's examples/dmm.py); the guide applies the same weight.
    """
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    state = vrnn.initial_state(x)  # h_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]):
                with poutine.scale(scale=kl_scale):
                    z_t = pyro.sample(f"z_{t + 1}", vrnn.prior(state))  # p(z_t | h_{t-1})
                x_t = pyro.sample(f"x_{t + 1}", vrnn.emission(z_t, state), obs=x[:, t])  # p(x_t | z_t, h_{t-1})
            state = vrnn.step(x_t, z_t, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
