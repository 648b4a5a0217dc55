"""Tests of the data pipeline: the IAM-OnDB parser and preparation (on hand-made lineStrokes
files), the embedded Hershey dataset, the HDF5 schema and reader, padding and the sampler."""

import os
import pickle

import numpy as np
import pytest
import torch
from conftest import TINY, fresh_script, line_path, make_iam, one_line_error, write_line

from pyro_vrnn import data
from pyro_vrnn.data import (
    DataError,
    LengthBucketSampler,
    SequenceDataset,
    pad_batch,
    parse_line_strokes,
    prepare_hershey,
    prepare_iam,
    write_h5,
)
from pyro_vrnn.data.iam import offsets_to_strokes, random_split

# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------


def test_parse_two_strokes_exactly(tmp_path):
    path = str(tmp_path / "a01-000u-01.xml")
    write_line(path, [[(10, 100), (13, 96), (15, 90)], [(30, 100), (31, 104)]])
    x = parse_line_strokes(path)
    # y flipped (-100, -96, -90, -100, -104); pen 1 at each stroke's last point; first point dropped
    expected = [[0, 3, 4], [1, 2, 6], [0, 15, -10], [1, 1, -4]]
    np.testing.assert_array_equal(x, expected)


def test_parse_single_point_strokes_and_inverse(tmp_path):
    path = str(tmp_path / "a01-000u-02.xml")
    strokes = [[(0, 0), (1, 0)], [(5, 5)], [(6, 5), (7, 5), (7, 9)]]
    write_line(path, strokes)
    x = parse_line_strokes(path)
    np.testing.assert_array_equal(x, [[1, 1, 0], [1, 4, -5], [0, 1, 0], [0, 1, 0], [1, 0, -4]])
    # back to strokes: the same points, y up, relative to the first point
    back = offsets_to_strokes(x)
    assert [len(s) for s in back] == [2, 1, 3]
    np.testing.assert_array_equal(np.concatenate(back), [[0, 0], [1, 0], [5, -5], [6, -5], [7, -5], [7, -9]])


def test_malformed_xml_names_the_file(tmp_path):
    path = str(tmp_path / "a01-000u-03.xml")
    write_line(path, [[(0, 0), (1, 1), (2, 2)]], broken=True)
    with pytest.raises(DataError, match="a01-000u-03.xml"):
        parse_line_strokes(path)
    with open(path, "w") as f:
        f.write(
            '<WhiteboardCaptureSession><StrokeSet><Stroke><Point x="1"/></Stroke></StrokeSet>'
            "</WhiteboardCaptureSession>"
        )
    with pytest.raises(DataError, match="a01-000u-03.xml"):
        parse_line_strokes(path)
    # ... and through the preparation too
    with pytest.raises(DataError, match="a01-000u-03.xml"):
        prepare_iam(str(tmp_path), str(tmp_path / "cache.h5"), verbose=False)


def test_missing_data_is_one_clear_line(tmp_path):
    for where in (tmp_path / "nowhere", tmp_path):  # no directory; a directory without XML files
        with pytest.raises(DataError) as error:
            data.prepare("iam", data_dir=str(where), cache_dir=str(tmp_path / "cache"))
        message = str(error.value)
        assert "\n" not in message
        assert str(where) in message and "registration" in message
        assert "fki.tic.heia-fr.ch/databases/iam-on-line-handwriting-database" in message
    with pytest.raises(DataError, match="hershey, iam"):
        data.prepare("no-such-set", cache_dir=str(tmp_path / "cache"))


def test_a_file_as_the_folder_of_a_dataset_is_one_clear_line(tmp_path, monkeypatch):
    # A user's own file given as --data-dir with --dataset left at hershey (or any dataset that takes a
    # folder): one line naming --dataset hdf5, before anything is rendered or cached.
    mine, cache = tmp_path / "mine.h5", tmp_path / "cache"
    mine.write_bytes(b"\x89HDF")
    for name in sorted(set(data.DATASETS) - {"hdf5", "chorales", *data.TOKEN_SETS}):  # tokens: a file is fine
        for where, what in ((mine, "is a file"), (mine / "sub", f"is inside the file {mine}")):
            with pytest.raises(DataError) as error:
                data.prepare(name, data_dir=str(where), cache_dir=str(cache), verbose=False)
            message = str(error.value)
            assert message.startswith(f"--data-dir {where} {what}; the {name} data set "), message
            assert message.endswith(" a directory (for a file of your own, pass --dataset hdf5)"), message
    assert not cache.exists()
    monkeypatch.setenv("PYRO_VRNN_CACHE", str(cache))
    with pytest.raises(SystemExit) as stop:  # as run/svi.py says it, with the default dataset
        fresh_script("svi").main(["--data-dir", str(mine), "--out", str(tmp_path / "run"), *TINY])
    assert one_line_error(str(stop.value.code)) == (
        f"error: --data-dir {mine} is a file; the hershey data set renders its lines into a directory "
        "(for a file of your own, pass --dataset hdf5)"
    )
    assert not cache.exists() and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------
