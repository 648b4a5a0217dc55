"""Every trained model shows itself: run/sample.py, run/analyze.py (Figure 2), run/figure3.py and the
end-of-run pictures of run/svi.py write non-empty files of the right kind for each data kind, sampled
handwriting has the (pen, dx, dy) structure of the data, and the numbers behind Figure 2 are the
ELBO's own KL terms.

The scripts are imported and their `main(argv)` called in this process (the same code as on the
command line, without paying for a new interpreter each time). Speech and piano-roll runs are
trained on tiny HDF5 files in the project's schema (`--dataset hdf5`).
"""

import csv
import importlib.util
import json
import os
import wave

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from conftest import TINY_SIZES, flags, tiny_h5
from pyro.infer import TraceMeanField_ELBO

from pyro_vrnn import data as datasets
from pyro_vrnn.distributions.emissions import DiagNormalMixture, StrokeMixture
from pyro_vrnn.report import plots
from pyro_vrnn.report.figures import Run, end_of_run_figures, latent_activity
from pyro_vrnn.report.sampling import TemperatureMessenger, generate, tempered, to_data_units

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = flags(TINY_SIZES, batch_size=4, log_every=1)
PNG = b"\x89PNG\r\n\x1a\n"


def script(name):
    """run/NAME.py as a module, so that its main(argv) runs in this process."""
    spec = importlib.util.spec_from_file_location(f"run_{name}", os.path.join(ROOT, "run", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG and os.path.getsize(path) > 2000


# ---------------------------------------------------------------------------------------------
# Runs to look at: tiny handwriting runs on the embedded set, tiny speech and piano-roll runs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hershey_runs(hershey_cache, tmp_path_factory):
    """A VRNN-GMM and an RNN-GMM trained for 2 steps on hershey through run/svi.py."""
    root = tmp_path_factory.mktemp("hershey-runs")
    svi = script("svi")
    for model in ("vrnn-gmm", "rnn-gmm"):
        svi.main(["--model", model, "--max-steps", "2", "--out", str(root / model), *TINY])
    return root


@pytest.fixture(scope="module")
def kind_runs(tmp_path_factory, hershey_cache):
    """VRNN runs on tiny speech (kind real, 200-sample frames of 16 kHz audio) and piano-roll (binary, 88 keys) sets,
    given as user HDF5 files (`--dataset hdf5 --data-dir FILE.h5`), two epochs of two steps through
    run/svi.py, so that best.pt and epoch records exist."""
    root = tmp_path_factory.mktemp("kind-runs")
    files = {
        "tiny-speech": tiny_h5(str(root / "speech.h5"), "real", 200, 6, sample_rate=16000),
        "tiny-piano": tiny_h5(str(root / "piano.h5"), "binary", 88, 10),
    }
    svi = script("svi")
    for name, path in files.items():
        svi.main(
            [
                "--dataset",
                "hdf5",
                "--data-dir",
                path,
                "--model",
                "vrnn-gmm",
                "--epochs",
                "2",
                "--out",
                str(root / name),
                *TINY,
            ]
        )
    return root


# ---------------------------------------------------------------------------------------------
# run/svi.py: pictures at the end of every run
# ---------------------------------------------------------------------------------------------


def test_every_run_ends_with_samples_and_curves(hershey_runs, kind_runs):
    for run_dir in (
        hershey_runs / "vrnn-gmm",
        hershey_runs / "rnn-gmm",
        kind_runs / "tiny-speech",
        kind_runs / "tiny-piano",
    ):
        for name in ("samples.png", "curves.png"):
            assert is_png(run_dir / name), f"{run_dir}/{name}"
    assert (kind_runs / "tiny-speech" / "best.pt").exists()  # epochs finished: the curves have epoch points


def test_training_curves_from_a_log(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("")
    assert plots.plot_training_curves(str(log), str(tmp_path / "none.png")) is None
    records = [
        {"event": "train", "epoch": 1, "step": s, "elbo_per_seq": -100.0 + s, "elbo_per_step": -2.0 + s / 10}
        for s in range(1, 6)
    ]
    records += [
        {
            "event": "epoch",
            "epoch": e,
            "step": 5 * e,
            "train_elbo_per_seq": -90.0 + e,
            "valid_elbo_per_seq": -95.0 + e,
            "valid_elbo_per_step": -1.0,
            "valid_log_likelihood_per_seq": -80.0,
            "valid_kl_per_seq": 15.0 - e,
        }
        for e in (1, 2)
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert is_png(plots.plot_training_curves(str(log), str(tmp_path / "curves.png")))


# ---------------------------------------------------------------------------------------------
# run/sample.py
# ---------------------------------------------------------------------------------------------


def test_sampled_handwriting_is_pen_and_offsets(hershey_runs, tmp_path):
    out = tmp_path / "samples"
    written = script("sample").main(
        [
            "--checkpoint",
            str(hershey_runs / "vrnn-gmm"),
            "--num",
            "3",
            "--length",
            "40",
            "--temperature",
            "0.7",
            "--out",
            str(out),
        ]
    )
    assert sorted(os.path.basename(p) for p in written) == ["samples.npz", "samples.png"]
    assert is_png(out / "samples.png")
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (3, 40, 3) and np.isfinite(x).all()
    pen = x[..., 0]
    assert set(np.unique(pen)) <= {0.0, 1.0}  # the pen bit is a bit, not normalized
    # The drawing lifts the pen after every pen-up row: one stroke per pen-up (plus the unfinished one).
    for line in x:
        strokes = datasets.offsets_to_strokes(line)
        assert len(strokes) == int(line[:-1, 0].sum()) + 1
        assert sum(len(s) for s in strokes) == len(line) + 1  # the anchor point and one point per row
    # and the plot draws exactly those strokes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.draw_handwriting(ax, x[0])
    assert len(ax.lines) == len(datasets.offsets_to_strokes(x[0]))
    plt.close(fig)


def test_priming_keeps_the_real_steps_and_continues(hershey_runs, tmp_path):
    out = tmp_path / "primed"
    script("sample").main(
        [
            "--checkpoint",
            str(hershey_runs / "vrnn-gmm" / "last.pt"),
            "--num",
            "2",
            "--length",
            "15",
            "--prime",
            "1",
            "--prime-steps",
            "10",
            "--out",
            str(out),
        ]
    )
    saved = np.load(out / "samples.npz")
    x = saved["x"]
    assert x.shape == (2, 25, 3) and int(saved["prime_steps"]) == 10
    run = Run(str(hershey_runs / "vrnn-gmm"))
    real = to_data_units(datasets.load("hershey", verbose=False)["valid"][1][:10], run.info)
    assert np.allclose(x[:, :10], real[None], atol=1e-4)
    assert not np.allclose(x[0, 10:], x[1, 10:])  # two different continuations
    assert is_png(out / "samples.png")


def test_a_prime_longer_than_its_sequence_is_the_whole_sequence_and_said(hershey_runs, tmp_path, capsys):
    run = str(hershey_runs / "vrnn-gmm")
    steps = len(Run(run).dataset("valid")[0])
    flags = ["--num", "1", "--length", "2", "--prime", "0", "--prime-steps", "1000", "--out", str(tmp_path)]
    script("sample").main(["--checkpoint", run, *flags])
    assert (
        f"--prime-steps 1000: valid sequence 0 has {steps} steps; priming with all {steps}\n" in capsys.readouterr().out
    )
    saved = np.load(tmp_path / "samples.npz")
    assert int(saved["prime_steps"]) == steps and saved["x"].shape == (1, steps + 2, 3)


def test_sampled_speech_is_16khz_wav(kind_runs, tmp_path, capsys):
    out = tmp_path / "speech"
    flags = ["--checkpoint", str(kind_runs / "tiny-speech" / "best.pt"), "--length", "5", "--out", str(out)]
    script("sample").main(flags + ["--num", "4"])
    (out / "samples-notes.wav").write_bytes(b"not ours")  # a name outside the samples-NN.wav pattern
    capsys.readouterr()
    written = script("sample").main(flags + ["--num", "2"])
    wavs = sorted(p for p in written if p.endswith(".wav"))
    assert [os.path.basename(p) for p in wavs] == ["samples-01.wav", "samples-02.wav"]
    # the first call's samples-03.wav and samples-04.wav would not match samples.npz: gone, and said so
    assert sorted(os.listdir(out)) == [
        "samples-01.wav",
        "samples-02.wav",
        "samples-notes.wav",
        "samples.npz",
        "samples.png",
    ]
    assert "removed 2 WAV file(s) of an earlier call" in capsys.readouterr().out
    for path in wavs:
        with wave.open(path, "rb") as f:
            assert (f.getnchannels(), f.getsampwidth(), f.getframerate()) == (1, 2, 16000)
            assert f.getnframes() == 5 * 200  # frames of 200 samples, end to end
            pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        assert np.abs(pcm).max() > 0
    assert is_png(out / "samples.png")
    assert np.load(out / "samples.npz")["x"].shape == (2, 5, 200)


def test_sampled_piano_rolls_are_bits_and_images(kind_runs, tmp_path):
    out = tmp_path / "piano"
    script("sample").main(
        [
            "--checkpoint",
            str(kind_runs / "tiny-piano"),
            "--num",
            "2",
            "--length",
            "12",
            "--temperature",
            "0.5",
            "--prime",
            "0",
            "--prime-steps",
            "3",
            "--out",
            str(out),
        ]
    )
    x = np.load(out / "samples.npz")["x"]
    assert x.shape == (2, 15, 88) and set(np.unique(x)) <= {0.0, 1.0}
    assert is_png(out / "samples.png")


def test_bad_sampling_flags_are_one_line_errors(hershey_runs):
    with pytest.raises(SystemExit, match="temperature"):
        script("sample").main(["--checkpoint", str(hershey_runs / "vrnn-gmm"), "--temperature", "0"])
    with pytest.raises(SystemExit, match="no checkpoint"):
        script("sample").main(["--checkpoint", str(hershey_runs / "missing")])
    for bad in (["--prime-steps", "4"], ["--prime", "0", "--prime-steps", "-3"]):
        with pytest.raises(SystemExit, match="--prime-steps needs --prime INDEX and must be at least 1"):
            script("sample").main(["--checkpoint", str(hershey_runs / "vrnn-gmm"), *bad])
    with pytest.raises(SystemExit, match="--prime 9999 is out of range"):
        script("sample").main(["--checkpoint", str(hershey_runs / "vrnn-gmm"), "--prime", "9999"])


# ---------------------------------------------------------------------------------------------
# Temperature, as an effect handler around the unchanged model
# ---------------------------------------------------------------------------------------------


def test_tempered_emissions():
    tau = 0.25
    loc, scale = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    logits, corr = torch.tensor([[0.0, 1.0, 2.0]] * 2), torch.zeros(2, 3)
    stroke = tempered(StrokeMixture(torch.zeros(2), logits, loc, scale, corr), tau)
    assert torch.allclose(stroke.scale, scale * 0.5) and torch.allclose(stroke.logits, logits / tau)
    mixture = tempered(DiagNormalMixture(logits, loc, scale), tau)
    assert torch.allclose(mixture.scale, scale * 0.5)
    normal = tempered(dist.Normal(torch.zeros(3), 2.0).to_event(1), tau)
    assert normal.event_shape == (3,) and torch.allclose(normal.base_dist.scale, torch.full((3,), 1.0))
    bits = tempered(dist.Bernoulli(logits=torch.ones(88)).to_event(1), tau)
    assert torch.allclose(bits.base_dist.logits, torch.full((88,), 4.0))
    same = dist.Normal(0.0, 1.0)
    assert tempered(same, 1.0) is same
    with pytest.raises(ValueError):
        tempered(same, 0.0)


def test_temperature_touches_only_sampled_emissions(hershey_runs):
    run = Run(str(hershey_runs / "vrnn-gmm"))
    x = torch.zeros(2, 6, 3)
    mask = torch.ones(2, 6, dtype=torch.bool)
    # Pin x_1, x_2 (a prime) and every z_t, so that both programs below see the same states h_t.
    data = {f"x_{t}": x[:, t - 1] for t in (1, 2)}
    data.update({f"z_{t}": torch.randn(2, run.vrnn.z_dim) for t in range(1, 7)})
    plain = poutine.trace(poutine.condition(poutine.uncondition(run.model), data=data)).get_trace(run.vrnn, x, mask)
    program = TemperatureMessenger(0.5)(poutine.condition(poutine.uncondition(run.model), data=data))
    hot = poutine.trace(program).get_trace(run.vrnn, x, mask)
    for name in ("x_1", "x_2"):  # observed: the model's own emission
        assert torch.allclose(hot.nodes[name]["fn"].scale, plain.nodes[name]["fn"].scale)
    for name in ("x_3",):  # sampled: at temperature 0.5 (the same h as in `plain`, since x_1, x_2, z_1..3 agree)
        assert torch.allclose(hot.nodes[name]["fn"].scale, plain.nodes[name]["fn"].scale * 0.5**0.5)
        assert torch.allclose(hot.nodes[name]["fn"].logits, plain.nodes[name]["fn"].logits / 0.5)
    assert torch.equal(hot.nodes["z_3"]["value"], data["z_3"])
    pyro.set_rng_seed(0)
    a = generate(run.model, run.vrnn, 2, 5, tau=0.5)
    pyro.set_rng_seed(0)
    b = generate(run.model, run.vrnn, 2, 5, tau=0.5)
    assert torch.equal(a, b)  # seeded sampling is reproducible


# ---------------------------------------------------------------------------------------------
# run/analyze.py: Figure 2
# ---------------------------------------------------------------------------------------------


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_figure2_for_speech_and_handwriting(hershey_runs, kind_runs, tmp_path):
    analyze = script("analyze")
    for checkpoint, index, columns in (
        (kind_runs / "tiny-speech", 2, ["t", "delta", "kl"]),
        (hershey_runs / "vrnn-gmm", 0, ["t", "delta", "kl", "pen", "dx", "dy"]),
    ):
        out = tmp_path / checkpoint.name
        written = analyze.main(["--checkpoint", str(checkpoint), "--index", str(index), "--out", str(out)])
        png, table = out / f"figure2-valid-{index}.png", out / f"figure2-valid-{index}.csv"
        assert sorted(written) == sorted([str(png), str(table)])
        assert is_png(png)
        rows = read_csv(table)
        run = Run(str(checkpoint))
        assert list(rows[0]) == columns
        assert len(rows) == len(run.dataset("valid")[index])
        delta, kl = np.array([[float(r["delta"]), float(r["kl"])] for r in rows]).T
        assert delta[0] == 0 and (delta >= 0).all() and (kl >= 0).all() and np.isfinite(kl).all()


def test_figure2_kl_is_the_elbo_kl(hershey_runs):
    """With the same draw of the guide, ELBO = sum_t log p(x_t | ...) - sum_t KL_t (TraceMeanField_ELBO):
    latent_activity's KL_t is KL(q || p) at the guide's draws, not some other divergence."""
    run = Run(str(hershey_runs / "vrnn-gmm"))
    sequence = datasets.load("hershey", verbose=False)["valid"][0][:30]
    x, mask = sequence[None], torch.ones(1, 30, dtype=torch.bool)
    pyro.set_rng_seed(3)
    kl = latent_activity(run.model, run.guide, run.vrnn, sequence)["kl"]
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(run.guide).get_trace(run.vrnn, x, mask)
    model_trace = poutine.trace(poutine.replay(run.model, trace=guide_trace)).get_trace(run.vrnn, x, mask)
    model_trace.compute_log_prob()
    log_likelihood = sum(
        site["log_prob_sum"].item() for name, site in model_trace.nodes.items() if name.startswith("x_")
    )
    pyro.set_rng_seed(3)
    with torch.no_grad():
        elbo = -TraceMeanField_ELBO(max_plate_nesting=1).loss(run.model, run.guide, run.vrnn, x, mask)
    assert elbo == pytest.approx(log_likelihood - kl.sum(), rel=1e-4, abs=1e-3)


def test_figure2_needs_latent_variables(hershey_runs):
    with pytest.raises(SystemExit, match="no latent variables"):
        script("analyze").main(["--checkpoint", str(hershey_runs / "rnn-gmm")])


# ---------------------------------------------------------------------------------------------
# run/figure3.py
# ---------------------------------------------------------------------------------------------


def test_figure3_real_beside_rnn_and_vrnn(hershey_runs, tmp_path):
    out = tmp_path / "fig" / "figure3.png"
    script("figure3").main(
        [
            "--rnn",
            str(hershey_runs / "rnn-gmm"),
            "--vrnn",
            str(hershey_runs / "vrnn-gmm"),
            "--num",
            "2",
            "--length",
            "30",
            "--out",
            str(out),
        ]
    )
    assert is_png(out)


def test_figure3_refuses_other_data(hershey_runs, kind_runs, tmp_path):
    with pytest.raises(SystemExit, match="handwriting"):
        script("figure3").main(
            [
                "--rnn",
                str(hershey_runs / "rnn-gmm"),
                "--vrnn",
                str(kind_runs / "tiny-speech"),
                "--out",
                str(tmp_path / "f.png"),
            ]
        )


def test_figure3_first_line_out_of_range_is_one_line(hershey_runs, tmp_path):
    with pytest.raises(SystemExit, match="--first 9999 is out of range"):
        script("figure3").main(
            [
                "--rnn",
                str(hershey_runs / "rnn-gmm"),
                "--vrnn",
                str(hershey_runs / "vrnn-gmm"),
                "--first",
                "9999",
                "--out",
                str(tmp_path / "f.png"),
            ]
        )


def test_end_of_run_figures_can_be_redrawn(hershey_runs):
    written = end_of_run_figures(str(hershey_runs / "vrnn-gmm"), num=2)
    assert [os.path.basename(p) for p in written] == ["samples.png", "curves.png"]
