"""Tests of bring-your-own data (byo.py): the README's converter writes a file that trains as is,
and every way of getting the schema wrong fails with a message that says what and how to fix."""

import h5py
import numpy as np
import pytest

from pyro_vrnn import data
from pyro_vrnn.data import DataError, SequenceDataset, validate_h5
from pyro_vrnn.data.schema import write_h5
from pyro_vrnn.train.checkpoints import data_info


def write_sequences(path, splits, kind="real"):  # the converter of the README, verbatim
    splits = {name: [np.asarray(s, np.float32).reshape(len(s), -1) for s in seqs] for name, seqs in splits.items()}
    dim = splits["train"][0].shape[1]
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = kind  # "real", "binary" or "handwriting"
        for split in ("train", "valid", "test"):
            seqs = splits.get(split, [])  # an empty split: data [0, D], offsets [0]
            group = f.create_group(split)
            group["data"] = np.concatenate(seqs) if seqs else np.zeros((0, dim), np.float32)
            group["offsets"] = np.cumsum([0] + [len(s) for s in seqs])


def toy_splits(rng, dim=2):
    return {
        "train": [rng.normal(size=(n, dim)) for n in (5, 3, 8)],
        "valid": [rng.normal(size=(4, dim))],
        "test": [rng.normal(size=(6, dim)), rng.normal(size=(2, dim))],
    }


def test_converter_file_loads_in_place(tmp_path, capsys):
    rng = np.random.default_rng(0)
    splits = toy_splits(rng)
    path = str(tmp_path / "mine.h5")
    write_sequences(path, splits)
    loaded = data.load("hdf5", data_dir=path, cache_dir=str(tmp_path / "cache"))
    summary = capsys.readouterr().out
    assert summary == (
        f"validated mine: train 3 / valid 1 / test 2 sequences; length 3-8 / 4-4 / 2-6 steps; "
        f"dim 2 (real); {path} (your file, read in place)\n"
    )
    train = loaded["train"]
    assert train.path == path and (train.kind, train.dim, train.name) == ("real", 2, "mine")
    np.testing.assert_array_equal(train.lengths, [5, 3, 8])
    np.testing.assert_array_equal(train.mean, [0, 0])  # no mean/std attributes: used as stored
    np.testing.assert_array_equal(train.std, [1, 1])
    np.testing.assert_allclose(loaded["test"][1].numpy(), splits["test"][1], rtol=1e-6)
    data.prepare("hdf5", data_dir=path, cache_dir=str(tmp_path / "cache"))
    assert capsys.readouterr().out == ""  # validated once per version of the file


def test_unstandardized_real_data_is_one_warning_at_every_load(tmp_path, capsys):
    """Column 1 in raw units (mean ~5000, std ~100), no mean/std attributes: one line on stderr at each load,
    from the validation and then from its marker; the data is used as stored."""
    rng = np.random.default_rng(0)
    splits = {name: [s * [1, 100] + [0, 5000] for s in seqs] for name, seqs in toy_splits(rng).items()}
    path, cache = str(tmp_path / "raw.h5"), str(tmp_path / "cache")
    write_sequences(path, splits)
    with h5py.File(path, "r") as f:
        column = f["train/data"][:, 1].astype(np.float64)
    expected = (
        f"warning: {path}: the train split looks unstandardized (column 1 has mean {column.mean():.3g} and std "
        f"{column.std():.3g}; 1 of 2 columns have a std or |mean| above 10) and the file has no mean/std attributes; "
        "training on it can give ELBOs like -1e15, or diverge: standardize the data in your converter, "
        "x = (x - mean) / std with mean and std from the train split, and record them as the attributes mean and std\n"
    )
    for _ in range(2):
        loaded = data.load("hdf5", data_dir=path, cache_dir=cache)
        assert capsys.readouterr().err == expected
    np.testing.assert_allclose(loaded["train"][0].numpy(), splits["train"][0], rtol=1e-6)
    data.load("hdf5", data_dir=path, cache_dir=cache, verbose=False)  # evaluation and the other ranks: quiet
    declared, standardized = str(tmp_path / "declared.h5"), str(tmp_path / "standardized.h5")
    write_sequences(declared, splits)
    with h5py.File(declared, "a") as f:  # the file says how it was normalized: no warning
        f.attrs["mean"], f.attrs["std"] = [0.0, 5000.0], [1.0, 100.0]
    write_sequences(standardized, toy_splits(rng))
    for quiet in (declared, standardized):
        data.load("hdf5", data_dir=quiet, cache_dir=cache)
    assert capsys.readouterr().err == ""