# Preparation of IAM-OnDB-format data
# ---------------------------------------------------------------------------------------------


def test_split_lists_and_train_statistics(tmp_path, capsys):
    root = str(tmp_path / "iam")
    make_iam(root, np.random.default_rng(0))
    path = prepare_iam(root, str(tmp_path / "iam.h5"))
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "train 5 / valid 1 / test 0" in summary and "iam.h5" in summary
    splits = {s: SequenceDataset(path, s) for s in ("train", "valid", "test")}
    # trainset + testset_t + testset_f -> train, testset_v -> valid (the authors'); d04-004 is in no list
    assert splits["train"].names == ["a01-000u-01", "a01-000u-02", "a01-001x-01", "c03-003z-01", "e05-005-01"]
    assert splits["valid"].names == ["b02-002-01"] and len(splits["test"]) == 0
    # ONE mean and std for dx and dy, from the training lines only, as the authors' code computes them:
    # sums over both columns divided by the number of rows (cle's global_normalize); the pen bit is left alone
    raw = [parse_line_strokes(line_path(root, n)) for n in splits["train"].names]
    offsets = np.concatenate([x[:, 1:] for x in raw])
    rows = len(offsets)
    m = offsets.sum() / rows
    s = np.sqrt((offsets**2).sum() / rows - m**2)
    assert np.isclose(m, offsets[:, 0].mean() + offsets[:, 1].mean())
    train = splits["train"]
    np.testing.assert_allclose(train.mean, [0, m, m])
    np.testing.assert_allclose(train.std, [1, s, s])
    for i, x in enumerate(raw):
        np.testing.assert_allclose(train[i].numpy(), (x - [0, m, m]) / [1, s, s], rtol=1e-5, atol=1e-6)
    assert train.kind == "handwriting" and train.dim == 3
    np.testing.assert_array_equal(train.lengths, [11, 8, 14, 6, 10])

    # An outlier in the validation line changes the valid data, never the statistics.
    write_line(line_path(root, "b02-002-01"), [[(0, 0), (100000, -100000), (3, 3)]])
    path = prepare_iam(root, str(tmp_path / "iam.h5"), verbose=False)
    valid = SequenceDataset(path, "valid")
    np.testing.assert_allclose(valid.mean, [0, m, m])
    np.testing.assert_allclose(valid.std, [1, s, s])
    np.testing.assert_allclose(valid[0][0].numpy(), [0, (100000 - m) / s, (100000 - m) / s], rtol=1e-5)


def test_cache_is_reused_then_rebuilt_when_a_file_changes(tmp_path, capsys):
    root = str(tmp_path / "iam")
    make_iam(root, np.random.default_rng(1))
    cache = str(tmp_path / "cache")
    path = data.prepare("iam", data_dir=root, cache_dir=cache)
    assert "prepared iam" in capsys.readouterr().out
    built = os.stat(path).st_mtime_ns
    assert data.prepare("iam", data_dir=root, cache_dir=cache) == path
    assert capsys.readouterr().out == "" and os.stat(path).st_mtime_ns == built  # reused as is

    changed = line_path(root, "a01-000u-01")
    write_line(changed, [[(0, 0), (5, 0), (5, 5)]])
    os.utime(changed, ns=(built + 10**9, built + 10**9))  # a new mtime even on coarse clocks
    data.prepare("iam", data_dir=root, cache_dir=cache)
    assert "prepared iam" in capsys.readouterr().out
    train = data.load("iam", data_dir=root, cache_dir=cache)["train"]
    assert train.names[0] == "a01-000u-01" and train.lengths[0] == 2


