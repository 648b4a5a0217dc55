"""Text with every line: the embedded lines keep what they were rendered from, IAM-OnDB's loader reads each
line's transcription from its ascii files, and the schema's optional per-sequence `text` goes through
writing, validation (--dataset hdf5) and reading; files without it read as before."""

import os

import h5py
import numpy as np
import pytest
from conftest import make_iam

from pyro_vrnn import data as datasets
from pyro_vrnn.data.iam import read_transcription
from pyro_vrnn.data.schema import DataError, write_h5
from pyro_vrnn.data.text import CHARACTERS
from pyro_vrnn.data.validate import validate_h5


def write_ascii(root, form, lines, ocr=("an OCR line that is not what was written",)):
    """IAM-OnDB's ascii/a01/a01-000/a01-000u.txt: an OCR section, then the handwritten lines after CSR:."""
    path = os.path.join(root, "ascii", form.split("-")[0], form.rstrip("abcdefghijklmnopqrstuvwxyz"), form + ".txt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("OCR:\n\n" + "\n".join(ocr) + "\n\nCSR:\n\n" + "\n".join(lines) + "\n\n")
    return path


def test_read_transcription_takes_the_csr_lines(tmp_path):
    path = write_ascii(str(tmp_path), "a01-000u", ["A MOVE to stop Mr. Gaitskell from", "nominating any more"])
    assert read_transcription(path) == ["A MOVE to stop Mr. Gaitskell from", "nominating any more"]
    (tmp_path / "plain.txt").write_text("no sections here\n")
    assert read_transcription(str(tmp_path / "plain.txt")) == []


def test_iam_lines_get_their_transcription(tmp_path):
    root = str(tmp_path / "iam")
    make_iam(root, np.random.default_rng(0))
    write_ascii(root, "a01-000u", ["first line of a01-000u", "second line of a01-000u"])
    write_ascii(root, "a01-001x", ["only line of a01-001x"])
    write_ascii(root, "b02-002", ["the valid line"])
    # c03-003z and e05-005 have no ascii file: their lines get ""
    splits = datasets.load("iam", data_dir=root, cache_dir=str(tmp_path / "cache"), verbose=False)
    train = dict(zip(splits["train"].names, splits["train"].texts))
    assert train["a01-000u-01"] == "first line of a01-000u"
    assert train["a01-000u-02"] == "second line of a01-000u"
    assert train["a01-001x-01"] == "only line of a01-001x"
    assert train["c03-003z-01"] == "" and train["e05-005-01"] == ""
    assert splits["valid"].texts == ["the valid line"]


def test_iam_without_ascii_files_has_no_text(tmp_path):
    root = str(tmp_path / "iam")
    make_iam(root, np.random.default_rng(0))
    splits = datasets.load("iam", data_dir=root, cache_dir=str(tmp_path / "cache"), verbose=False)
    assert splits["train"].texts is None and len(splits["train"]) == 5


def test_hershey_lines_keep_the_text_they_were_rendered_from(tmp_path):
    splits = datasets.load("hershey", cache_dir=str(tmp_path), num_lines=12, verbose=False)
    xml_dir = tmp_path / "hershey-12-seed0"
    for split in ("train", "valid", "test"):
        dataset = splits[split]
        assert len(dataset.texts) == len(dataset)
        for name, text, length in zip(dataset.names, dataset.texts, dataset.lengths):
            form, line = name.rsplit("-", 1)
            ascii_file = xml_dir / "ascii" / form.split("-")[0] / form / f"{form}.txt"
            assert read_transcription(str(ascii_file))[int(line) - 1] == text
            assert set(text) <= set(CHARACTERS) and 5 <= len(text.replace(" ", "")) <= 14
            assert 3 * len(text) < length < 30 * len(text)  # a line's points grow with its letters


def test_text_round_trips_through_the_schema_and_byo_validation(tmp_path):
    path = str(tmp_path / "own.h5")
    rng = np.random.default_rng(0)
    splits = {
        s: [rng.standard_normal((5 + i, 2)).astype(np.float32) for i in range(n)]
        for s, n in (("train", 3), ("valid", 2), ("test", 1))
    }
    texts = {"train": ["héllo", "a b", "x"], "valid": ["v1", "v2"], "test": ["t"]}
    write_h5(path, splits, "real", "own", np.zeros(2), np.ones(2), "tests", texts=texts)
    validate_h5(path)
    loaded = datasets.load("hdf5", data_dir=path, verbose=False)
    assert loaded["train"].texts == texts["train"] and loaded["test"].texts == ["t"]
    np.testing.assert_allclose(loaded["train"][1].numpy(), splits["train"][1])
    for dataset in loaded.values():
        dataset.close()

    with h5py.File(path, "a") as f:  # one text short: one line naming the split and the fix
        del f["valid"]["text"]
        f["valid"].create_dataset("text", data=np.array(["v1"], dtype=object), dtype=h5py.string_dtype())
    with pytest.raises(DataError, match=r"valid/text has 1 entries for 2 sequences"):
        validate_h5(path)


def test_a_file_without_text_reads_as_before(tmp_path):
    path = str(tmp_path / "plain.h5")
    splits = {s: [np.ones((4, 2), np.float32)] for s in ("train", "valid", "test")}
    write_h5(path, splits, "real", "plain", np.zeros(2), np.ones(2), "tests")
    loaded = datasets.load("hdf5", data_dir=path, verbose=False)
    assert loaded["train"].texts is None and loaded["train"][0].shape == (4, 2)
