"""pyro_vrnn/report/style.py: slant, letter height and spacing of a line, measured from its pen offsets."""

import json
import math
import os

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from conftest import load_script
from pyro.infer import TraceMeanField_ELBO

from pyro_vrnn.data.iam import strokes_to_offsets
from pyro_vrnn.nn.text_window import encode_texts
from pyro_vrnn.report.figures import Run, latent_activity
from pyro_vrnn.report.style import (
    closer_to_first,
    distance,
    measure,
    measure_all,
    standardized,
    style_pairs,
    writer_of,
)
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.process import TrainingError


def letters(num, height=1.0, advance=1.5):
    """A line of `num` letters, each a vertical bar of `height` and a ring beside it (y up, font units)."""
    strokes = []
    ring = np.linspace(0.5 * math.pi, 2.5 * math.pi, 41)  # from the top, round, back to the top
    for k in range(num):
        x0 = k * advance
        strokes.append(np.column_stack([np.full(101, x0), np.linspace(0, height, 101)]))
        strokes.append(np.column_stack([x0 + 0.6 + 0.4 * np.cos(ring), height * (0.5 + 0.5 * np.sin(ring))]))
    return strokes


def line_of(strokes, shear_degrees=0.0, scale=1.0):
    """(pen, dx, dy) rows of the strokes sheared by x -> x + tan(a) y, then scaled; as a whiteboard's (y down)
    prepared by the data's own code, which flips y back up."""
    s = math.tan(math.radians(shear_degrees))
    return strokes_to_offsets([scale * (xy @ np.array([[1.0, 0.0], [s, -1.0]])) for xy in strokes])


@pytest.mark.parametrize("angle", [-5.0, 0.0, 12.0, 25.0])
def test_a_line_sheared_by_a_known_angle_has_that_slant(angle):
    style = measure(line_of(letters(6), angle), 6)
    assert style.slant == pytest.approx(angle, abs=0.05)


def test_the_slant_is_that_of_the_strokes_not_of_their_direction():
    """Down- and upstrokes lean the same way: the same line drawn backwards has the same slant."""
    strokes = [xy[::-1] for xy in letters(5)[::-1]]
    assert measure(line_of(strokes, 15.0), 5).slant == pytest.approx(15.0, abs=0.05)


def test_scaling_by_two_doubles_height_and_spacing_and_keeps_the_slant():
    one, two = measure(line_of(letters(6), 10.0), 6), measure(line_of(letters(6), 10.0, scale=2.0), 6)
    assert two.height == pytest.approx(2 * one.height, rel=1e-9)
    assert two.spacing == pytest.approx(2 * one.spacing, rel=1e-9)
    assert two.slant == pytest.approx(one.slant, abs=1e-9)


def test_height_is_the_letters_size_and_spacing_the_advance_a_character():
    """Each bar is one upstroke of height 1, each ring a downstroke and an upstroke of height 1: the median is 1,
    whatever the ring's width. The letters advance 1.5 and the last ends 1.0 after its bar: an x-range of
    5 * 1.5 + 1.0 over 6 characters."""
    style = measure(line_of(letters(6)), 6)
    assert style.height == pytest.approx(1.0, rel=1e-6)
    assert style.spacing == pytest.approx((5 * 1.5 + 1.0) / 6, rel=1e-6)
    assert measure(line_of(letters(6, height=2.0)), 6).height == pytest.approx(2.0, rel=1e-6)
    wider = measure(line_of(letters(6, advance=3.0)), 6)
    assert wider.spacing == pytest.approx((5 * 3.0 + 1.0) / 6, rel=1e-6)
    assert wider.height == pytest.approx(1.0, rel=1e-6)


def test_a_tall_capital_or_descender_does_not_change_the_height():
    """One letter three times as tall among six: the range of heights would triple, the median stroke stays."""
    strokes = letters(6)
    strokes[2] = strokes[2] * (1.0, 3.0)
    assert measure(line_of(strokes), 6).height == pytest.approx(1.0, rel=1e-6)


def test_a_tilted_baseline_does_not_make_the_letters_taller():
    strokes = letters(8)
    tilt = 0.05  # y += 0.05 x: a line that climbs 0.5 letter heights over its length; the strokes' heights stay
    tilted = [xy + np.column_stack([np.zeros(len(xy)), tilt * xy[:, 0]]) for xy in strokes]
    assert measure(line_of(tilted), 8).height == pytest.approx(1.0, rel=1e-6)