def test_one_dimensional_integer_and_binary_data(tmp_path):
    path = str(tmp_path / "flat.h5")
    with h5py.File(path, "w") as f:
        f.attrs["kind"], f.attrs["name"] = "binary", "coin flips"
        for split, values in (("train", [1, 0, 1, 1, 0]), ("valid", [0, 1]), ("test", [1])):
            f[f"{split}/data"] = np.array(values, dtype=np.uint8)  # [steps]: D = 1, integers
            f[f"{split}/offsets"] = np.array([0, len(values)], dtype=np.int32)
    assert validate_h5(path) == {
        "kind": "binary",
        "dim": 1,
        "name": "coin flips",
        "sequences": {"train": 1, "valid": 1, "test": 1},
        "warning": None,
    }
    train = SequenceDataset(path, "train")
    x = train[0]
    assert x.shape == (5, 1) and x.dtype.is_floating_point and x.flatten().tolist() == [1, 0, 1, 1, 0]


def broken(tmp_path, change):
    """A valid file, then `change(f)` applied to it; returns the message validate_h5 raises."""
    path = str(tmp_path / "broken.h5")
    write_sequences(path, toy_splits(np.random.default_rng(1)))
    with h5py.File(path, "a") as f:
        change(f)
    with pytest.raises(DataError) as error:
        validate_h5(path)
    message = str(error.value)
    assert "\n" not in message and path in message
    return message


def replace(f, name, value):
    del f[name]
    f[name] = value


def test_schema_errors_say_what_and_how_to_fix(tmp_path):
    message = broken(tmp_path, lambda f: f.attrs.__delitem__("kind"))
    assert "no root attribute 'kind'" in message and "f.attrs['kind'] = 'real'" in message
    assert "must be one of" in broken(tmp_path, lambda f: f.attrs.__setitem__("kind", "audio"))
    message = broken(tmp_path, lambda f: f.__delitem__("valid"))
    assert "no group 'valid'" in message and "offsets [0]" in message
    assert "has no dataset 'offsets'" in broken(tmp_path, lambda f: f.__delitem__("test/offsets"))
    message = broken(tmp_path, lambda f: replace(f, "train/data", np.array([["a", "b"]] * 16, dtype="S1")))
    assert "dtype" in message and "np.float32" in message
    message = broken(tmp_path, lambda f: replace(f, "train/data", np.zeros((16, 2, 2))))
    assert "shape (16, 2, 2)" in message and "[steps, D]" in message
    message = broken(tmp_path, lambda f: replace(f, "train/offsets", np.array([0, 5, 3, 16])))
    assert "not increasing: offsets[2] = 3 <= offsets[1] = 5" in message and "np.cumsum" in message
    assert "must start with 0" in broken(tmp_path, lambda f: replace(f, "train/offsets", np.array([1, 5, 16])))
    message = broken(tmp_path, lambda f: replace(f, "train/offsets", np.array([0, 5, 8, 15])))
    assert "end at 15 but train/data has 16 steps" in message
    message = broken(tmp_path, lambda f: replace(f, "train/offsets", np.array([0.0, 5, 8, 16])))
    assert "1-D integer array" in message

    def nan(f):
        f["test/data"][6, 1] = np.nan  # row 6 is the second test sequence's first step

    message = broken(tmp_path, nan)
    assert "NaN or infinite value in sequence 1 (row 6)" in message and "interpolate" in message
    message = broken(tmp_path, lambda f: replace(f, "valid/data", np.zeros((4, 3), np.float32)))
    assert "different dimensions" in message
    message = broken(tmp_path, lambda f: f.attrs.__setitem__("kind", "binary"))
    assert "needs values of 0 or 1" in message and "set kind to 'real'" in message
    message = broken(tmp_path, lambda f: f.attrs.__setitem__("kind", "handwriting"))
    assert "D = 3" in message
    message = broken(tmp_path, lambda f: f.attrs.__setitem__("std", [1.0, 0.0]))
    assert "attribute std" in message and "> 0" in message

    def empty_valid(f):
        replace(f, "valid/data", np.zeros((0, 2), np.float32))
        replace(f, "valid/offsets", np.array([0]))

    assert "the valid split is empty" in broken(tmp_path, empty_valid)
    for rate in (0, 16000.5, np.nan, "fast", "16000", True, [8000, 16000]):
        message = broken(tmp_path, lambda f: f.attrs.__setitem__("sample_rate", rate))
        assert "attribute sample_rate" in message and "whole number of Hz" in message, rate
    message = broken(tmp_path, lambda f: f.attrs.update(kind="binary", sample_rate=16000))
    assert "sample_rate is 16000 (kind 'binary')" in message and "marks kind 'real' data as audio" in message


