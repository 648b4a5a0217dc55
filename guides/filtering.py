"""The VRNN's amortized filtering guide q(z_{<=T} | x_{<=T}) as a Pyro program (Chung et al. 2015, eq. 9).

    z_t | x_t, h_{t-1}  ~ N(mu_z,t, diag(sigma_z,t^2)),  [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1})
    h_t                 = f(phi_x(x_t), phi_z(z_t), h_{t-1})

so q(z_{<=T} | x_{<=T}) = prod_t q(z_t | x_{<=t}, z_{<t}). The guide conditions on the same state
h_{t-1} as the model, and that state depends on the earlier z's, so the guide must run the model's
recurrence itself, driven by its own samples: the networks (and the LSTM f) are shared with the model.

The model, replayed on these samples, computes that same recurrence again; `share=True` keeps this
pass so that it reuses it instead (VRNN.initial_state; the model checks step by step that its z's and
x's are the ones recorded here, and computes its own recurrence wherever they are not).
"""
import torch
import pyro
import pyro.poutine as poutine

from pyro_vrnn.networks import step_masks


def filtering_guide(vrnn, x, mask, num_sequences=None, kl_scale=1.0):
    """Same arguments as `models.vrnn.vrnn_model`, with which it is paired site by site (z_1..z_T)."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    state = vrnn.initial_state(x, share=True)  # h_0 = 0; share: the model, replayed on our z's, reuses this pass
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]), poutine.scale(scale=kl_scale):
                z_t = pyro.sample(f"z_{t + 1}", vrnn.posterior(x[:, t], state))  # q(z_t | x_t, h_{t-1})
            state = vrnn.step(x[:, t], z_t, state)  # h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})