def test_random_split_by_form_without_lists(tmp_path):
    forms = [f"f{i:02d}-{i:03d}" for i in range(40)]
    split = random_split(forms, seed=0)
    counts = {s: sum(v == s for v in split.values()) for s in ("train", "valid", "test")}
    assert counts == {"train": 36, "valid": 2, "test": 2}
    assert random_split(forms, seed=0) == split and random_split(forms, seed=1) != split
    # through prepare_iam: every line of a form lands in the form's split
    root = str(tmp_path / "iam")
    for form in forms[:10]:
        for line in (1, 2):
            write_line(line_path(root, f"{form}-{line:02d}"), [[(0, 0), (1, 2), (3, 3)]])
    path = prepare_iam(root, str(tmp_path / "iam.h5"), verbose=False)
    names = {s: SequenceDataset(path, s).names for s in ("train", "valid", "test")}
    assert sum(len(v) for v in names.values()) == 20 and all(names.values())
    for split_names in names.values():
        for name in split_names:
            assert name[:-3] + "-02" in split_names  # both lines of the form, together


# ---------------------------------------------------------------------------------------------
# The embedded Hershey dataset
# ---------------------------------------------------------------------------------------------


def hershey_arrays(cache_dir, seed):
    path = prepare_hershey(str(cache_dir), num_lines=30, seed=seed, verbose=False)
    return {
        s: [d[i].numpy() for i in range(len(d))]
        for s, d in ((s, SequenceDataset(path, s)) for s in ("train", "valid", "test"))
    }


def test_hershey_is_deterministic_and_iam_shaped(tmp_path, capsys):
    a, b = hershey_arrays(tmp_path / "a", seed=0), hershey_arrays(tmp_path / "b", seed=0)
    c = hershey_arrays(tmp_path / "c", seed=1)
    for split in a:
        assert len(a[split]) == len(b[split]) > 0
        for x, y in zip(a[split], b[split]):
            np.testing.assert_array_equal(x, y)
    assert sum(len(v) for v in a.values()) == 30
    assert len(a["train"]) != len(c["train"]) or any(
        x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(a["train"], c["train"])
    )

    path = prepare_hershey(str(tmp_path / "a"), num_lines=30, seed=0)  # reused: nothing printed
    assert capsys.readouterr().out == ""
    train = SequenceDataset(path, "train")
    assert train.kind == "handwriting" and train.dim == 3 and train.name == "hershey"
    assert 30 <= np.median(train.lengths) <= 250
    for i in range(len(train)):
        x = train[i].numpy()
        assert set(np.unique(x[:, 0])) == {0.0, 1.0} and x[-1, 0] == 1.0  # pen lifts at the end
        assert np.isfinite(x).all()
    # The files are IAM-OnDB's: lineStrokes XML read back by the IAM parser, and split lists.
    xml_dir = tmp_path / "a" / "hershey-30-seed0"
    first = line_path(str(xml_dir), train.names[0])
    raw = parse_line_strokes(first)
    np.testing.assert_allclose((raw - train.mean) / train.std, train[0].numpy(), rtol=1e-5, atol=1e-5)
    assert np.array_equal(raw[:, 1:], np.round(raw[:, 1:]))  # integer whiteboard coordinates
    with open(first) as f:
        assert 'time="' in f.read()
    assert (xml_dir / "trainset.txt").exists() and (xml_dir / "testset_v.txt").exists()


# ---------------------------------------------------------------------------------------------
# Schema, reader, padding
# ---------------------------------------------------------------------------------------------


def test_schema_round_trip_and_lazy_handle(tmp_path):
    path = str(tmp_path / "toy.h5")
    rng = np.random.default_rng(0)
    train = [rng.normal(size=(n, 2)).astype(np.float32) for n in (5, 1, 3)]
    write_h5(
        path,
        {"train": train, "valid": train[:1]},
        kind="real",
        name="toy",
        mean=[1.0, 2.0],
        std=[3.0, 4.0],
        source="abc",
        names={"train": ["p", "q", "r"], "valid": ["p"], "test": []},
    )
    ds = SequenceDataset(path, "train")
    assert (len(ds), ds.kind, ds.dim, ds.name, ds.names) == (3, "real", 2, "toy", ["p", "q", "r"])
    np.testing.assert_array_equal(ds.lengths, [5, 1, 3])
    np.testing.assert_array_equal(ds.mean, [1, 2])
    np.testing.assert_array_equal(ds.std, [3, 4])
    assert len(SequenceDataset(path, "test")) == 0
    assert ds._file is None  # nothing opened until the first item
    np.testing.assert_array_equal(ds[2].numpy(), train[2])
    assert ds[-1].dtype == torch.float32 and ds._file is not None
    with pytest.raises(IndexError):
        ds[3]
    handle = ds._file
    ds._pid = -1  # as if we were now in a forked worker: it must open its own handle
    np.testing.assert_array_equal(ds[0].numpy(), train[0])
    assert ds._file is not handle
    copy = pickle.loads(pickle.dumps(ds))  # the handle is dropped, the copy opens its own
    assert copy._file is None
    np.testing.assert_array_equal(copy[1].numpy(), train[1])
    with pytest.raises(DataError, match="prepare"):
        SequenceDataset(str(tmp_path / "absent.h5"), "train")


