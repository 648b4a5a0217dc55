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
"""


class Record:
    """z_t and the state after step t (h_t, c_t) of one guide pass, in the order of the steps."""

    def __init__(self):
        self.z = []  # z[t] = z_{t+1}, the guide's draw at step t + 1
        self.states = []  # states[t] = the state after step t + 1, computed from z[t]

    def add(self, z_t, state):
        self.z.append(z_t)
        self.states.append(state)

    def drew(self, t, z_t):
        """Whether the guide drew this very z_t (the same tensor object) at step t + 1."""
        return t < len(self.z) and self.z[t] is z_t

    def __len__(self):
        return len(self.z)
