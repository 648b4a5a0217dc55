"""The VRNN's amortized filtering guide q(z_{<=T} | x_{<=T}) as a Pyro program (Chung et al. 2015, eq. 9).

    z_t | x_t, h_{t-1}  ~ N(mu_z,t, diag(sigma_z,t^2)),  [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1})
    h_t                 = f(phi_x(x_t), phi_z(z_t), h_{t-1})

so q(z_{<=T} | x_{<=T}) = prod_t q(z_t | x_{<=t}, z_{<t}). The guide conditions on the same state
h_{t-1} as the model, and that state depends on the earlier z's, so the guide must run the model's
recurrence itself, driven by its own samples: the networks (and f) are shared with the model.
It writes each h_t into the `record` that the training and evaluation code passes to both programs,
so that the model, replayed on these draws, reads h_t instead of computing it again.
"""

import pyro
import pyro.poutine as poutine
import torch

from pyro_vrnn.nn.vrnn_networks import step_masks


def filtering_guide(vrnn, x, mask, num_sequences=None, kl_scale=1.0, record=None):
    """Same arguments as `models.vrnn.vrnn_model`, with which it is paired site by site (z_1..z_T)."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    # phi_x(x_t) of every step in one call (the guide sees all of x), unbound into steps: the backward pass
    # then stacks T gradients once, where indexing phi_x[:, t] would write T gradients of the whole of it
    phi_x = vrnn.features(x, mask).unbind(1)  # phi_x(x); the mask matters only to --feature-norm batch
    state = vrnn.initial_state(x)  # h_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]), poutine.scale(scale=kl_scale):
                z_t = pyro.sample(f"z_{t + 1}", vrnn.posterior(phi_x[t], state.h))  # q(z_t | x_t, h_{t-1})
            state = vrnn.step(phi_x[t], z_t, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
            if record is not None:
                record.add(z_t, state)  # for the model, replayed on this z_t
