"""Tests of the chorales dataset (music.py): the quarter-note piano roll on note lists, the
conversion of tiny music21 scores built here, the JSB-proportion split, and the preparation
pipeline on a stand-in corpus (the full corpus takes ~40 s to parse and is not needed here)."""

import builtins

import numpy as np
import pytest

from pyro_vrnn import data
from pyro_vrnn.data import DataError, SequenceDataset, music
from pyro_vrnn.data.music import jsb_split, piano_roll, unique_rolls

KEY = {name: midi - 21 for name, midi in (("A0", 21), ("C4", 60), ("E4", 64), ("G4", 67), ("C8", 108))}


def test_piano_roll_samples_notes_on_quarter_note_frames():
    notes = [
        (60, 0, 2),  # C4 held two beats: frames 0 and 1
        (64, 0.5, 1.0),  # an off-beat eighth: sounds at no frame time, gone
        (67, 1, 1.5),  # on at beat 1 only
        (21, 0, 1),  # the lowest key
        (108, 2, 3),  # the highest key
        (20, 0, 3),
        (109, 0, 3),
    ]  # off the keyboard: dropped
    roll = piano_roll(notes)
    assert roll.shape == (3, 88) and roll.dtype == np.float32
    expected = np.zeros((3, 88), dtype=np.float32)
    expected[[0, 1], KEY["C4"]] = 1
    expected[1, KEY["G4"]] = 1
    expected[0, KEY["A0"]] = 1
    expected[2, KEY["C8"]] = 1
    np.testing.assert_array_equal(roll, expected)
    # float offsets from triplets land on the beat they mean; num_frames pads or cuts
    triplets = piano_roll([(60, 1 / 3 + 1 / 3 + 1 / 3 + 2, 4.0000001)])
    assert triplets.shape == (4, 88) and triplets[:, KEY["C4"]].tolist() == [0, 0, 0, 1]
    assert piano_roll([(60, 0, 2)], num_frames=5)[:, KEY["C4"]].tolist() == [1, 1, 0, 0, 0]
    assert piano_roll([]).shape == (0, 88)


def test_music21_score_to_piano_roll_keeps_the_voices():
    m21 = pytest.importorskip("music21")
    from music21 import chord, note, stream, tie

    def part(name, elements):
        p = stream.Part()
        p.partName = name
        for element in elements:
            p.append(element)
        return p

    tied_a, tied_b = note.Note("D5", quarterLength=1), note.Note("D5", quarterLength=1)
    tied_a.tie, tied_b.tie = tie.Tie("start"), tie.Tie("stop")
    soprano = part(
        "Soprano",
        [
            note.Note("C5", quarterLength=2),
            tied_a,
            tied_b,
            note.Rest(quarterLength=1),
            note.Note("E5", quarterLength=0.5),
            note.Note("F5", quarterLength=0.5),
        ],
    )
    bass = part("Bass Continuo", [chord.Chord(["C3", "G3"], quarterLength=4), note.Note("C2", quarterLength=3)])
    violin = part("Violin 1", [note.Note("C7", quarterLength=7)])  # an obbligato part: not a voice
    score = stream.Score([soprano, bass, violin])
    roll = music.score_to_piano_roll(score)
    assert roll.shape == (7, 88)
    on = {t: sorted(int(k) + 21 for k in np.flatnonzero(roll[t])) for t in range(7)}
    assert on == {
        0: [48, 55, 72],
        1: [48, 55, 72],
        2: [48, 55, 74],
        3: [48, 55, 74],
        4: [36],
        5: [36, 76],
        6: [36],
    }  # D5 tied over 2-4; rest at 4; E5 at 5; F5 (5.5) falls between
    # a score without voice names keeps every part
    assert music.score_to_piano_roll(stream.Score([violin])).sum() == 7
    assert m21.__version__


def test_jsb_split_proportions_and_seed():
    names = [f"bach/bwv{i}" for i in range(382)]
    split = jsb_split(names, seed=0)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 229, "valid": 76, "test": 77}  # the JSB benchmark's numbers
    counts = {s: sum(v == s for v in jsb_split(names[:348]).values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 209, "valid": 69, "test": 70}  # music21's 348 distinct chorales
    assert jsb_split(reversed(names), seed=0) == split and jsb_split(names, seed=1) != split


def fake_corpus(monkeypatch, count=12):
    """Stand-in chorales: count small random piano rolls, one of them a duplicate and one empty."""
    rng = np.random.default_rng(0)
    rolls = {
        f"bach/bwv{i}": (rng.random((int(rng.integers(4, 30)), 88)) < 0.05).astype(np.float32) for i in range(count)
    }
    rolls["bach/bwv_copy"] = rolls["bach/bwv3"].copy()
    rolls["bach/bwv_empty"] = np.zeros((0, 88), dtype=np.float32)
    monkeypatch.setattr(music, "chorale_files", lambda: sorted(rolls))
    monkeypatch.setattr(music, "_parse", lambda name: (name, rolls[name]))
    return rolls


def test_prepare_chorales_pipeline_and_cache(tmp_path, monkeypatch, capsys):
    m21 = pytest.importorskip("music21")
    rolls = fake_corpus(monkeypatch)
    cache = str(tmp_path)
    splits = data.load("chorales", cache_dir=cache, workers=1)
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "prepared chorales: train 8 / valid 2 / test 2 sequences" in summary
    assert "dim 88 (binary)" in summary and "2 duplicate or empty left out" in summary
    kept, _ = unique_rolls(rolls)
    assert "bach/bwv_copy" not in kept and "bach/bwv3" in kept and "bach/bwv_empty" not in kept
    split_of = jsb_split(kept, seed=0)
    for split, ds in splits.items():
        assert ds.kind == "binary" and ds.dim == 88
        np.testing.assert_array_equal(ds.mean, np.zeros(88))  # 0/1 values are not normalized
        np.testing.assert_array_equal(ds.std, np.ones(88))
        assert ds.names == sorted(n for n in kept if split_of[n] == split)
        for i, name in enumerate(ds.names):
            np.testing.assert_array_equal(ds[i].numpy(), rolls[name])
    # reused while music21 is the same version; rebuilt when it changes
    data.prepare("chorales", cache_dir=cache, workers=1)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(m21, "__version__", "0.0-test")
    data.prepare("chorales", cache_dir=cache, workers=1)
    assert "music21 0.0-test" in capsys.readouterr().out
    with pytest.raises(DataError, match="--data-dir is not used"):
        data.prepare("chorales", data_dir=str(tmp_path), cache_dir=cache)


def test_chorales_without_music21_is_one_clear_line(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_music21(name, *args, **kwargs):
        if name == "music21" or name.startswith("music21."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_music21)
    with pytest.raises(DataError) as error:
        data.prepare("chorales", cache_dir=str(tmp_path))
    assert str(error.value) == music.MUSIC21_HINT and "pip install music21" in str(error.value)


def test_chorale_piano_rolls_from_one_real_file():
    """One chorale of the real corpus (BWV 269), parsed and converted: 4 voices, quarter-note frames."""
    pytest.importorskip("music21")
    name, roll = music._parse("bach/bwv269")
    assert not isinstance(roll, str), roll
    assert roll.shape[1] == 88 and 30 <= len(roll) <= 80
    voices = roll.sum(axis=1)
    assert voices.max() <= 4 and np.median(voices) == 4  # SATB: four keys at most frames
    assert SequenceDataset  # the schema reader is exercised in the pipeline test
