"""Tests of the speech path (audio.py, speech.py, speech_demo.py) on small files written here:
NIST SPHERE headers as in TIMIT, WAV of every bit depth, resampling, 200-sample framing, 0.5 s
pieces, normalization from the training split only, split sizes, the streaming writer, errors."""

import os
import tracemalloc
import wave

import numpy as np
import pytest

from pyro_vrnn import data
from pyro_vrnn.data import DataError, SequenceDataset, StreamWriter, speech_demo
from pyro_vrnn.data.audio import cut_pieces, frame, prepare_audio_corpus, read_audio, write_wav
from pyro_vrnn.data.audio_formats import open_audio, parse_sphere_header, ulaw_to_float
from pyro_vrnn.data.resampling import Resampler, resample
from pyro_vrnn.data.speech import CORE_TEST_SPEAKERS, find_timit, timit_splits

SPLITS = ("train", "valid", "test")


def sphere_header(fields, size=1024):
    """A NIST SPHERE header as TIMIT's: magic, size, typed fields, end_head, padded with spaces."""
    lines = ["NIST_1A", f"{size:>7d}"]
    for key, value in fields.items():
        kind = "-i" if isinstance(value, int) else "-r" if isinstance(value, float) else f"-s{len(value)}"
        lines.append(f"{key} {kind} {value}")
    text = ("\n".join(lines + ["end_head"]) + "\n").encode("ascii")
    return text + b" " * (size - len(text))


def write_sphere(path, samples, rate=16000, byte_format="01", channels=1, **extra):
    """TIMIT's .WAV: 16-bit PCM after a 1024-byte header (sample_coding absent, meaning pcm)."""
    samples = np.asarray(samples, dtype=np.int16)
    fields = {
        "database_id": "TIMIT",
        "database_version": "1.0",
        "utterance_id": "dab0_sa1",
        "channel_count": channels,
        "sample_count": len(samples) // channels,
        "sample_rate": rate,
        "sample_min": int(samples.min()),
        "sample_max": int(samples.max()),
        "sample_n_bytes": 2,
        "sample_byte_format": byte_format,
        "sample_sig_bits": 16,
        **extra,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(sphere_header(fields))
        f.write(samples.astype("<i2" if byte_format == "01" else ">i2").tobytes())


def write_pcm_wav(path, samples, rate, width=2, channels=1):
    """A RIFF WAV with the standard library, from integer samples of `width` bytes."""
    samples = np.asarray(samples, dtype=np.int64)
    if width == 1:
        raw = (samples + 128).astype(np.uint8).tobytes()
    elif width == 3:
        u = samples.astype(np.int64) & 0xFFFFFF
        raw = np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    else:
        raw = samples.astype(f"<i{width}").tobytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)


def noise(rng, n):
    return np.clip(rng.normal(0, 3000, size=n) + rng.normal(0, 500), -32768, 32767).astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def test_sphere_header_and_samples(tmp_path):
    samples = np.array([0, 1, -1, 32767, -32768, 1000, -2000], dtype=np.int16)
    path = str(tmp_path / "SA1.WAV")
    write_sphere(path, samples)
    with open(path, "rb") as f:
        head = f.read(1024)
    assert head.startswith(b"NIST_1A\n   1024\n")
    fields = parse_sphere_header(head)
    assert fields == {
        "header_size": 1024,
        "database_id": "TIMIT",
        "database_version": "1.0",
        "utterance_id": "dab0_sa1",
        "channel_count": 1,
        "sample_count": 7,
        "sample_rate": 16000,
        "sample_min": -32768,
        "sample_max": 32767,
        "sample_n_bytes": 2,
        "sample_byte_format": "01",
        "sample_sig_bits": 16,
    }
    x, rate = read_audio(path)
    assert rate == 16000 and x.dtype == np.float32
    np.testing.assert_array_equal(x, samples / 32768.0)
    # big-endian ("10") and two interleaved channels (averaged)
    write_sphere(str(tmp_path / "be.wav"), samples, byte_format="10")
    np.testing.assert_array_equal(read_audio(str(tmp_path / "be.wav"))[0], samples / 32768.0)
    stereo = np.stack([samples, np.zeros_like(samples)], axis=1).reshape(-1)
    write_sphere(str(tmp_path / "st.wav"), stereo, channels=2)
    np.testing.assert_allclose(read_audio(str(tmp_path / "st.wav"))[0], samples / 65536.0)
    # mu-law: 0xFF is silence, 0x80 / 0x00 the extremes
    np.testing.assert_allclose(ulaw_to_float(bytes([0xFF, 0x80, 0x00])), [0, 32124 / 32768, -32124 / 32768])


