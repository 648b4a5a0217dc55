"""The guide's pass over a batch, written down for the model that is replayed on it.

Every ELBO of Pyro (`Trace_ELBO`, `TraceMeanField_ELBO`, `RenyiELBO`) and importance sampling
(`vectorized_importance_weights`) run the guide, then the model replayed on the guide's trace,
with the same arguments. The VRNN's guide q(z_t | x_t, h_{t-1}) must run the recurrence

    h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})

on its own draws z_t (docs/paper.md), and the model, replayed on those very draws and on the same
x, would compute exactly the same h_t again: the most expensive part of the ELBO, twice. So the
code that runs both programs creates a `Record` and passes it to both as the keyword `record`:

    guide:  record.add(z_t, state)                          after each step: z_t and h_t
    model:  state = record.states[t] if record.drew(t, z_t) and x_t is x_obs else vrnn.step(...)

The model takes h_t from the record only when its z_t is the recorded tensor itself (replay hands
the model the guide's sample object) and its x_t is the data it was given (not a draw of
`poutine.uncondition`); otherwise, as when generating or when run alone, it computes its own.
Either way the numbers are the same (tests/test_record.py counts the recurrence's calls).

The SRNN (Fraccaro et al. 2016; pyro_vrnn/nn/srnn_networks.py) has a deterministic recurrence over the data alone,
d_t = f(d_{t-1}, x_{t-1}), which both of its programs need. Its guide computes d_1..d_T once, in one
call over all of x, and writes it down with the x it read; the model reads it back for that same x:

    guide:  record.add_data_states(x, d)                    d_1..d_T, [B, T, H]
    model:  d = record.data_states(x)                       None unless the guide read this very x

and the z_t it draws, as above (its `state` is None: the SRNN's z_t needs no recurrence of its own).
"""


class Record:
    """z_t and the state after step t (h_t, c_t) of one guide pass, in the order of the steps."""

    def __init__(self):
        self.z = []  # z[t] = z_{t+1}, the guide's draw at step t + 1
        self.states = []  # states[t] = the state after step t + 1, computed from z[t]
        self.x = self.d = None  # the SRNN's d_1..d_T [B, T, H] and the data x they were computed from

    def add(self, z_t, state=None):
        self.z.append(z_t)
        self.states.append(state)

    def drew(self, t, z_t):
        """Whether the guide drew this very z_t (the same tensor object) at step t + 1."""
        return t < len(self.z) and self.z[t] is z_t

    def add_data_states(self, x, d):
        """Keep what the guide computed from the data x alone (the SRNN's d_1..d_T), for the model."""
        self.x, self.d = x, d

    def data_states(self, x):
        """The recorded d_1..d_T if the guide computed them from this very x (the same tensor), else None."""
        return self.d if self.x is x else None

    def __len__(self):
        return len(self.z)
