"""Real-valued data that are not sound (a user's file of kind "real" without a sample_rate attribute)
are shown as what they are: each feature against the time step, or a heat map when there are many,
never as a 16 kHz waveform or a WAV file. Speech keeps its waveforms and WAV files (test_figures.py).

What a picture shows is read from the figure as drawn: `plots.save` is wrapped to keep its axes."""

import csv
import os

import numpy as np
import pytest
from conftest import TINY_SIZES, flags, fresh_script, tiny_h5

from pyro_vrnn.report import plots
from pyro_vrnn.report.figures import Run, audio_rate, end_of_run_figures


@pytest.fixture(scope="module")
def features_run(tmp_path_factory, hershey_cache):
    """A VRNN-Gauss trained for 2 steps through run/svi.py on a user's file of 3 real features a step."""
    root = tmp_path_factory.mktemp("features")
    path = tiny_h5(str(root / "features.h5"), "real", 3, 12)
    run_dir = str(root / "run")
    fresh_script("svi").main(
        ["--dataset", "hdf5", "--data-dir", path, "--model", "vrnn-gauss", "--max-steps", "2", "--out", run_dir]
        + flags(TINY_SIZES, batch_size=4)
    )
    return run_dir


@pytest.fixture
def drawn(monkeypatch):
    """{file name: the axes of the figure written there}, for every picture plots.save writes."""
    figures, real_save = {}, plots.save

    def save(fig, path, dpi=110):
        figures[os.path.basename(path)] = fig.axes
        return real_save(fig, path, dpi)

    monkeypatch.setattr(plots, "save", save)
    return figures


def assert_features_against_steps(ax, steps, dim=3):
    """One line per feature, at the time steps 1..steps (not a waveform in seconds)."""
    lines = ax.get_lines()
    assert len(lines) == dim
    for line in lines:
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, steps + 1))


def test_samples_are_features_against_the_step_and_no_wav(features_run, drawn, tmp_path):
    out = tmp_path / "samples"
    written = fresh_script("sample").main(
        ["--checkpoint", features_run, "--num", "2", "--length", "5", "--out", str(out)]
    )
    assert sorted(os.listdir(out)) == ["samples.npz", "samples.png"]
    assert sorted(map(os.path.basename, written)) == ["samples.npz", "samples.png"]
    panels = drawn["samples.png"]
    assert len(panels) == 2 and panels[-1].get_xlabel() == "time step"
    for ax in panels:
        assert_features_against_steps(ax, 5)
    assert np.load(out / "samples.npz")["x"].shape == (2, 5, 3)


def test_end_of_run_samples_are_features_too(features_run, drawn):
    written = end_of_run_figures(features_run, num=2)
    assert [os.path.basename(p) for p in written] == ["samples.png", "curves.png"]
    panels = drawn["samples.png"]
    assert len(panels) == 2
    for ax in panels:
        assert_features_against_steps(ax, Run(features_run).info["median_length"])


def test_figure2_draws_the_features_against_the_step(features_run, drawn, tmp_path):
    fresh_script("analyze").main(["--checkpoint", features_run, "--index", "1", "--out", str(tmp_path)])
    with open(tmp_path / "figure2-valid-1.csv") as f:
        steps = len(list(csv.DictReader(f)))
    signal = drawn["figure2-valid-1.png"][2]
    assert signal.get_xlabel() == "time step t"
    assert_features_against_steps(signal, steps)
    assert signal.get_xlim() == (0.5, steps + 0.5)  # the steps of delta_t and KL_t above it


def test_many_features_are_a_heat_map_with_the_prime_marked(drawn, tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 6, 20))
    plots.plot_features(x, str(tmp_path / "many.png"), prime_steps=2)
    ax = drawn["many.png"][0]
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (20, 6)  # feature up, time to the right
    [prime] = ax.get_lines()
    np.testing.assert_array_equal(prime.get_xdata(), [2.5, 2.5])  # after the second step


def test_which_real_data_are_audio():
    assert audio_rate("prompts", {"kind": "real"}) == 16000  # a built-in speech set, whatever the checkpoint's age
    assert audio_rate("hdf5", {"kind": "real", "sample_rate": 8000}) == 8000  # a user's file that says so
    assert audio_rate("hdf5", {"kind": "real", "sample_rate": None}) is None
    assert audio_rate("hdf5", {"kind": "real"}) is None
    assert audio_rate("chorales", {"kind": "binary"}) is None