def test_sphere_errors_are_clear(tmp_path):
    path = str(tmp_path / "SX1.WAV")
    write_sphere(path, np.zeros(10), sample_coding="pcm,embedded-shorten-v1.09")
    with pytest.raises(DataError, match="shorten.*sph2pipe"):
        read_audio(path)
    write_sphere(path, np.zeros(10))
    with open(path, "r+b") as f:
        f.truncate(1024 + 6)  # 3 of 10 samples
    with pytest.raises(DataError, match="truncated"):
        read_audio(path)
    with open(path, "wb") as f:
        f.write(b"NIST_1A\n   1024\nsample_rate -i 16000\n")  # no end_head
    with pytest.raises(DataError, match="end_head"):
        read_audio(path)


def test_wav_of_every_bit_depth(tmp_path):
    values = {
        1: [0, 127, -128, 64],
        2: [0, 32767, -32768, 1234],
        3: [0, 8388607, -8388608, -5],
        4: [0, 2147483647, -2147483648, 77],
    }
    for width, v in values.items():
        path = tmp_path / f"w{width}.wav"
        write_pcm_wav(path, v, 8000, width)
        x, rate = read_audio(str(path), sample_rate=None)
        assert rate == 8000
        np.testing.assert_allclose(x, np.array(v) / 2.0 ** (8 * width - 1), atol=1e-7)
    write_pcm_wav(tmp_path / "stereo.wav", [100, 300, -200, -400], 16000, 2, channels=2)
    np.testing.assert_allclose(read_audio(str(tmp_path / "stereo.wav"))[0], np.array([200, -300]) / 32768.0)


def test_flac_mp3_without_soundfile_names_the_package(tmp_path, monkeypatch):
    path = tmp_path / "a.flac"
    path.write_bytes(b"fLaC" + b"\0" * 100)
    import builtins

    real_import = builtins.__import__

    def no_soundfile(name, *args, **kwargs):
        if name == "soundfile":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_soundfile)
    with pytest.raises(DataError, match="FLAC needs the soundfile package: pip install soundfile"):
        open_audio(str(path))


