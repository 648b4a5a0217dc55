"""Pictures of data, samples and training, all with matplotlib and all written to files.

    handwriting   (pen, dx, dy) rows drawn as pen strokes: the offsets are integrated into pen
                  positions and the pen lifts after every point whose pen bit is 1
                  (`pyro_vrnn.data.offsets_to_strokes`, the inverse of the data preparation)
    speech        waveforms (frames of 200 samples put end to end)
    other real    [T, D] features against the time step: one line each, a heat map above 16
    piano rolls   [T, 88] images, time to the right, pitch up
    Figure 2      (Chung et al. 2015) the posterior mean's change delta_t and KL_t per step,
                  aligned in time above the signal they were computed on
    Figure 3      real lines beside samples of several models, one column each
    curves        training and validation ELBO from a run's log.jsonl

Every function takes arrays in the data's own units (see `pyro_vrnn.report.sampling.to_data_units`)
and returns the path it wrote.
"""

import os

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pyro_vrnn.data import offsets_to_strokes  # noqa: E402
from pyro_vrnn.train.run_directory import read_log  # noqa: E402

PRIME_COLOR = "tab:blue"  # the real part of a primed sample
FEATURE_LINES = 16  # real-valued data (not audio) of up to this many features: one line each; more: a heat map


def save(fig, path, dpi=110):
    """Written to a temporary file and renamed: a kill while drawing leaves no half picture that would
    pass for a finished one (a finished run makes its missing pictures on --resume)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=dpi, format=os.path.splitext(path)[1][1:] or "png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# Handwriting
# ---------------------------------------------------------------------------------------------


def draw_handwriting(ax, sequence, prime_steps=0, color="k", linewidth=1.2):
    """Draw one line of (pen, dx, dy) rows (data units) on `ax`, one polyline per stroke.

    prime_steps: the first rows are real (a primed sample); they are drawn over in PRIME_COLOR.
    The prefix's pen positions are the same whether or not the rest follows, so drawing it twice
    is exact.
    """
    for stroke in offsets_to_strokes(sequence):
        ax.plot(stroke[:, 0], stroke[:, 1], "-", color=color, linewidth=linewidth, solid_capstyle="round")
    if prime_steps:
        for stroke in offsets_to_strokes(np.asarray(sequence)[:prime_steps]):
            ax.plot(stroke[:, 0], stroke[:, 1], "-", color=PRIME_COLOR, linewidth=linewidth, solid_capstyle="round")
    ax.set_aspect("equal")
    ax.axis("off")


def plot_rows(items, path, draw, row_height, titles=None, suptitle=None, xlabel=None, sharex=False):
    """One panel per item, stacked: draw(ax, item) fills each; writes a PNG at `path`."""
    margin = 0.5 if xlabel else 0.4  # inches for the titles (and the x label)
    fig, axes = plt.subplots(
        len(items), 1, figsize=(10, row_height * len(items) + margin), squeeze=False, sharex=sharex
    )
    for i, (ax, item) in enumerate(zip(axes[:, 0], items)):
        draw(ax, item)
        if titles:
            ax.set_title(titles[i], fontsize=8, loc="left")
    if xlabel:
        axes[-1, 0].set_xlabel(xlabel)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def plot_handwriting(sequences, path, titles=None, suptitle=None, prime_steps=0, same_scale=False):
    """One row per line of (pen, dx, dy) rows in data units; writes a PNG at `path`. same_scale: a data unit is
    as long in every row, each line at its row's left, so that the lines' sizes compare (else each fills its row)."""
    points = [np.concatenate(offsets_to_strokes(seq)) for seq in sequences]
    width = max(np.ptp(p[:, 0]) for p in points)
    height = max(np.ptp(p[:, 1]) for p in points)

    def draw(ax, i):
        draw_handwriting(ax, sequences[i], prime_steps)
        if same_scale:
            left, middle = points[i][:, 0].min(), (points[i][:, 1].min() + points[i][:, 1].max()) / 2
            pad = 0.02 * max(width, height)  # so that the pen's width at the edges is not cut off
            ax.set_xlim(left - pad, left + width + pad)
            ax.set_ylim(middle - height / 2 - pad, middle + height / 2 + pad)

    return plot_rows(range(len(sequences)), path, draw, 1.4, titles, suptitle)


def plot_figure3(columns, path, suptitle=None):
    """Chung et al. (2015), Figure 3: `columns` is a list of (title, list of lines), drawn side by side
    (e.g. real lines, RNN-GMM samples, VRNN-GMM samples), one line per row."""
    rows = max(len(lines) for _, lines in columns)
    fig, axes = plt.subplots(rows, len(columns), figsize=(5 * len(columns), 1.3 * rows + 0.6), squeeze=False)
    for c, (title, lines) in enumerate(columns):
        axes[0, c].set_title(title, fontsize=11)
        for r in range(rows):
            if r < len(lines):
                draw_handwriting(axes[r, c], lines[r])
            else:
                axes[r, c].axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------------------------------------
# Speech, other real-valued data and piano rolls
# ---------------------------------------------------------------------------------------------


def plot_waveforms(waves, path, sample_rate=16000, titles=None, suptitle=None, prime_samples=0):
    """One row per waveform (1-d arrays, data units); time in seconds."""

    def draw(ax, wave):
        t = np.arange(len(wave)) / sample_rate
        ax.plot(t, wave, color="k", linewidth=0.5)
        if prime_samples:
            ax.plot(t[:prime_samples], wave[:prime_samples], color=PRIME_COLOR, linewidth=0.5)
        ax.set_xlim(0, max(len(wave), 1) / sample_rate)

    return plot_rows(waves, path, draw, 1.5, titles, suptitle, xlabel="time (s)", sharex=True)


def draw_features(ax, sequence, prime_steps=0, colorbar=True):
    """[T, D] real-valued steps that are not sound, against the time step t = 1..T: one line per feature,
    or (D > FEATURE_LINES) a heat map, feature up; a vertical line marks the end of a prime."""
    sequence = np.asarray(sequence).reshape(len(sequence), -1)
    steps, dim = sequence.shape
    if dim > FEATURE_LINES:
        image = ax.imshow(
            sequence.T, origin="lower", aspect="auto", interpolation="nearest", extent=(0.5, steps + 0.5, 0, dim)
        )
        if colorbar:
            ax.figure.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
        ax.set_ylabel("feature")
    else:
        for d in range(dim):
            ax.plot(np.arange(1, steps + 1), sequence[:, d], linewidth=0.8, label=f"x{d + 1}")
        if dim > 1:
            ax.legend(loc="upper right", fontsize=6, ncol=min(dim, 8))
        ax.set_ylabel("x_t")
    if prime_steps:
        ax.axvline(prime_steps + 0.5, color=PRIME_COLOR, linewidth=1.5)
    ax.set_xlim(0.5, steps + 0.5)


def plot_features(sequences, path, titles=None, suptitle=None, prime_steps=0):
    """One panel per [T, D] real-valued sequence that is not audio (draw_features); writes a PNG at `path`."""
    height = 2.0 if np.asarray(sequences[0]).reshape(len(sequences[0]), -1).shape[1] > FEATURE_LINES else 1.5
    return plot_rows(
        sequences,
        path,
        lambda ax, seq: draw_features(ax, seq, prime_steps),
        height,
        titles,
        suptitle,
        "time step",
        True,
    )


def draw_piano_roll(ax, roll, prime_steps=0):
    """[T, P] bits: time to the right, key (lowest first) up."""
    roll = np.asarray(roll)
    ax.imshow(
        roll.T,
        origin="lower",
        aspect="auto",
        cmap="Greys",
        interpolation="nearest",
        extent=(0, roll.shape[0], 0, roll.shape[1]),
        vmin=0,
        vmax=1,
    )
    if prime_steps:
        ax.axvline(prime_steps, color=PRIME_COLOR, linewidth=1)
    ax.set_ylabel("key")


def plot_piano_rolls(rolls, path, titles=None, suptitle=None, prime_steps=0):
    """One panel per [T, 88] piano roll; a vertical line marks the end of a prime."""
    return plot_rows(
        rolls, path, lambda ax, roll: draw_piano_roll(ax, roll, prime_steps), 2.0, titles, suptitle, xlabel="time step"
    )


# ---------------------------------------------------------------------------------------------
# Figure 2: what the latent variables do along one sequence
# ---------------------------------------------------------------------------------------------


def plot_figure2(path, delta, kl, kind, sequence, sample_rate=None, title=None):
    """Chung et al. (2015), Figure 2: delta_t and KL_t per step above the sequence they describe.

    delta, kl: [T] per step; sequence: [T, D] in data units. Speech (real data with a sample_rate):
    time axis in seconds, each step a frame of D samples, the waveform beneath. Other real data:
    time axis in steps, the features beneath (draw_features). Handwriting: time axis in steps, the
    pen offsets beneath with pen lifts marked, and the line itself drawn with each point coloured by
    its KL. Piano rolls: the roll beneath.
    """
    delta, kl, sequence = np.asarray(delta), np.asarray(kl), np.asarray(sequence)
    steps = len(delta)
    audio = kind == "real" and sample_rate is not None
    if audio:
        frame = sequence.shape[1]
        edges = np.arange(steps + 1) * frame / sample_rate
        unit = "time (s)"
    else:
        edges = np.arange(steps + 1) + 0.5
        unit = "time step t"
    below = 2 if kind == "handwriting" else 1
    heights = [1, 1, 1.2] + ([1.6] if kind == "handwriting" else [])
    fig, axes = plt.subplots(
        2 + below, 1, figsize=(10, 2.0 * sum(heights) + 0.4), gridspec_kw={"height_ratios": heights}
    )
    axes[0].stairs(delta, edges, color="tab:red", baseline=None)
    axes[0].set_ylabel("delta_t")
    axes[0].set_title("change of the posterior mean  sum_j (mu_z,t^j - mu_z,t-1^j)^2", fontsize=9, loc="left")
    axes[1].stairs(kl, edges, color="tab:purple", baseline=None)
    axes[1].set_ylabel("KL_t (nats)")
    axes[1].set_title("KL( q(z_t | x_<=t, z_<t) || p(z_t | x_<t, z_<t) )", fontsize=9, loc="left")
    signal = axes[2]
    if audio:
        wave = sequence.reshape(-1)
        signal.plot(np.arange(len(wave)) / sample_rate, wave, color="k", linewidth=0.5)
        signal.set_ylabel("waveform")
    elif kind == "real":  # no colour bar: it would narrow this panel against delta_t and KL_t above
        draw_features(signal, sequence, colorbar=False)
    elif kind == "handwriting":
        t = np.arange(1, steps + 1)
        signal.plot(t, sequence[:, 1], color="tab:blue", linewidth=0.8, label="dx")
        signal.plot(t, sequence[:, 2], color="tab:orange", linewidth=0.8, label="dy")
        signal.legend(loc="upper right", fontsize=7)
        signal.set_ylabel("pen offsets")
        for ax in axes[:3]:
            for lift in np.flatnonzero(sequence[:, 0] > 0.5) + 1:
                ax.axvline(lift, color="0.8", linewidth=0.6, zorder=0)
        signal.set_title("pen offsets; grey lines: the pen lifts after step t", fontsize=9, loc="left")
    else:
        draw_piano_roll(signal, sequence)
        signal.set_xlim(0, steps)
    for ax in axes[:3]:
        ax.set_xlim(edges[0], edges[-1])
        ax.margins(x=0)
    signal.set_xlabel(unit)
    if kind == "handwriting":
        ax = axes[3]
        for stroke in offsets_to_strokes(sequence):
            ax.plot(stroke[:, 0], stroke[:, 1], "-", color="0.75", linewidth=1)
        points = np.cumsum(sequence[:, 1:3], axis=0)  # the pen position after step t
        dots = ax.scatter(points[:, 0], points[:, 1], c=kl, s=8, cmap="viridis", zorder=3)
        fig.colorbar(dots, ax=ax, label="KL_t", fraction=0.03)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title("the line, each point coloured by its KL_t", fontsize=9, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, path)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------


def plot_training_curves(log_path, path):
    """The run's log.jsonl as four panels; returns None when the log has no records to plot yet.

    (a) the training bound per time step at every logged step (batches are grouped by length, so
        per step is the comparable unit), (b) per sequence per epoch, the training objective (the ELBO, or
        with free bits, a KL weight, a particle bound: the log's "objective") and the validation ELBO,
        (c) and (d) the validation bound's two parts per epoch: reconstruction E_q log p(x | z)
        and KL(q || p) (zero for the RNNs, which have no latent variables).
    """
    records = read_log(log_path)
    steps = [r for r in records if r["event"] == "train" and "elbo_per_step" in r]
    epochs = [r for r in records if r["event"] == "epoch" and "epoch" in r]
    if not steps and not epochs:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5))
    (a, b), (c, d) = axes
    if steps:
        s = [r["step"] for r in steps]
        a.plot(s, [r["elbo_per_step"] for r in steps], "-", color="tab:blue", linewidth=0.8, label="train batch")
        # Epoch boundaries in optimizer steps, to read (a) against the other panels.
        for r in epochs:
            a.axvline(r["step"], color="0.8", linewidth=0.6, zorder=0)
        a.legend(fontsize=8)
    a.set(xlabel="optimizer step", ylabel="nats per time step", title="(a) training objective per time step")
    e = [r["epoch"] for r in epochs]
    # e.g. "train ELBO with KL weight, then ELBO" (older logs name none: the ELBO)
    trained = "train " + ", then ".join(dict.fromkeys(r.get("objective", "ELBO") for r in epochs))
    panels = [
        (b, "(b) per sequence", [(trained, "train_elbo_per_seq"), ("valid ELBO", "valid_elbo_per_seq")]),
        (c, "(c) valid: reconstruction E_q log p(x|z)", [("valid", "valid_log_likelihood_per_seq")]),
        (d, "(d) valid: KL(q || p)", [("valid", "valid_kl_per_seq")]),
    ]
    for ax, title, series in panels:
        for label, key in series:
            values = [r.get(key) for r in epochs]
            if values and all(v is not None for v in values):
                ax.plot(e, values, "o-", label=label)
        if not epochs:
            ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center", transform=ax.transAxes, color="0.5")
        elif len(series) > 1:
            ax.legend(fontsize=8)
        ax.set(xlabel="epoch", ylabel="nats per sequence", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole
    fig.tight_layout()
    return save(fig, path)
