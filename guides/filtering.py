"""The VRNN's amortized filtering guide q(z_{<=T} | x_{<=T}) as a Pyro program (Chung et al. 2015, eq. 9).

    z_t | x_t, h_{t-1}  ~ N(mu_z,t, diag(sigma_z,t^2)),  [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1})
    h_t                 = f(phi_x(x_t), phi_z(z_t), h_{t-1})

so q(z_{<=T} | x_{<=T}) = prod_t q(z_t | x_{<=t}, z_{<t}). The guide conditions on the same state
h_{t-1} as the model, and that state depends on the earlier z's, so the guide must run the model's
recurrence itself, driven by its own samples: the networks (and the LSTM f) are shared with the model.
"""
import torch
import pyro
import pyro.poutine as poutine


def filtering_guide(vrnn, x, mask, num_sequences=None, kl_scale=1.0):
    """Same arguments as `models.vrnn.vrnn_model`, with which it is paired site by site (z_1..z_T)."""
    batch, steps, _ = x.shape
    h, c = vrnn.initial_state(batch, x.device)
    phi_x = vrnn.phi_x(x)  # the guide always sees the data, so extract all features at once
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=mask[:, t]), poutine.scale(scale=kl_scale):
                z_t = pyro.sample(f"z_{t + 1}", vrnn.posterior(phi_x[:, t], h))
            h, c = vrnn.step(phi_x[:, t], vrnn.phi_z(z_t), (h, c))