def test_the_first_offset_leads_in_from_elsewhere_and_is_not_measured():
    """A written continuation starts with a jump from the end of its priming line: 300 units away, hundreds of times the
    line's height, it would make the line hundreds of times as tall and wide if it counted."""
    line = line_of(letters(4), 10.0)
    jumped = np.vstack([[1.0, -300.0, 300.0], line])
    assert np.allclose(measure(jumped, 4), measure(line, 4), rtol=0.01)


def test_standardized_distance_weighs_each_measure_by_its_spread():
    reference = np.array([[0.0, 10.0, 5.0], [10.0, 30.0, 5.5], [20.0, 50.0, 6.0]])
    z = standardized(reference, reference)
    assert np.allclose(z.mean(0), 0) and np.allclose(z.std(0), 1)
    # 8.165 degrees of slant (one std) count as much as 16.33 units of height or 0.408 of spacing
    std = reference.std(0)
    a = standardized([0.0, 10.0, 5.0], reference)
    assert distance(a, standardized([std[0], 10.0, 5.0], reference)) == pytest.approx(1.0)
    assert distance(a, standardized([0.0, 10.0 + std[1], 5.0 + std[2]], reference)) == pytest.approx(math.sqrt(2))


def test_a_line_needs_three_columns_and_characters():
    with pytest.raises(ValueError, match="pen, dx, dy"):
        measure(np.zeros((5, 2)), 3)
    with pytest.raises(ValueError, match="number of characters"):
        measure(line_of(letters(2)), 0)


def test_pairs_are_of_two_writers_and_a_lone_writer_is_never_n():
    writers = ["a", "a", "b", "b", "b", "c"]
    pairs = style_pairs(writers, range(6), 200, np.random.default_rng(0))
    assert all(writers[n] != writers[m] for n, m in pairs)
    assert {n for n, _ in pairs} == set(range(6)) and {m for _, m in pairs} == set(range(6))
    # only lines 0, 2 and 4 usable (the others have no text): 4 is b's only one, so it is n or m only against a
    pairs = style_pairs(writers, [0, 2, 4], 50, np.random.default_rng(1))
    assert {(writers[n], writers[m]) for n, m in pairs} == {("a", "b"), ("b", "a")}
    with pytest.raises(ValueError, match="all of one writer"):
        style_pairs(writers, [2, 3, 4], 5, np.random.default_rng(0))
    assert writer_of("h00-015-03") == "h00-015" and writer_of("a01-000u-01") == "a01-000u"


def test_closer_to_first_by_standardized_distance():
    """Reference std: slant 10 degrees, height 1, spacing 1. A line 4 degrees from N's slant and 0.9 from M's
    height is nearer M in raw units (4 against 1.35) but nearer N standardized (0.4 against 0.91)."""
    reference = np.array([[0.0, 1.0, 1.0], [20.0, 3.0, 3.0]])  # std 10, 1, 1
    n_style, m_style = np.array([[0.0, 2.0, 2.0]]), np.array([[5.0, 2.9, 2.0]])
    closer, to_n, to_m = closer_to_first(np.array([[4.0, 2.0, 2.0]]), n_style, m_style, reference)
    assert closer.tolist() == [True]
    assert to_n == pytest.approx([0.4]) and to_m == pytest.approx([math.sqrt(0.01 + 0.81)])
    closer, _, _ = closer_to_first(np.array([[4.0, 2.6, 2.0]]), n_style, m_style, reference)
    assert closer.tolist() == [False]  # 0.72 from N, 0.32 from M


@pytest.fixture(scope="module")
def tiny_cvrnn(lines_with_text, tmp_path_factory):
    """A cvrnn-gmm trained for two steps on 30 embedded lines with their texts."""
    sizes = dict(hidden=8, z_dim=2, x_features=4, z_features=4, enc_hidden=4, prior_hidden=4, dec_hidden=4)
    config = make_config(
        "hdf5",
        model="cvrnn-gmm",
        data_dir=lines_with_text,
        out=str(tmp_path_factory.mktemp("style") / "run"),
        batch_size=8,
        max_steps=2,
        threads=1,
        components=2,
        **sizes,
    )
    return train(config, quiet=True)


