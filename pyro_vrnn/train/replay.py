"""Experience replay for the VRNN (`--replay N`): each training step trains on its batch and, mixed into it,
one batch drawn uniformly from the last N batches this process trained on: twice the sequences a step.

The project's founding notes guess that an experience-replay buffer "could have a huge impact" on the VRNN.
The step's ELBO is then an estimate over both batches' sequences (the plate's subsample scale is the data
set's size over their number), so the replayed sequences weigh as much as the new ones; the epoch's training
ELBO in the log averages over both too. The replayed batch comes from another length bucket, so a step costs
about twice the preset's: docs/ablations.md compares at equal epochs and gives the time.

The batches a run trains on are a function of its seed and epoch (data.dataset.LengthBucketSampler), so the
buffer holds nothing that a checkpoint must keep: the last N batches before step i are read off the sampler,
and the draw is seeded by (seed, rank, epoch, i). A resumed run replays what the unbroken one would have.
The outcome, measured against the preset: docs/ablations.md.
"""

import numpy as np


def replayed_batches(sampler, epoch, capacity, seed):
    """For every step i of `epoch` on this rank: the indices of the batch it replays, drawn from the `capacity`
    batches this rank trained on before it (earlier epochs' included, as far back as `capacity` reaches); []
    where there is none (the run's first step)."""
    current = sampler.batches(epoch)[sampler.rank :: sampler.world_size]
    if capacity < 1:
        return [[] for _ in current]
    per_epoch = max(1, len(current))
    first = max(0, epoch - -(-capacity // per_epoch))  # the earliest epoch the window can reach
    earlier = [b for e in range(first, epoch) for b in sampler.batches(e)[sampler.rank :: sampler.world_size]]
    draws = []
    for i in range(len(current)):
        window = (earlier + current[:i])[-capacity:]
        rng = np.random.default_rng([seed, sampler.rank, epoch, i])
        draws.append(window[rng.integers(len(window))] if window else [])
    return draws
