"""The pictures written at the end of a run: what the model generates, and how training went."""
import os

import torch

from pyro_vrnn.generate import generate
from pyro_vrnn.plots import plot_handwriting, plot_training_curves
from pyro_vrnn.train import load_checkpoint, rebuild


def end_of_run_figures(run_dir, num=None, seed=0):
    """Write samples.png (handwriting data) and curves.png into run_dir; returns the paths written."""
    written = []
    name = "best.pt" if os.path.exists(os.path.join(run_dir, "best.pt")) else "last.pt"
    if os.path.exists(os.path.join(run_dir, name)):
        state = load_checkpoint(os.path.join(run_dir, name))
        config, model, _, vrnn, info = rebuild(state)
        if info["kind"] == "handwriting":
            torch.manual_seed(seed)
            num = num or config.num_samples_figure
            lines = generate(model, vrnn, num, steps=info["median_length"])
            written.append(plot_handwriting(
                lines.numpy(), os.path.join(run_dir, "samples.png"), info["mean"], info["std"],
                suptitle=f"{config.model} samples ({name}, step {state['progress']['step']})"))
    log_path = os.path.join(run_dir, "log.jsonl")
    if os.path.exists(log_path):
        curves = plot_training_curves(log_path, os.path.join(run_dir, "curves.png"))
        if curves:
            written.append(curves)
    return written
