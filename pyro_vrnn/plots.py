"""Pictures: handwriting drawn as pen strokes, and training curves from a run's log.

Handwriting rows are (pen, dx, dy) with dx, dy standardized (PAPER.md); drawing undoes the
standardization, integrates the offsets into pen positions and lifts the pen after every point
whose pen bit is 1 (the last point of a stroke).
"""
import json

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def strokes(sequence, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    """[T, 3] (pen, dx, dy) rows -> list of [n, 2] arrays of pen positions, one per stroke."""
    seq = np.asarray(sequence, dtype=np.float64)
    offsets = seq[:, 1:3] * np.asarray(std)[1:3] + np.asarray(mean)[1:3]
    points = np.cumsum(offsets, axis=0)
    ends = np.flatnonzero(seq[:, 0] > 0.5) + 1
    return [s for s in np.split(points, ends) if len(s) > 0]


def draw_lines(ax, sequence, mean, std, **style):
    for stroke in strokes(sequence, mean, std):
        ax.plot(stroke[:, 0], stroke[:, 1], "-", linewidth=1.2, color=style.get("color", "k"),
                solid_capstyle="round")
    ax.set_aspect("equal")
    ax.axis("off")


def plot_handwriting(sequences, path, mean, std, titles=None, suptitle=None):
    """One row per sequence; writes a PNG at `path`."""
    fig, axes = plt.subplots(len(sequences), 1, figsize=(10, 1.4 * len(sequences)), squeeze=False)
    for i, (ax, seq) in enumerate(zip(axes[:, 0], sequences)):
        draw_lines(ax, seq, mean, std)
        if titles:
            ax.set_title(titles[i], fontsize=8, loc="left")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def read_log(log_path):
    with open(log_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(log_path, path):
    """Train and validation ELBO per sequence per epoch, and the validation bound's two parts."""
    epochs = [r for r in read_log(log_path) if r.get("event") == "epoch"]
    if not epochs:
        return None
    e = [r["epoch"] for r in epochs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(e, [r["train_elbo_per_seq"] for r in epochs], "o-", label="train")
    left.plot(e, [r["valid_elbo_per_seq"] for r in epochs], "o-", label="valid")
    left.set(xlabel="epoch", ylabel="ELBO per sequence (nats)", title="ELBO")
    left.legend()
    right.plot(e, [r["valid_log_likelihood_per_seq"] for r in epochs], "o-", label="E log p(x|z)")
    right.plot(e, [r["valid_kl_per_seq"] for r in epochs], "o-", label="KL")
    right.set(xlabel="epoch", ylabel="nats per sequence", title="validation: reconstruction and KL")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
