"""Ancestral sampling from a trained model: z_t from the prior, x_t from the emission, h_t updated.

The model program already says how to generate: run it with its observations removed
(`poutine.uncondition`) and every x_t site draws from its emission, and that draw is what feeds
the recurrence. Priming conditions the first steps on a real sequence and generates the rest.
"""
import torch
import pyro.poutine as poutine


@torch.no_grad()
def generate(model, vrnn, num, steps, prime=None):
    """Sample `num` sequences of `steps` steps; returns x [num, steps, D] in the data's normalized units.

    prime: optional [P, D] real sequence; its P steps are observed (the state h is filtered on
    them with z from the prior) and steps P+1..steps are generated.
    """
    device = next(vrnn.parameters()).device
    x = torch.zeros(num, steps, vrnn.x_dim, device=device)
    mask = torch.ones(num, steps, dtype=torch.bool, device=device)
    program = poutine.uncondition(model)
    if prime is not None:
        prime = prime.to(device)
        program = poutine.condition(program, data={
            f"x_{t + 1}": prime[t].expand(num, -1) for t in range(min(len(prime), steps))})
    trace = poutine.trace(program).get_trace(vrnn, x, mask)
    return torch.stack([trace.nodes[f"x_{t + 1}"]["value"] for t in range(steps)], dim=1)
