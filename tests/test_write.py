"""run/write.py and pyro_vrnn/report/synthesis.py: a model conditioned on text writes a given text, stops where the
window has passed its end (Graves's criterion), with Graves's sampling bias and priming; bad text gets one line."""

import math
import os

import numpy as np
import pyro
import pytest
import torch
from conftest import load_script, small_config

from pyro_vrnn import models
from pyro_vrnn.distributions.emissions import StrokeMixture
from pyro_vrnn.nn.text_window import SoftWindow, encode_texts
from pyro_vrnn.report.synthesis import biased, past_the_end, write
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.loop import train

SIZES = dict(hidden=8, z_dim=2, x_features=4, z_features=4, enc_hidden=4, prior_hidden=4, dec_hidden=4, components=2)


@pytest.fixture(scope="module")
def tiny_run(lines_with_text, tmp_path_factory):
    """A cvrnn-gmm trained for three steps on 30 embedded lines: what write.py loads."""
    out = str(tmp_path_factory.mktemp("write") / "run")
    config = make_config(
        "hdf5", model="cvrnn-gmm", data_dir=lines_with_text, out=out, batch_size=8, max_steps=3, threads=1, **SIZES
    )
    return train(config, quiet=True)


def fixed_window(kappa):
    """A window whose every component sits at `kappa` with alpha = beta = 1, whatever h (weights 0)."""
    window = SoftWindow(hidden=2, alphabet_size=3, components=1)
    with torch.no_grad():
        window.linear.weight.zero_()
        window.linear.bias.copy_(torch.tensor([0.0, 0.0, math.log(kappa)]))
    return window


@pytest.mark.parametrize("kappa,past", [(3.6, True), (3.4, False), (2.6, False)])
def test_past_the_end_is_graves_criterion(kappa, past):
    """phi(t, u) = exp(-(kappa - u)^2): with U = 3, past the end once kappa is nearer 4 than 3. A shorter line in
    the same batch (U = 2) is judged against its own end."""
    window = fixed_window(kappa)
    text = encode_texts(["abc", "ab"], "abc")
    h, kappa_prev = torch.zeros(2, 2), torch.zeros(2, 1)
    result = past_the_end(window, h, kappa_prev, text)
    assert result.tolist() == [past, kappa > 2.5]


def test_bias_sharpens_weights_and_narrows_scales():
    emission = StrokeMixture(
        torch.tensor(0.3), torch.tensor([0.5, -1.0]), torch.zeros(2, 2), torch.full((2, 2), 2.0), torch.zeros(2)
    )
    sharp = biased(emission, 1.5)
    assert torch.allclose(sharp.logits, torch.tensor([1.25, -2.5]))
    assert torch.allclose(sharp.scale, torch.full((2, 2), 2.0 * math.exp(-1.5)))
    assert biased(emission, 0) is emission


def network(pace):
    """A tiny crnn-gmm whose window moves `pace` characters a step (h plays no part)."""
    torch.manual_seed(0)
    _, _, net = models.build(small_config("crnn-gmm", alphabet=" ab", window_components=1), "handwriting", 3)
    with torch.no_grad():
        net.window.linear.weight.zero_()
        net.window.linear.bias.copy_(torch.tensor([0.0, 0.0, math.log(pace)]))
    return net


def test_each_line_stops_where_the_window_passes_its_end():
    pyro.set_rng_seed(0)
    written = write(network(0.5), ["ab", "ab ab"], max_steps=100)
    # kappa_t = 0.5 (t + 1) passes U + 1/2: the first step with kappa > 2.5 (t = 5), and > 5.5 (t = 11)
    assert written.finished.all() and written.lengths.tolist() == [5, 11]
    assert written.x.shape == (2, 11, 3) and (written.x[0, 5:] == 0).all()
    stuck = write(network(1e-6), ["ab"], max_steps=7)  # a window that never moves: the cap stops it
    assert not stuck.finished.any() and stuck.lengths.tolist() == [7]


def test_write_script_writes_pictures_and_strokes(tiny_run, tmp_path):
    write_script = load_script("write")
    out = str(tmp_path / "out")
    written = write_script.main(["the old", "--checkpoint", tiny_run, "--num", "2", "--out", out, "--max-steps", "30"])
    assert sorted(os.listdir(out)) == ["write-01.npy", "write-02.npy", "write.png"]
    assert set(written) == {os.path.join(out, name) for name in os.listdir(out)}
    for name in ("write-01.npy", "write-02.npy"):
        strokes = np.load(os.path.join(out, name))
        assert strokes.ndim == 2 and strokes.shape[1] == 3 and 1 <= len(strokes) <= 30
        assert set(np.unique(strokes[:, 0])) <= {0.0, 1.0} and np.isfinite(strokes).all()
    # --style: primed with test line 0 and its text; the default output folder is the run's
    again = write_script.main(["the old", "--checkpoint", tiny_run, "--num", "1", "--style", "0", "--bias", "2"])
    assert os.path.dirname(again[0]) == os.path.join(tiny_run, "write")
    # several styles: --num samples after each priming line, numbered on
    out = str(tmp_path / "styles")
    styles = write_script.main(["the old", "--checkpoint", tiny_run, "--num", "2", "--style", "0", "0", "--out", out])
    assert sorted(os.listdir(out)) == ["write-01.npy", "write-02.npy", "write-03.npy", "write-04.npy", "write.png"]
    assert len(styles) == 5


@pytest.mark.parametrize(
    "text,says",
    [
        ("the old §!", r"never saw the character\(s\) '§', '!' in training"),
        ("a" * 500, "the text has 500 characters; this model was trained on lines of at most"),
        ("", "nothing to write"),
    ],
)
def test_text_it_cannot_write_gives_one_line(tiny_run, tmp_path, capsys, text, says):
    import re

    write_script = load_script("write")
    with pytest.raises(SystemExit) as stop:
        write_script.main([text, "--checkpoint", tiny_run, "--out", str(tmp_path)])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message and re.search(says, message), message
    assert os.listdir(tmp_path) == []


def test_a_style_line_out_of_range_and_an_unconditional_run(tiny_run, tmp_path, lines_with_text):
    write_script = load_script("write")
    with pytest.raises(SystemExit) as stop:
        write_script.main(["the", "--checkpoint", tiny_run, "--style", "999", "--out", str(tmp_path)])
    assert "--style 999 is out of range: the test split has" in str(stop.value.code)
    config = make_config(
        "hdf5", model="rnn-gmm", data_dir=lines_with_text, out=str(tmp_path / "rnn"), max_steps=1, threads=1, **SIZES
    )
    run = train(config, quiet=True)
    with pytest.raises(SystemExit) as stop:
        write_script.main(["the", "--checkpoint", run, "--out", str(tmp_path / "o")])
    assert "is a rnn-gmm, which writes no given text" in str(stop.value.code)


@pytest.mark.parametrize("script_name", ["write", "style", "recognize"])
@pytest.mark.parametrize("bias", ["-1", "nan", "inf"])
def test_every_script_that_writes_refuses_a_bias_below_zero_or_not_finite(script_name, bias, tmp_path):
    """One check (flag_checks.check_bias) for the three scripts that take Graves's --bias, before any work."""
    script = load_script(script_name)
    run = str(tmp_path / "run")
    args = {"write": ["some text"], "style": ["--checkpoint", run], "recognize": ["--written-by", run]}[script_name]
    with pytest.raises(SystemExit, match=f"--bias is {float(bias)}; it must be a finite number, 0 or more"):
        script.main([*args, "--bias", bias, "--out", str(tmp_path / "out")])