def test_a_sample_rate_marks_real_data_as_audio(tmp_path):
    """The optional attribute sample_rate: read with the data and kept in a checkpoint (figures.audio_rate)."""
    path = str(tmp_path / "audio.h5")
    write_sequences(path, toy_splits(np.random.default_rng(3)))
    assert SequenceDataset(path, "train").sample_rate is None  # real data, not sound
    with h5py.File(path, "a") as f:
        f.attrs["sample_rate"] = 8000
    assert validate_h5(path)["kind"] == "real"
    train = SequenceDataset(path, "train")
    assert train.sample_rate == 8000 and data_info(train)["sample_rate"] == 8000


def test_an_empty_test_split_and_a_dimension_of_zero(tmp_path):
    rng = np.random.default_rng(2)
    splits = toy_splits(rng, dim=3)
    del splits["test"]  # "test may be empty": the converter writes data [0, 3]
    path = str(tmp_path / "no-test.h5")
    write_sequences(path, splits)
    assert validate_h5(path)["sequences"] == {"train": 3, "valid": 1, "test": 0}
    with h5py.File(path, "a") as f:  # an empty split written as [0, 1] (or [0]) says nothing about D
        replace(f, "test/data", np.zeros((0, 1), np.float32))
    assert validate_h5(path)["dim"] == 3
    with h5py.File(path, "a") as f:
        for split in ("train", "valid", "test"):
            replace(f, f"{split}/data", np.zeros((len(f[split]["data"]), 0), np.float32))
    with pytest.raises(DataError, match=r"D = 0 .*D >= 1"):
        validate_h5(path)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir FILE.h5"):
        data.prepare("hdf5", cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="no such file"):
        data.prepare("hdf5", data_dir=str(tmp_path / "absent.h5"), cache_dir=str(tmp_path))
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        data.prepare("hdf5", data_dir=str(tmp_path / "text.h5"), cache_dir=str(tmp_path))


def test_every_dataset_is_registered():
    assert {
        "hershey",
        "iam",
        "timit",
        "timit-core",
        "blizzard",
        "accent",
        "onomatopoeia",
        "audio",
        "speech-demo",
        "chorales",
        "hdf5",
    } <= set(data.DATASETS)
    assert set(data.SPEECH) <= set(data.DATASETS) - {"hdf5", "hershey", "iam", "chorales"}  # audio frames


def test_the_mfcc_sets_of_the_ablations_are_standardized_pieces_that_load(tmp_path, capsys):
    """benchmarks/mfcc_sets.py (docs/ablations.md's bring-your-own speech sets), on WAV files of tones: the pieces
    are 10-20 frames, each split gets a file, train is standardized, and the file trains through --dataset hdf5.
    A tone's MFCCs follow its pitch: the c1 of a low tone and of a high one differ."""
    from pyro_vrnn.benchmarks import mfcc_sets
    from pyro_vrnn.data.audio import write_wav

    rng = np.random.default_rng(0)
    time = np.arange(16000) / 16000  # one second: 98 frames of 25 ms every 10 ms
    files = []
    for i in range(12):
        path = str(tmp_path / "wav" / f"{i:02d}.wav")
        write_wav(path, 0.3 * np.sin(2 * np.pi * (200 + 300 * i) * time) + 0.01 * rng.normal(size=time.size))
        files.append(path)
    bank = mfcc_sets.mel_filterbank()
    low, high = (mfcc_sets.mfcc(0.3 * np.sin(2 * np.pi * f * time), bank) for f in (300, 3000))
    assert low.shape == (98, 12) and abs(low[:, 0].mean() - high[:, 0].mean()) > 1
    splits, mean, std = mfcc_sets.build("short12", files, bank, seed=0)
    assert all(10 <= len(s) <= 20 for seqs in splits.values() for s in seqs)
    # a quarter of the 12 files, one to each split: each file's 98 frames make 4 pieces of 20 and one of 18
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [5, 5, 5]
    train = np.concatenate(splits["train"])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    path = str(tmp_path / "short12.h5")
    write_h5(path, splits, kind="real", name="short12", mean=mean, std=std, source="tones")  # as mfcc_sets.main
    loaded = data.load("hdf5", data_dir=path, cache_dir=str(tmp_path / "cache"))
    assert loaded["train"].kind == "real" and loaded["train"].dim == 12 and len(loaded["test"]) == 5
    assert "standardize" not in capsys.readouterr().err  # no warning: the attributes say how it was scaled
