"""Tests of `--dataset prompts` (prompts.py, and the G.722 reader in audio.py) on a small tree made
here in the Debian layout: voice folders of raw 16 kHz G.722 files, nested digits/ folders, a
silence/ folder, an empty file and the en -> voice symbolic link that Debian installs. Checked as
the paper prepares speech: 200-sample frames, 0.5 s training pieces, whole valid/test prompts, one
mean and std from the training split; the split by file within each voice; the one-line errors."""

import os
import sys

import h5py
import numpy as np
import pytest

from pyro_vrnn import data
from pyro_vrnn.data import DataError, prompts
from pyro_vrnn.data.audio import FRAME_SIZE, PIECE_FRAMES, cut_pieces, frame, read_audio
from pyro_vrnn.data.audio_formats import open_audio

G722 = pytest.importorskip("G722")

VOICES = ("en_US_f_Test", "fr_CA_f_Test", "ru_RU_f_Test")
FILES = ("activated", "goodbye", "vm-intro", "digits/1", "digits/2", "digits/20", "letters/a", "dictate/pause")
INSTALL = (
    "apt-get install asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 "
    "asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722"
)


def encode_g722(path, samples):
    """int16 samples at 16 kHz -> a raw 64 kbit/s G.722 file, as Asterisk stores its prompts."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(G722.G722(16000, 64000).encode(np.asarray(samples, dtype=np.int16)))


def decoded(path):
    return np.frombuffer(G722.G722(16000, 64000).decode(open(path, "rb").read()), dtype=np.int16)


def voiced(rng, n, pitch):
    """A speech-like signal: a harmonic tone under a slow envelope, plus a little noise (int16)."""
    t = np.arange(n) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
    tone = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 6)) / k for k in range(1, 5))
    return np.clip(6000 * envelope * tone + rng.normal(0, 300, n), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    """/usr/share/asterisk/sounds in miniature: 3 voices x 8 prompts (0.55-1.6 s, lengths not
    multiples of 200), each also with silence/1.g722; ru has an empty is.g722; en -> en_US_f_Test."""
    root = tmp_path_factory.mktemp("sounds")
    rng = np.random.default_rng(7)
    for v, voice in enumerate(VOICES):
        for name in FILES:
            n = 2 * int(rng.integers(4400, 12800))  # even: G.722 codes two samples a byte
            encode_g722(str(root / voice / f"{name}.g722"), voiced(rng, n, 110 + 60 * v))
        encode_g722(str(root / voice / "silence" / "1.g722"), rng.normal(0, 3, 16000))
    (root / "ru_RU_f_Test" / "is.g722").write_bytes(b"")
    os.symlink(root / "en_US_f_Test", root / "en")
    return str(root)


@pytest.fixture(scope="module")
def prepared(sounds, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cache"))
    return data.load("prompts", data_dir=sounds, cache_dir=cache, verbose=False), cache


def by_voice(names):
    voices = {}
    for name in names:
        voice = name.split("/")[0]
        voices[voice] = voices.get(voice, 0) + 1
    return voices


# ---------------------------------------------------------------------------------------------
# The G.722 reader
# ---------------------------------------------------------------------------------------------


def test_g722_files_decode_in_blocks_to_16_khz_floats(sounds):
    path = os.path.join(sounds, "en_US_f_Test", "activated.g722")
    audio = open_audio(path)  # no magic bytes: recognised by the extension
    assert (audio.sample_rate, audio.channels, audio.num_samples) == (16000, 1, 2 * os.path.getsize(path))
    whole = decoded(path)
    in_blocks = np.concatenate(list(audio.blocks(999)))  # odd blocks: the decoder's state carries over
    assert in_blocks.dtype == np.float32 and len(in_blocks) == len(whole) == audio.num_samples
    np.testing.assert_array_equal(in_blocks, whole / np.float32(32768))
    assert -1 <= in_blocks.min() and in_blocks.max() < 1 and np.abs(in_blocks).max() > 0.1
    samples, rate = read_audio(path)
    assert rate == 16000 and np.array_equal(samples, in_blocks)


def test_dataset_audio_reads_a_folder_of_g722_files(sounds, tmp_path):
    d = data.load(
        "audio",
        data_dir=os.path.join(sounds, "fr_CA_f_Test"),
        cache_dir=str(tmp_path),
        verbose=False,
        use_split_folders=False,
    )
    assert sum(len(d[s]) for s in d) > 0 and d["train"].dim == FRAME_SIZE


def test_without_the_g722_module_one_line_names_pip_install(sounds, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "G722", None)  # import G722 now raises ImportError
    for run in (
        lambda: data.prepare("prompts", data_dir=sounds, cache_dir=str(tmp_path), verbose=False),
        lambda: open_audio(os.path.join(sounds, "en_US_f_Test", "goodbye.g722")),
    ):
        with pytest.raises(DataError) as error:
            run()
        assert "pip install g722" in str(error.value) and "\n" not in str(error.value)
    assert not os.listdir(tmp_path) or all(n.startswith(".") for n in os.listdir(tmp_path))


# ---------------------------------------------------------------------------------------------
# The tree, the split, the preparation
# ---------------------------------------------------------------------------------------------


def test_voices_are_found_once_and_silence_and_empty_files_left_out(sounds):
    assert prompts.find_voices(sounds) == {v: os.path.join(sounds, v) for v in VOICES}  # not "en" again
    found, left_out = prompts.find_prompts(sounds)
    assert {v: len(p) for v, p in found.items()} == dict.fromkeys(VOICES, len(FILES))
    assert left_out == 3 + 1  # a silence/1.g722 per voice, ru's empty is.g722
    assert os.path.join(sounds, "en_US_f_Test", "digits", "20.g722") in found["en_US_f_Test"]


def test_split_by_file_within_each_voice(prepared):
    splits, _ = prepared
    counts = {s: by_voice({n.split("@")[0] for n in splits[s].names}) for s in splits}
    # random_split of 8 files: one each for valid and test (at least one), six for train
    assert counts["valid"] == counts["test"] == dict.fromkeys(VOICES, 1)
    train_files = {n.split("@")[0] for n in splits["train"].names}
    eval_files = set(splits["valid"].names) | set(splits["test"].names)
    assert len(eval_files) == 6 and not train_files & eval_files
    assert by_voice(train_files) == dict.fromkeys(VOICES, 6)  # every train file >= 0.55 s: a piece or more


def test_frames_pieces_and_whole_prompts(prepared, sounds):
    splits, _ = prepared
    assert all(splits[s].dim == FRAME_SIZE and splits[s].kind == "real" for s in splits)
    assert set(splits["train"].lengths) == {PIECE_FRAMES}  # 0.5 s pieces of 40 frames
    expected_pieces = sum(
        len(decoded(os.path.join(sounds, f + ".g722"))) // FRAME_SIZE // PIECE_FRAMES
        for f in {n.split("@")[0] for n in splits["train"].names}
    )
    assert len(splits["train"]) == expected_pieces
    for split in ("valid", "test"):
        for name, length in zip(splits[split].names, splits[split].lengths):
            assert length == len(decoded(os.path.join(sounds, name + ".g722"))) // FRAME_SIZE


def test_one_global_mean_and_std_from_the_training_pieces(prepared, sounds):
    splits, _ = prepared
    train = splits["train"]
    frames = {}  # each training file decoded and framed independently of the preparation
    for file in {n.split("@")[0] for n in train.names}:
        frames[file] = cut_pieces(frame(read_audio(os.path.join(sounds, file + ".g722"))[0]))
    pieces = np.concatenate(
        [
            frames[file][int(first) // PIECE_FRAMES]  # names are "file@first_frame"
            for file, first in (n.split("@") for n in train.names)
        ]
    )
    mean, std = pieces.astype(np.float64).mean(), pieces.astype(np.float64).std()
    np.testing.assert_allclose(train.mean, np.full(FRAME_SIZE, mean), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(train.std, np.full(FRAME_SIZE, std), rtol=1e-6)
    with h5py.File(train.path, "r") as f:
        stored = f["train"]["data"][:].astype(np.float64)
    assert abs(stored.mean()) < 1e-5 and stored.std() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(stored, (pieces - mean) / std, atol=1e-5)
    for split in ("valid", "test"):  # evaluation data scaled by the training statistics
        np.testing.assert_array_equal(splits[split].mean, train.mean)
        first = splits[split].names[0]
        whole = frame(read_audio(os.path.join(sounds, first + ".g722"))[0])
        np.testing.assert_allclose(splits[split][0].numpy(), (whole - mean) / std, atol=1e-4)


def test_the_split_is_determined_by_the_seed(sounds, prepared, tmp_path):
    splits, _ = prepared
    again = data.load("prompts", data_dir=sounds, cache_dir=str(tmp_path / "a"), verbose=False, seed=0)
    other = data.load("prompts", data_dir=sounds, cache_dir=str(tmp_path / "b"), verbose=False, seed=1)
    for split in ("valid", "test"):
        assert again[split].names == splits[split].names
    assert other["test"].names != splits["test"].names
    assert by_voice(other["test"].names) == dict.fromkeys(VOICES, 1)


def test_heldout_voice_is_the_test_split(sounds, tmp_path):
    d = data.load("prompts-heldout", data_dir=sounds, cache_dir=str(tmp_path), verbose=False)
    assert by_voice(d["test"].names) == {"ru_RU_f_Test": len(FILES)}
    assert by_voice(d["valid"].names) == {"en_US_f_Test": 1, "fr_CA_f_Test": 1}  # 5% of 8: at least one
    assert set(by_voice(n.split("@")[0] for n in d["train"].names)) == {"en_US_f_Test", "fr_CA_f_Test"}
    with pytest.raises(DataError, match="no voice 'de'"):
        data.prepare("prompts", data_dir=sounds, cache_dir=str(tmp_path), verbose=False, held_out="de")


def test_missing_prompts_are_one_line_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(prompts, "candidate_roots", lambda: [str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    for data_dir in (None, str(tmp_path / "nowhere"), str(tmp_path / "empty")):
        with pytest.raises(DataError) as error:
            data.prepare("prompts", data_dir=data_dir, cache_dir=str(tmp_path / "cache"), verbose=False)
        assert INSTALL in str(error.value) and "\n" not in str(error.value)


@pytest.mark.skipif(
    not os.path.isdir("/usr/share/asterisk/sounds/en_US_f_Allison"),
    reason="the Debian packages asterisk-core-sounds-*-g722 are not installed",
)
def test_the_installed_debian_tree_is_found():
    root = prompts.find_root(None)
    found, _ = prompts.find_prompts(root)
    assert "en_US_f_Allison" in found and "en" not in found and "en_US" not in found
    assert len(found["en_US_f_Allison"]) >= 500
    activated = os.path.join(root, "en_US_f_Allison", "activated.g722")
    assert open_audio(activated).num_samples == 17024  # 8512 bytes: two 16 kHz samples a byte