def test_style_script_reports_the_fractions_its_pairs_give(tiny_cvrnn, tmp_path):
    """run/style.py on a cvrnn-gmm trained for two steps: its fractions are those of the styles it records, each
    pair is of two lines (the file has no names: each line its own writer), and the unprimed control writes the
    same phrases."""
    run_dir = tiny_cvrnn
    result = load_script("style").main(["--checkpoint", run_dir, "--pairs", "4", "--bias", "2", "--out", str(tmp_path)])
    assert json.load(open(os.path.join(tmp_path, "style.json"))) == json.loads(json.dumps(result))
    test = Run(run_dir).dataset("test")
    mean, std = np.asarray(test.mean), np.asarray(test.std)
    real = measure_all([test[i].numpy() * std + mean for i in range(len(test))], test.texts)
    pairs = result["per_pair"]
    assert len(pairs) == 4 and all(p["N"] != p["M"] for p in pairs)
    assert np.allclose([p["N_style"] for p in pairs], real[[p["N"] for p in pairs]])
    for name in ("primed", "unprimed"):
        closer, _, _ = closer_to_first(
            np.array([p[name] for p in pairs]), real[[p["N"] for p in pairs]], real[[p["M"] for p in pairs]], real
        )
        assert result[name]["closer_to_N"] == pytest.approx(closer.mean())
    assert "same_writer" not in result  # no line shares a writer


def test_figure2_of_a_model_conditioned_on_text_reads_the_line_with_its_text(tiny_cvrnn, tmp_path):
    """Figure 2 (run/analyze.py) for a cvrnn-gmm: with the same draws of the guide, the ELBO of the line with its
    text is its log-likelihood less sum_t KL_t; another text moves the window, and so the KL; none is refused."""
    run = Run(tiny_cvrnn)
    test = run.dataset("test")
    line, text = test[0], test.texts[0]
    x, mask = line[None], torch.ones(1, len(line), dtype=torch.bool)
    encoded = encode_texts([text], run.vrnn.alphabet)
    pyro.set_rng_seed(3)
    kl = latent_activity(run.model, run.guide, run.vrnn, line, text=text)["kl"]
    pyro.set_rng_seed(3)
    with torch.no_grad():
        guide_trace = poutine.trace(run.guide).get_trace(run.vrnn, x, mask, text=encoded)
        model_trace = poutine.trace(poutine.replay(run.model, trace=guide_trace)).get_trace(
            run.vrnn, x, mask, text=encoded
        )
    model_trace.compute_log_prob()
    log_likelihood = sum(site["log_prob_sum"].item() for name, site in model_trace.nodes.items() if name[:2] == "x_")
    pyro.set_rng_seed(3)
    with torch.no_grad():
        elbo = -TraceMeanField_ELBO(max_plate_nesting=1).loss(run.model, run.guide, run.vrnn, x, mask, text=encoded)
    assert elbo == pytest.approx(log_likelihood - kl.sum(), rel=1e-4, abs=1e-3)
    pyro.set_rng_seed(3)
    other = latent_activity(run.model, run.guide, run.vrnn, line, text="a" * len(text))["kl"]
    assert not np.allclose(other, kl)
    with pytest.raises(TrainingError, match="with its text"):
        latent_activity(run.model, run.guide, run.vrnn, line)
    written = load_script("analyze").main(["--checkpoint", tiny_cvrnn, "--split", "test", "--out", str(tmp_path)])
    assert sorted(os.path.basename(p) for p in written) == ["figure2-test-0.csv", "figure2-test-0.png"]


def test_written_lines_are_drawn_at_one_scale(tmp_path, monkeypatch):
    """write.png's rows share a scale (plots.plot_handwriting(same_scale=True)): a line twice the size of another
    spans twice the share of its row, so that a priming line's size and a written one's compare."""
    from pyro_vrnn.report import plots

    drawn = {}

    def keep(fig, path, dpi=110):
        drawn["axes"] = [(ax.get_xlim(), ax.get_ylim(), ax.get_position().width) for ax in fig.axes]

    monkeypatch.setattr(plots, "save", keep)
    small, large = line_of(letters(4)), line_of(letters(4), scale=2.0)
    plots.plot_handwriting([small, large], str(tmp_path / "rows.png"), same_scale=True)
    (xs, ys, width_s), (xl, yl, width_l) = drawn["axes"]
    assert np.ptp(xs) == pytest.approx(np.ptp(xl)) and np.ptp(ys) == pytest.approx(np.ptp(yl))
    assert width_s == pytest.approx(width_l)
    # without it, each line fills its row: the small line's axis spans half the units
    plots.plot_handwriting([small, large], str(tmp_path / "rows.png"))
    (xs, _, _), (xl, _, _) = drawn["axes"]
    assert np.ptp(xs) == pytest.approx(np.ptp(xl) / 2, rel=0.1)