def test_dataloader_workers_read_their_own_handle(tmp_path):
    path = str(tmp_path / "toy.h5")
    seqs = [np.full((n, 3), n, dtype=np.float32) for n in range(1, 21)]
    write_h5(path, {"train": seqs}, kind="real", name="toy", mean=np.zeros(3), std=np.ones(3), source="x")
    ds = SequenceDataset(path, "train")
    ds[0]  # the parent opens a handle before the workers fork
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=LengthBucketSampler(ds.lengths, 4), collate_fn=pad_batch, num_workers=2
    )
    seen = 0
    for x, mask in loader:
        lengths = mask.sum(1)
        assert torch.equal(x[:, 0, 0], lengths.float())  # each sequence is filled with its length
        seen += len(x)
    assert seen == 20


def test_pad_batch_zero_pads_and_masks():
    seqs = [torch.ones(3, 2), 2 * torch.ones(1, 2), 3 * torch.ones(2, 2)]
    x, mask = pad_batch(seqs)
    assert x.shape == (3, 3, 2) and x.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    assert torch.equal(x[1], torch.tensor([[2.0, 2.0], [0.0, 0.0], [0.0, 0.0]]))
    assert x[~mask].abs().sum() == 0 and torch.equal(x[2, :2], seqs[2])
    with pytest.raises(ValueError):
        pad_batch([])


# ---------------------------------------------------------------------------------------------
# The sampler
# ---------------------------------------------------------------------------------------------


def spread(batches, lengths):
    return np.mean([lengths[b].max() - lengths[b].min() for b in batches])


def test_sampler_covers_each_index_once_in_length_sorted_batches():
    lengths = np.random.default_rng(0).integers(1, 1000, size=1003)
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 126  # ceil(1003 / 8), sizes balanced at 7-8
    assert sorted(i for b in batches for i in b) == list(range(1003))
    assert all(7 <= len(b) <= 8 for b in batches)
    # similar lengths together: far less spread than random batches of the same size
    random_batches = np.array_split(np.random.default_rng(1).permutation(1003), 126)
    assert spread(batches, lengths) < 0.2 * spread(random_batches, lengths)
    # deterministic per (seed, epoch); another epoch shuffles differently
    assert list(LengthBucketSampler(lengths, batch_size=8, seed=3)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches and sorted(i for b in sampler for i in b) == list(range(1003))
    # no shuffle: batches follow the sorted lengths
    ordered = [i for b in LengthBucketSampler(lengths, 8, shuffle=False) for i in b]
    assert np.all(np.diff(lengths[ordered]) >= 0)


def test_sampler_shards_ranks_disjoint_and_equal():
    lengths = np.random.default_rng(0).integers(1, 500, size=101)
    for drop_last in (False, True):
        shards = []
        for rank in range(3):
            sampler = LengthBucketSampler(lengths, 4, seed=7, rank=rank, world_size=3, drop_last=drop_last)
            sampler.set_epoch(5)
            shards.append(list(sampler))
            assert len(shards[-1]) == len(sampler)
        assert len({len(s) for s in shards}) == 1  # every rank gets as many batches
        indices = [i for shard in shards for b in shard for i in b]
        assert len(indices) == len(set(indices))  # disjoint
        if drop_last:
            assert all(len(b) == 4 for shard in shards for b in shard) and len(shards[0]) == 8
        else:
            assert sorted(indices) == list(range(101)) and len(shards[0]) == 9
    # fewer sequences than ranks: every rank still gets a batch (repeating sequences)
    tiny = [list(LengthBucketSampler([3, 5], 4, rank=r, world_size=4)) for r in range(4)]
    assert all(len(t) == 1 and len(t[0]) == 1 for t in tiny)
    with pytest.raises(ValueError):
        LengthBucketSampler(lengths, 4, rank=3, world_size=3)
