"""Experience replay for the VRNN (`--replay N`): each training step trains on its batch and, mixed into it,
one batch drawn uniformly from the run's last N batches.

The project's founding notes guess that an experience-replay buffer "could have a huge impact" on the VRNN.
The step's ELBO is then an estimate over both batches' sequences (the plate's subsample scale is the data
set's size over their number), so the replayed sequences weigh as much as the new ones.

The batches a run trains on are a function of its seed and epoch (data.dataset.LengthBucketSampler), so the
buffer holds nothing that a checkpoint must keep: the last N batches before step i are read off the sampler,
and the draw is seeded by (seed, rank, epoch, i). A resumed run replays what the unbroken one would have.
The outcome, measured against the preset: docs/ablations.md.
"""

import numpy as np


def replayed_batches(sampler, epoch, capacity, seed):
    """For every step i of `epoch` on this rank: the indices of the batch it replays, drawn from the `capacity`
    batches this rank trained on before it (the previous epoch's included); [] where there is none (the
    run's first step)."""
    if capacity < 1:
        return [[] for _ in range(len(sampler))]
    mine = slice(sampler.rank, None, sampler.world_size)
    earlier = sampler.batches(epoch - 1)[mine] if epoch > 0 else []
    current = sampler.batches(epoch)[mine]
    draws = []
    for i in range(len(current)):
        window = (earlier + current[:i])[-capacity:]
        rng = np.random.default_rng([seed, sampler.rank, epoch, i])
        draws.append(window[rng.integers(len(window))] if window else [])
    return draws
