"""`--dataset hdf5` sizes itself from the user's data: the network, the batches and the budget from the train split's
shapes (byo_preset), and the lever that keeps z in use from the data's kind and the model (byo_lever). The
measurements behind both are in docs/ablations.md; config.make_config applies them, flags given winning.
"""

import math


def _power_of_two(x, low, high):
    """The power of two nearest x on a log scale, within [low, high]."""
    return int(min(high, max(low, 2 ** round(math.log2(max(x, 1))))))


BYO_KL_ANNEAL_UPDATES = 400  # binary data: the KL weight rises over about this many updates (byo_lever)


def byo_preset(num_sequences, total_steps, dim):
    """The sizes of `--dataset hdf5` from its training split: N sequences, S steps of D numbers.

    Sizes grow as the square root of the numbers to fit, S * D, so that the LSTM's ~6 H^2 weights
    (phi widths H / 2) stay about half their count: 64 units for 5k frames of 12, 128 for 30k, the
    cap of 1024 from 2M frames of 100. z_t gets H / 8 dimensions (the hershey and speech-demo
    ratio). The mixture gets a component per 40 * D frames, 2 to 20 (the paper's): each component
    needs data for its 2D + 1 outputs, and 20 on 5k frames of 12 overfit (docs/ablations.md).
    Batches hold about N / 16 sequences (8 to 64), so an epoch is at least ~16 steps; Adam at 1e-3
    for the small networks, the paper's 3e-4 from 512 units. Training ends by early stopping:
    patience of about 400 steps (10 to 50 epochs) within a budget of 20,000 steps (50 to 1000
    epochs). Networks of up to 256 units run fastest on one CPU thread. The lever against a collapsed z is
    byo_lever's.
    """
    hidden = _power_of_two(math.sqrt(total_steps * dim / 12), 32, 1024)
    batch_size = _power_of_two(num_sequences / 16, 8, 64)
    batches = math.ceil(num_sequences / batch_size)
    features = hidden // 2
    return dict(
        hidden=hidden,
        z_dim=min(64, max(4, hidden // 8)),
        x_features=features,
        z_features=features,
        enc_hidden=features,
        prior_hidden=features,
        dec_hidden=features,
        mlp_layers=1,
        components=int(min(20, max(2, total_steps // (40 * dim)))),
        batch_size=batch_size,
        lr=1e-3 if hidden <= 256 else 3e-4,
        epochs=min(1000, max(50, math.ceil(20000 / batches))),
        patience=min(50, max(10, math.ceil(400 / batches))),
        threads=1 if hidden <= 256 else 0,
    )


def byo_lever(num_sequences, kind, model, batch_size):
    """The lever that keeps z in use for `--dataset hdf5`, from the data's kind and the model that trains, chosen by
    log p(x) and the ELBO at the preset's budget (docs/ablations.md, "The bring-your-own preset's lever"):

    - binary data (piano rolls) anneal the KL weight over the first ~400 updates of `batch_size` sequences (per
      process: under torchrun, N processes make an N-th of them), the music sets' lesson: on Piano-midi.de 66
      updates of annealing left z collapsed and 440 put it to use, and on JSB 400 scored 0.28-0.40 nats a step
      above 150;
    - real data with a single-Gaussian VRNN take free bits of 0.05 nats a step (on 12-MFCC speech frames, +4 to
      +23 nats a sequence of log p(x), with z at seven times the floor);
    - none otherwise: with a mixture emission no lever scored higher. (A model without latents has no KL to weigh:
      make_config asks only for the others.)
    """
    if kind == "binary":
        return {"kl_anneal_epochs": math.ceil(BYO_KL_ANNEAL_UPDATES / math.ceil(num_sequences / batch_size))}
    if kind == "real" and model in ("vrnn-gauss", "vrnn-i-gauss"):
        return {"free_bits": 0.05}
    return {}
