"""The RNN baselines of Table 1 (RNN-Gauss, RNN-GMM) as a Pyro program with no latent variables.

    x_t | h_{t-1}  ~ emission(theta_t),   theta_t = phi_dec(h_{t-1})
    h_t            = f(phi_x(x_t), h_{t-1})

All randomness is in the emission, so log p(x) = sum_t log p(x_t | x_{<t}) is exact, the ELBO with
the empty guide equals it, and no guide is needed. Once x_1 is the data, h_t depends on the data
only, so the network runs the recurrence ahead and scores all steps at once (`Recurrence.run_ahead`);
when x_t is sampled instead (generation), each step runs as written here.
"""
import torch
import pyro
import pyro.poutine as poutine

from pyro_vrnn.networks import step_masks


def rnn_model(vrnn, x, mask, num_sequences=None, kl_scale=1.0):
    """Same arguments as `models.vrnn.vrnn_model`; kl_scale is accepted and unused (no KL term)."""
    batch, steps, _ = x.shape
    masks = step_masks(mask)  # mask[:, t]: padding steps count for nothing
    state = vrnn.initial_state(x)  # h_0 = 0
    with pyro.plate("sequences", num_sequences or batch, subsample=torch.arange(batch, device=x.device)):
        for t in pyro.markov(range(steps)):
            with poutine.mask(mask=masks[t]):
                x_t = pyro.sample(f"x_{t + 1}", vrnn.emission(None, state), obs=x[:, t])  # p(x_t | h_{t-1})
            state = vrnn.step(x_t, None, state)  # h_t = f(phi_x(x_t), h_{t-1})