def test_flac_and_mp3_through_soundfile(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    samples = noise(np.random.default_rng(0), 4000)
    soundfile.write(str(tmp_path / "a.flac"), samples, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(read_audio(str(tmp_path / "a.flac"))[0], samples / 32768.0)
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile has no MP3")
    t = np.arange(44100) / 44100  # 1 s of 440 Hz at 44.1 kHz, as MP3 (lossy, so only the pitch is checked)
    soundfile.write(str(tmp_path / "a.mp3"), 0.3 * np.sin(2 * np.pi * 440 * t), 44100, format="MP3")
    y, rate = read_audio(str(tmp_path / "a.mp3"))
    assert rate == 16000 and len(y) == 16000
    assert np.argmax(np.abs(np.fft.rfft(y))) * 16000 / len(y) == pytest.approx(440, abs=1)


# ---------------------------------------------------------------------------------------------
# Resampling and framing
# ---------------------------------------------------------------------------------------------


def test_8khz_sine_resampled_to_16khz_keeps_its_frequency(tmp_path):
    rate, f = 8000, 440.0
    t = np.arange(rate) / rate  # 1 s
    write_pcm_wav(tmp_path / "sine.wav", np.round(16000 * np.sin(2 * np.pi * f * t)), rate)
    y, out_rate = read_audio(str(tmp_path / "sine.wav"))
    assert out_rate == 16000 and len(y) == 2 * rate  # the length ratio is exactly 16000 / 8000
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * 16000 / len(y) == pytest.approx(f, abs=1.0)
    # away from the edges it is the same sine sampled at 16 kHz (amplitude 16000/32768, zero phase)
    m = np.arange(len(y))
    reference = 16000 / 32768 * np.sin(2 * np.pi * f * m / 16000)
    np.testing.assert_allclose(y[800:-800], reference[800:-800], atol=2e-4)


def test_resampler_ratios_streaming_and_band_limit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=22050).astype(np.float32)
    y = resample(x, 22050, 16000)
    assert len(y) == 16000  # ceil(n * 320 / 441)
    assert len(resample(x[:1001], 22050, 16000)) == int(np.ceil(1001 * 16000 / 22050))
    # feeding it in uneven blocks gives the same samples as one call
    r, parts, i = Resampler(22050, 16000), [], 0
    for size in rng.integers(1, 3000, size=100):
        parts.append(r.process(x[i : i + size]))
        i += size
        if i >= len(x):
            break
    parts.append(r.flush())
    np.testing.assert_allclose(np.concatenate(parts), y, atol=1e-6)
    # a 9 kHz tone cannot exist at 16 kHz: it is removed, not folded back to 7 kHz
    t = np.arange(22050) / 22050
    leak = resample(np.sin(2 * np.pi * 9000 * t), 22050, 16000)[1000:-1000]
    assert np.sqrt(np.mean(leak**2)) < 1e-3
    tone = resample(np.sin(2 * np.pi * 5000 * t), 22050, 16000)[1000:-1000]
    assert np.sqrt(2 * np.mean(tone**2)) == pytest.approx(1.0, abs=1e-3)


def test_framing_and_pieces_exact():
    frames = frame(np.arange(1099))
    assert frames.shape == (5, 200)  # 99 trailing samples dropped
    np.testing.assert_array_equal(frames[2], np.arange(400, 600))
    pieces = cut_pieces(np.arange(100 * 3).reshape(100, 3), 40)
    assert [p.shape for p in pieces] == [(40, 3), (40, 3)]  # 20 trailing frames dropped
    np.testing.assert_array_equal(pieces[1][0], [120, 121, 122])


# ---------------------------------------------------------------------------------------------
# TIMIT
# ---------------------------------------------------------------------------------------------


def make_timit(root, rng, upper=True):
    """A small TIMIT: TRAIN with 40 utterances (4 speakers x 10), TEST with 2 core and 1 other speaker."""
    case = str.upper if upper else str.lower
    lengths = {}

    def utterance(split, dialect, speaker, sentence, n):
        path = os.path.join(
            root, case("timit"), case(split), case(dialect), case(speaker), case(sentence) + case(".wav")
        )
        write_sphere(path, noise(rng, n))
        lengths["/".join([split.upper(), dialect.upper(), speaker.upper(), sentence.upper()])] = n

    sentences = ["SA1", "SA2", "SI1039", "SI1669", "SI2299", "SX139", "SX229", "SX319", "SX409", "SX49"]
    for s, speaker in enumerate(["FCJF0", "MDPK0", "FDAW0", "MRJO0"]):
        for sentence in sentences:
            utterance("train", f"dr{s % 2 + 1}", speaker, sentence, int(rng.integers(6000, 30000)))
    for speaker in ["MDAB0", "FELC0", "MRCS0"]:  # two core-test speakers and one that is not
        for sentence in sentences:
            utterance("test", "dr1" if speaker != "MRCS0" else "dr4", speaker, sentence, int(rng.integers(3000, 20000)))
    return lengths


def raw_frames(root, name, frames_only=True):
    """The raw frames of an utterance (name like TRAIN/DR1/FCJF0/SA1), read back from the SPHERE file."""
    found = {"/".join([k[0].upper(), *k[1:]]): p for k, p in find_timit(root).items()}
    x, _ = read_audio(found[name])
    return frame(x)


def test_timit_splits_framing_and_train_statistics(tmp_path, capsys):
    root = str(tmp_path / "TIMIT-copy")
    lengths = make_timit(root, np.random.default_rng(0))
    # a converted duplicate (RIFF) next to an original must not count twice
    write_pcm_wav(os.path.join(root, "TIMIT", "TRAIN", "DR1", "FCJF0", "SA1.WAV.wav"), np.zeros(8000), 16000)
    cache = str(tmp_path / "cache")
    splits = data.load("timit", data_dir=root, cache_dir=cache)
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and summary.startswith("prepared timit: train ")
    assert "/ valid 2 / test 30 sequences" in summary and "dim 200" in summary and cache in summary

    # 5% of the 40 TRAIN utterances (2) held out with seed 0, whole; the rest cut in 0.5 s pieces
    valid_names = splits["valid"].names
    assert len(valid_names) == 2 and all(n.startswith("TRAIN/") for n in valid_names)
    train_utts = sorted(n for n in lengths if n.startswith("TRAIN/") and n not in valid_names)
    assert len(train_utts) == 38
    train = splits["train"]
    assert len(train) == sum(lengths[n] // 8000 for n in train_utts)
    assert set(train.lengths) == {40} and train.dim == 200 and train.kind == "real"
    assert train.names[0] == train_utts[0] + "@0" and train.names[1] == train_utts[0] + "@40"

    # ONE mean and std, over every value of the stored training pieces only
    raw_pieces = [p for n in train_utts for p in cut_pieces(raw_frames(root, n), 40)]
    values = np.concatenate(raw_pieces).astype(np.float64).ravel()
    np.testing.assert_allclose(train.mean, np.full(200, values.mean()), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(train.std, np.full(200, values.std()), rtol=1e-9)
    m, s = values.mean(), values.std()
    np.testing.assert_allclose(train[3].numpy(), (raw_pieces[3] - m) / s, rtol=1e-5, atol=1e-5)

    # valid and test: whole utterances, 200-sample frames, the trailing partial frame dropped
    test = splits["test"]
    assert sorted(test.names) == sorted(n for n in lengths if n.startswith("TEST/"))  # full test set
    for split in (splits["valid"], test):
        for i in range(len(split)):
            name = split.names[i]
            assert split.lengths[i] == lengths[name] // 200
            np.testing.assert_allclose(split[i].numpy(), (raw_frames(root, name) - m) / s, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(split.mean, train.mean)

    # the core test set: the core speakers' SI and SX sentences (8 each), nothing else
    core = data.load("timit-core", data_dir=root, cache_dir=cache, verbose=False)
    assert sorted(core["test"].names) == sorted(
        n
        for n in lengths
        if n.startswith("TEST/") and n.split("/")[2] in CORE_TEST_SPEAKERS and n.split("/")[3][:2] in ("SI", "SX")
    )
    assert len(core["test"]) == 16 and core["valid"].names == valid_names  # same hold-out
    np.testing.assert_array_equal(core["train"].mean, train.mean)


def test_timit_valid_hold_out_is_five_percent_and_seeded(tmp_path):
    utterances = {("train", f"DR{1 + i % 8}", f"SPK{i // 10:02d}", f"SX{i}"): f"/x/{i}" for i in range(4620)}
    utterances.update({("test", "DR1", "MDAB0", s): f"/t/{s}" for s in ("SA1", "SI1039", "SX139")})
    a = timit_splits(utterances, seed=0)
    assert (len(a["train"]), len(a["valid"]), len(a["test"])) == (4389, 231, 3)  # 5% of 4620
    assert timit_splits(utterances, seed=0) == a and timit_splits(utterances, seed=1)["valid"] != a["valid"]
    assert [n for _, n in timit_splits(utterances, "core")["test"]] == ["TEST/DR1/MDAB0/SI1039", "TEST/DR1/MDAB0/SX139"]


def test_timit_lowercase_layout_and_missing_data(tmp_path, capsys):
    root = str(tmp_path / "timit")
    make_timit(root, np.random.default_rng(1), upper=False)
    splits = data.load("timit", data_dir=root, cache_dir=str(tmp_path / "cache"), verbose=False)
    assert len(splits["valid"]) == 2 and len(splits["test"]) == 30
    for where in (tmp_path / "nowhere", tmp_path / "cache"):
        with pytest.raises(DataError) as error:
            data.prepare("timit", data_dir=str(where), cache_dir=str(tmp_path / "cache"))
        message = str(error.value)
        assert "\n" not in message and "TIMIT not found" in message and "LDC" in message and str(where) in message


# ---------------------------------------------------------------------------------------------
# Folders of audio: blizzard, accent, onomatopoeia, audio
# ---------------------------------------------------------------------------------------------


def test_folder_datasets_split_and_cut(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "sounds"
    lengths = {}
    for i in range(40):  # 8 kHz files: resampled to 16 kHz (twice the samples)
        n = int(rng.integers(4500, 12000))  # 0.56-1.5 s at 16 kHz: one or two pieces
        write_pcm_wav(root / f"speaker{i % 7}" / f"take{i:02d}.wav", noise(rng, n), 8000)
        lengths[f"speaker{i % 7}/take{i:02d}"] = 2 * n
    cache = str(tmp_path / "cache")
    blizzard = data.load("blizzard", data_dir=str(root), cache_dir=cache)
    summary = capsys.readouterr().out
    assert "prepared blizzard: train 36" not in summary  # counts are in pieces, not files
    assert "40 files, 90/5/5 split by file, seed 0" in summary
    files_in = {split: sorted({n.split("@")[0] for n in blizzard[split].names}) for split in SPLITS}
    for split in SPLITS:  # every split in 0.5 s pieces: 40 frames of 200 samples
        assert set(blizzard[split].lengths) == {40}
        assert len(blizzard[split]) == sum(lengths[n] // 8000 for n in files_in[split])
    # the same 90/5/5 split by file for a whole-file dataset: 36 / 2 / 2 files
    ono = data.load("onomatopoeia", data_dir=str(root), cache_dir=cache, verbose=False)
    assert [len(ono[s]) for s in SPLITS] == [36, 2, 2]
    for split in SPLITS:  # the same files in the same splits (every file yields at least one piece)
        assert sorted(ono[split].names) == files_in[split]
    for i in range(len(ono["test"])):
        assert ono["test"].lengths[i] == lengths[ono["test"].names[i]] // 200
    # a different seed gives another split; accent cuts like blizzard
    other = data.prepare("accent", data_dir=str(root), cache_dir=cache, verbose=False, seed=1)
    assert SequenceDataset(other, "valid").names != blizzard["valid"].names


def test_blizzard_takes_the_unsegmented_audiobooks_where_there_are_any(tmp_path, capsys):
    rng = np.random.default_rng(4)
    root = tmp_path / "blizzard"
    for i in range(6):  # the whole books, as the authors used them, and the same speech cut into sentences
        write_pcm_wav(root / "train" / "unsegmented" / "emma" / f"book{i}.wav", noise(rng, 16000), 16000)
        write_pcm_wav(root / "BC2013_segmented" / "emma" / f"CB-EM-{i:02d}-001.wav", noise(rng, 8000), 16000)
    splits = data.load("blizzard", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert "6 files, unsegmented audiobooks only, 90/5/5 split by file" in capsys.readouterr().out
    names = [n for s in SPLITS for n in splits[s].names]
    assert len(names) == 12 and all(n.startswith("train/unsegmented/emma/book") for n in names)  # 2 pieces each
    audio = data.load("audio", data_dir=str(root), cache_dir=str(tmp_path / "cache"), verbose=False)
    assert sum(len(audio[s]) for s in SPLITS) == 18  # any other folder of audio keeps every file


def test_audio_folder_with_split_subfolders(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "mine"
    for split, folder, count in (("train", "train", 3), ("valid", "Dev", 1), ("test", "test", 2)):
        for i in range(count):
            write_pcm_wav(root / folder / f"{i}.wav", noise(rng, 16000), 16000)
    splits = data.load("audio", data_dir=str(root), cache_dir=str(tmp_path / "cache"), verbose=False)
    assert [len(splits[s]) for s in SPLITS] == [6, 2, 4]  # 1 s files: two 0.5 s pieces each
    assert splits["valid"].names == ["Dev/0@0", "Dev/0@40"]
    whole = data.prepare("audio", data_dir=str(root), cache_dir=str(tmp_path / "cache"), verbose=False, cut="whole")
    assert SequenceDataset(whole, "train").lengths.tolist() == [80, 80, 80]
    with pytest.raises(DataError, match="--dataset audio needs --data-dir"):
        data.prepare("audio", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no audio files"):
        data.prepare("blizzard", data_dir=str(tmp_path / "cache"), cache_dir=str(tmp_path / "cache"))
    (root / "train" / "bad.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="bad.wav"):
        data.prepare("audio", data_dir=str(root), cache_dir=str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# Streaming: the writer never holds the corpus
# ---------------------------------------------------------------------------------------------


def test_stream_writer_writes_in_bounded_chunks(tmp_path):
    rng = np.random.default_rng(4)
    path = str(tmp_path / "s.h5")
    sequences = [rng.normal(3.0, 2.0, size=(int(rng.integers(1, 300)), 5)) for _ in range(200)]
    with StreamWriter(path, "real", "s", 5, "fp", buffer_bytes=4 * 5 * 256) as writer:  # 256 rows
        for i, x in enumerate(sequences):
            for block in np.array_split(x, 3):  # a sequence may arrive in pieces
                writer.append("train" if i % 4 else "valid", block)
            writer.end_sequence("train" if i % 4 else "valid", f"seq{i}")
        mean, std = writer.moments["train"].column_stats()
        writer.finish(mean, std)
    total_rows = sum(len(x) for x in sequences)
    assert writer.peak_buffered_rows < 256 + 300 and writer.flushes >= total_rows // (256 + 300)
    train = [x.astype(np.float32) for i, x in enumerate(sequences) if i % 4]  # rows are stored as float32
    stacked = np.concatenate(train).astype(np.float64)
    np.testing.assert_allclose(mean, stacked.mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, stacked.std(0), rtol=1e-10)
    ds = SequenceDataset(path, "train")
    assert ds.names[:2] == ["seq1", "seq2"] and len(ds) == 150
    np.testing.assert_allclose(ds[1].numpy(), (train[1] - mean) / std, rtol=1e-5, atol=1e-5)
    assert not os.path.exists(path + f".tmp{os.getpid()}")


def test_preparation_memory_stays_below_the_corpus_size(tmp_path):
    rng = np.random.default_rng(5)
    files = {"train": [], "valid": [], "test": []}
    for i in range(60):  # 60 x 4 s = 240 s at 16 kHz: 15.4 MB as float32 frames
        path = str(tmp_path / "c" / f"{i}.wav")
        write_pcm_wav(path, noise(rng, 64000), 16000)
        files[SPLITS[0 if i < 50 else 1 if i < 55 else 2]].append((path, str(i)))
    corpus_bytes = 60 * 64000 * 4
    tracemalloc.start()
    path = prepare_audio_corpus(
        files, str(tmp_path / "c"), str(tmp_path / "c.h5"), "big", verbose=False, buffer_bytes=1 << 20
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < corpus_bytes / 3, f"peak {peak / 1e6:.1f} MB for a {corpus_bytes / 1e6:.1f} MB corpus"
    assert len(SequenceDataset(path, "train")) == 50 * 8


# ---------------------------------------------------------------------------------------------
# speech-demo
# ---------------------------------------------------------------------------------------------


def test_speech_demo_without_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(speech_demo, "espeak_binary", lambda: None)
    with pytest.raises(DataError) as error:
        data.prepare("speech-demo", cache_dir=str(tmp_path), num_sentences=6)
    assert "\n" not in str(error.value) and "apt-get install espeak-ng" in str(error.value)


def test_speech_demo_reads_its_wav_files_through_the_audio_path(tmp_path, monkeypatch):
    """Without espeak-ng: stand-in WAV files at 22.05 kHz where the synthesizer would put them."""
    rng = np.random.default_rng(6)

    def fake_synthesize(text, voice, pitch, speed, gap, out_path, espeak):
        x = noise(rng, int(rng.integers(15000, 40000))) / 32768.0
        write_wav(out_path, resample(x, 22050, 16000) * speech_demo.HEADROOM)

    monkeypatch.setattr(speech_demo, "espeak_binary", lambda: "espeak-ng")
    monkeypatch.setattr(speech_demo, "synthesize", fake_synthesize)
    splits = data.load("speech-demo", cache_dir=str(tmp_path), verbose=False, num_sentences=30)
    assert [len({n.split("/")[0] for n in splits[s].names}) for s in SPLITS] == [1, 1, 1]  # 3 speakers, disjoint
    assert set(splits["train"].lengths) == {40} and len(splits["valid"]) == len(splits["test"]) == 10
    assert (tmp_path / "speech-demo-30-seed0" / "prompts.txt").read_text().count("\n") == 30


@pytest.mark.skipif(speech_demo.espeak_binary() is None, reason="espeak-ng is not installed")
def test_speech_demo_synthesis(tmp_path):
    splits = data.load("speech-demo", cache_dir=str(tmp_path), verbose=False, num_sentences=6)
    wav = tmp_path / "speech-demo-6-seed0" / "spk000" / "utt0000.wav"
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
    x, _ = read_audio(str(wav))
    assert 0.05 < np.abs(x).max() <= speech_demo.HEADROOM + 1e-4  # speech, with ~1 dB of headroom
    assert len(x) > 16000  # a sentence lasts seconds
    assert all(len(splits[s]) > 0 for s in SPLITS) and splits["train"].dim == 200
