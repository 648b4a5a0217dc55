"""Fault injection on the data layer and the command line: what a killed preparation leaves behind,
bytes damaged on disk, corrupt audio, a read-only cache, absurd data, and flags no run can use.
Each fault ends in one line that says what is wrong and what to do, or is repaired, and nothing
good is lost."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import TINY, dead_pid, fresh_script as load_script, one_line_error, read_only, snapshot

from pyro_vrnn import data
from pyro_vrnn.data import DataError, SequenceDataset, schema
from pyro_vrnn.data.audio import read_audio, write_wav
from pyro_vrnn.data.audio_formats import open_audio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = ("train", "valid", "test")


def patch_everywhere(monkeypatch, name, value, *modules):
    """Replace `name` in pyro_vrnn.report.figures and in each script module that binds it itself (a script
    may import it at its top or inside main)."""
    import pyro_vrnn.report.figures

    for module in (pyro_vrnn.report.figures, *modules):
        if hasattr(module, name):
            monkeypatch.setattr(module, name, value)


def arrays(path):
    """Every split's data and offsets of a prepared file, as numpy arrays."""
    with h5py.File(path, "r") as f:
        return {f"{s}/{k}": f[s][k][:] for s in SPLITS for k in ("data", "offsets")}


def damage_chunk(path, dataset="train/data", row=1):
    """Overwrite 12 bytes of the first chunk of `dataset`, at `row` (3 float32 columns), with the
    finite floats 1, 2, 3: without checksums they would be read as data."""
    with h5py.File(path, "r") as f:
        chunk = f[dataset].id.get_chunk_info(0)
        itemsize = f[dataset].dtype.itemsize * int(np.prod(f[dataset].shape[1:]))
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset + row * itemsize)
        f.write(np.array([1.0, 2.0, 3.0], np.float32).tobytes())


# ---------------------------------------------------------------------------------------------
# 1. What a killed preparation leaves behind is removed at the next start
# ---------------------------------------------------------------------------------------------


def test_leftovers_of_killed_preparations_are_removed(tmp_path):
    cache, gone = tmp_path / "cache", dead_pid()
    cache.mkdir()
    clean = data.prepare("hershey", cache_dir=str(tmp_path / "clean"), num_lines=12, verbose=False)
    xml = cache / f"hershey-12-seed0.tmp{gone}" / "lineStrokes" / "h00"  # a rendering killed half-way
    xml.mkdir(parents=True)
    (xml / "h00-000-01.xml").write_text("<WhiteboardCaptureSession>")
    stale = [
        cache / f"hershey-12-seed0.tmp{gone}",
        cache / f"hershey-12-seed0.h5.tmp{gone}",
        cache / "hershey-12-seed0.h5.tmp1",  # pid 1 runs, but we hold hershey's lock: no one writes it
        cache / f"chorales-seed0.h5.tmp{gone}",
    ]  # another dataset's, its lock free
    for path in stale[1:]:
        path.write_bytes(b"\x89HDF half a file")
    busy = cache / f"timit-core-0123abcd.h5.tmp{gone}"  # timit-core is being prepared: its lock is held
    foreign = cache / f"notes.h5.tmp{gone}"  # no dataset's
    for path in (busy, foreign):
        path.write_bytes(b"keep me")
    with open(cache / ".timit-core.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        path = data.prepare("hershey", cache_dir=str(cache), num_lines=12, verbose=False)
    assert [p.exists() for p in stale] == [False] * 4
    assert busy.read_bytes() == b"keep me" and foreign.read_bytes() == b"keep me"
    after = arrays(path)  # the cache is good: the same numbers as one built in a clean directory
    assert all(np.array_equal(after[k], v) for k, v in arrays(clean).items())

    # write_h5 removes a dead process's half-written file next to its target.
    (tmp_path / f"mine.h5.tmp{gone}").write_bytes(b"half")
    schema.write_h5(str(tmp_path / "mine.h5"), {"train": [np.zeros((2, 1))]}, "real", "mine", [0], [1], "t")
    assert not (tmp_path / f"mine.h5.tmp{gone}").exists() and (tmp_path / "mine.h5").exists()


def test_a_data_directory_is_read_never_written(tmp_path, hershey_cache):
    """The embedded handwriting renders into the cache; a --data-dir must hold a rendered set, which is only read.
    (The rendering went into --data-dir, and analyze.py --data-dir /nonexistent made that folder.)"""
    cache, gone, folders = tmp_path / "cache", dead_pid(), tmp_path / "folders"
    folders.mkdir()
    for data_dir in (folders / "nonexistent", folders / "empty", folders / "leftovers"):
        if data_dir.name != "nonexistent":
            data_dir.mkdir()
        if data_dir.name == "leftovers":  # a temporary of a killed older version: not ours to remove
            (data_dir / f"hershey-12-seed0.tmp{gone}").mkdir()
        before = snapshot(folders)
        with pytest.raises(DataError) as error:
            data.prepare("hershey", data_dir=str(data_dir), cache_dir=str(cache), num_lines=12, verbose=False)
        assert str(error.value).startswith(f"--data-dir {data_dir} holds no rendered hershey set (")
        assert "the embedded set needs no --data-dir: drop it" in str(error.value)
        assert snapshot(folders) == before  # nothing made, nothing removed
    rendered = data.prepare("hershey", cache_dir=str(cache), num_lines=12, verbose=False)
    assert (cache / "hershey-12-seed0" / "GENERATED").exists()
    copy = tmp_path / "copy"  # a copy of the rendered folder is a data directory to read
    shutil.copytree(cache / "hershey-12-seed0", copy / "hershey-12-seed0")
    before = snapshot(copy)
    os.remove(rendered)
    path = data.prepare("hershey", data_dir=str(copy), cache_dir=str(cache), num_lines=12, verbose=False)
    assert snapshot(copy) == before and path == rendered and os.path.exists(path)

    with pytest.raises(DataError, match="holds no synthesized speech-demo corpus"):
        data.prepare("speech-demo", data_dir=str(folders / "empty"), cache_dir=str(cache), verbose=False)

    run = tmp_path / "run"  # analyze.py with a --data-dir that does not exist
    load_script("svi").main(["--max-steps", "1", "--model", "vrnn-gauss", "--out", str(run), *TINY])
    message = refused(load_script("analyze"), ["--checkpoint", str(run), "--data-dir", str(folders / "nonexistent")])
    assert "holds no rendered hershey set" in message and not (folders / "nonexistent").exists()


# ---------------------------------------------------------------------------------------------
# 2. Bytes damaged inside a data block are detected, never read as numbers
# ---------------------------------------------------------------------------------------------


def test_a_damaged_cache_is_rebuilt_or_refused(tmp_path, monkeypatch, capsys):
    cache = str(tmp_path / "cache")
    path = data.prepare("hershey", cache_dir=cache, num_lines=12, verbose=False)
    good = arrays(path)
    with h5py.File(path, "r") as f:
        assert all(f[s][k].fletcher32 for s in SPLITS for k in ("data", "offsets"))
    damage_chunk(path)

    # Read as training does: one line naming the file, not the floats 1, 2, 3.
    with pytest.raises(DataError) as error:
        SequenceDataset(path, "train")[0]
    message = str(error.value)
    assert "\n" not in message and path in message and "damaged" in message and "delete it and run again" in message

    # The next start verifies the (small) cache and builds it again.
    assert data.prepare("hershey", cache_dir=cache, num_lines=12, verbose=False) == path
    assert f"the cache file {path} is damaged: train/data fails its checksum" in capsys.readouterr().err
    assert all(np.array_equal(arrays(path)[k], v) for k, v in good.items())

    # A cache too big to scan at every start: the damage is found as the chunk is read.
    monkeypatch.setattr(schema, "VERIFY_MAX_BYTES", 0)
    damage_chunk(path, "valid/data", row=0)
    before = snapshot(cache)
    assert data.prepare("hershey", cache_dir=cache, num_lines=12, verbose=False) == path
    assert snapshot(cache) == before  # not rebuilt: its data was not read
    valid = data.load("hershey", cache_dir=cache, num_lines=12, verbose=False)["valid"]
    with pytest.raises(DataError, match="is damaged: valid sequence 0 cannot be read"):
        valid[0]
    valid.close()
    monkeypatch.undo()

    # A cache of an older version, without checksums, is rebuilt with them (the versions were
    # bumped too: this is the check behind them).
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)  # the current source: only the missing checksums tell it apart
    with h5py.File(path, "w") as f:
        for key, value in good.items():
            f[key] = value  # contiguous, no filter
        f.attrs.update(attrs)
    data.prepare("hershey", cache_dir=cache, num_lines=12, verbose=False)
    with h5py.File(path, "r") as f:
        assert f["train/data"].fletcher32
    assert all(np.array_equal(arrays(path)[k], v) for k, v in good.items())


def test_a_damaged_user_file_is_one_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "mine.h5")
    with h5py.File(path, "w") as f:  # the converter with checksums, as byo.py suggests
        f.attrs["kind"] = "real"
        for split in SPLITS:
            group = f.create_group(split)
            group.create_dataset("data", data=rng.normal(size=(12, 3)).astype(np.float32), chunks=True, fletcher32=True)
            group.create_dataset("offsets", data=[0, 5, 12], chunks=True, fletcher32=True)
    cache = str(tmp_path / "cache")
    data.prepare("hdf5", data_dir=path, cache_dir=cache, verbose=False)  # validated once
    stat = os.stat(path)
    damage_chunk(path, "valid/data", row=2)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # damage that leaves the date alone
    valid = SequenceDataset(path, "valid", SequenceDataset.DAMAGED_FILE)  # as load() reads it once validated
    with pytest.raises(DataError) as error:
        valid[0]
    assert "\n" not in str(error.value) and path in str(error.value)
    assert "damaged" in str(error.value) and "write it again with your converter" in str(error.value)
    # its change time moved all the same: validation reads it again and says so
    with pytest.raises(DataError, match=r"valid/data rows 0-11 cannot be read .*the file is damaged; write it again"):
        data.load("hdf5", data_dir=path, cache_dir=cache, verbose=False)


# ---------------------------------------------------------------------------------------------
# 3. A corrupt audio file is named and called damaged, with or without soundfile
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_soundfile", [True, False])
def test_corrupt_wav_files_are_named_as_damaged(tmp_path, monkeypatch, with_soundfile):
    if with_soundfile:
        pytest.importorskip("soundfile")
    else:
        monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile raises ImportError
    rng = np.random.default_rng(0)
    good, samples = tmp_path / "good.wav", 0.1 * rng.normal(size=4000)
    write_wav(str(good), samples)
    raw = good.read_bytes()
    garbled_coding = bytearray(raw)
    garbled_coding[20:22] = b"90"  # the fmt chunk's format tag
    garbled_chunk = bytearray(raw)
    garbled_chunk[12:20] = bytes([0x8F, 0x01, 0xEE, 0x07, 0xFF, 0xFF, 0xFF, 0x7F])
    noise = rng.integers(0, 256, size=3000, dtype=np.uint8)
    noise[:2] = (0x13, 0x37)  # random bytes, but not by chance an MPEG frame's sync bits
    cases = {
        "cut.wav": raw[:30],
        "coding.wav": bytes(garbled_coding),
        "chunk.wav": bytes(garbled_chunk),
        "fmt.wav": raw[:24],
        "noise.wav": noise.tobytes(),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as error:
            open_audio(str(tmp_path / name))
        message = str(error.value)
        assert message.startswith(str(tmp_path / name)) and "damaged" in message and "\n" not in message, message
        assert "needs the soundfile package" not in message
    np.testing.assert_allclose(read_audio(str(good))[0], samples, atol=1 / 32768)  # the good file still reads

    # Through a corpus: the error names the bad file among good ones.
    corpus = tmp_path / "corpus"
    for split in SPLITS:
        write_wav(str(corpus / split / "a.wav"), 0.1 * rng.normal(size=16000))
    (corpus / "train" / "b.wav").write_bytes(cases["coding.wav"])
    with pytest.raises(DataError, match=r"train/b\.wav: .*damaged"):
        data.prepare("audio", data_dir=str(corpus), cache_dir=str(tmp_path / "cache"), verbose=False)


# ---------------------------------------------------------------------------------------------
# 4. A read-only cache: complete, it is used as it is; to build, one line
# ---------------------------------------------------------------------------------------------


def broken_attribute(name, value):
    def damage(f):
        f.attrs[name] = value

    return damage


def replace_with(make):
    def damage(f, split="valid"):
        del f[split]
        f[split] = make()

    return damage


def data_as_a_group(f):
    del f["train/data"]
    f.create_group("train/data")


@pytest.mark.parametrize(
    "damage,said",
    [
        (broken_attribute("mean", "abc"), "attribute mean is ['abc']; it must be 2 finite numbers"),
        (broken_attribute("dim", "abc"), "attribute dim is 'abc' but the data has D = 2; set dim = 2, or drop it"),
        (broken_attribute("dim", [2, 2]), "attribute dim is [2, 2] but the data has D = 2; set dim = 2, or drop it"),
        (data_as_a_group, "group 'train' has no dataset 'data'; train/data holds every sequence end to end"),
        (replace_with(lambda: h5py.SoftLink("/nowhere")), "'/valid' is a link (SoftLink) that leads nowhere ("),
        (
            replace_with(lambda: h5py.ExternalLink("missing.h5", "/valid")),
            "'/valid' is a link (ExternalLink) that leads nowhere (",
        ),
    ],
    ids=["mean abc", "dim abc", "dim [2, 2]", "train/data a group", "a dangling soft link", "an external link"],
)
def test_a_user_file_with_wrong_attributes_or_links_is_one_line(tmp_path, monkeypatch, damage, said):
    monkeypatch.setenv("PYRO_VRNN_CACHE", str(tmp_path / "cache"))
    path = str(tmp_path / "mine.h5")
    schema.write_h5(path, {s: [np.ones((4, 2)), np.zeros((3, 2))] for s in SPLITS}, "real", "mine", [0, 0], [1, 1], "t")
    with h5py.File(path, "a") as f:
        damage(f)
    message = refused(load_script("svi"), ["--dataset", "hdf5", "--data-dir", path, "--out", str(tmp_path / "r")])
    assert message.startswith(f"error: {path}: {said}")


def test_a_fifo_as_data_dir_is_one_line(tmp_path, monkeypatch):
    """It hung svi.py and table1.py forever (the open of the file that sizes the network blocks)."""
    monkeypatch.setenv("PYRO_VRNN_CACHE", str(tmp_path / "cache"))
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)

    def hung(signum, frame):
        raise AssertionError("hung on the FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        for script in ("svi", "table1"):
            message = refused(
                load_script(script), ["--dataset", "hdf5", "--data-dir", fifo, "--out", str(tmp_path / script)]
            )
            assert message == f"error: {fifo} is not a regular file: --dataset hdf5 needs --data-dir FILE.h5; " + (
                "see the schema in pyro_vrnn/data/schema.py (README: 'Bring your own data')"
            )
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_read_only_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = data.prepare("hershey", cache_dir=str(cache), num_lines=12, verbose=False)
    rng = np.random.default_rng(0)
    mine = str(tmp_path / "mine.h5")
    schema.write_h5(mine, {s: [rng.normal(size=(4, 2))] for s in SPLITS}, "real", "mine", [0, 0], [1, 1], "t")
    for lock_file in (True, False):  # the lock file there but read-only; or missing (cannot be made)
        if not lock_file:
            os.remove(cache / ".hershey.lock")
        before = snapshot(cache)
        with read_only(monkeypatch, cache):
            splits = data.load("hershey", cache_dir=str(cache), num_lines=12, verbose=False)
            assert splits["train"].path == path and len(splits["train"][0]) > 0
            splits["train"].close()
            # Bring-your-own data needs no cache at all (its validation is not remembered).
            assert data.load("hdf5", data_dir=mine, cache_dir=str(cache), verbose=False)["valid"][0].shape == (4, 2)
            with pytest.raises(DataError) as error:  # a dataset to build there
                data.prepare("hershey", cache_dir=str(cache), num_lines=15, verbose=False)
            message = str(error.value)
            assert "\n" not in message and f"the cache directory {cache} is not writable" in message
            assert "set PYRO_VRNN_CACHE to a writable directory" in message
            with pytest.raises(DataError, match=r"sub is not writable .*set PYRO_VRNN_CACHE"):
                data.prepare("hershey", cache_dir=str(cache / "sub"), num_lines=12, verbose=False)
        assert snapshot(cache) == before  # byte for byte, nothing added or removed


# ---------------------------------------------------------------------------------------------
# 5. Data too large for float32 arithmetic is refused before any training
# ---------------------------------------------------------------------------------------------


def test_data_scaled_by_1e30_is_refused_before_training(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "huge.h5")
    with h5py.File(path, "w") as f:  # byo.py's converter, with unstandardized values
        f.attrs["kind"] = "real"
        for split in SPLITS:
            seqs = [1e30 * rng.normal(size=(6, 2)) for _ in range(3)]
            f[f"{split}/data"] = np.concatenate(seqs).astype(np.float32)
            f[f"{split}/offsets"] = np.cumsum([0] + [len(s) for s in seqs])
    with pytest.raises(DataError) as error:
        data.validate_h5(path)
    message = str(error.value)
    with h5py.File(path, "r") as f:
        first = float(f["train/data"][0, 0])  # 1e30 x a normal draw: the first value over 1e6
    assert "\n" not in message and f"train/data holds {first:.3g} in sequence 0 (row 0), beyond +-1e+06" in message
    assert "standardize the data in your converter" in message and "from the train split" in message
    assert "record them as the attributes mean and std" in message
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        load_script("svi").main(["--dataset", "hdf5", "--data-dir", path, "--max-steps", "2", "--out", str(out), *TINY])
    assert one_line_error(str(stop.value.code)) == f"error: {message}"
    assert not any((out / name).exists() for name in ("log.jsonl", "last.pt", "best.pt", "config.json"))


# ---------------------------------------------------------------------------------------------
# 6. Flags no run can use: one line, before any expensive work
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 2-step VRNN-Gauss run on a tiny real-valued file, trained by run/svi.py (its own cache)."""
    root = tmp_path_factory.mktemp("faults")
    previous = os.environ.get("PYRO_VRNN_CACHE")
    os.environ["PYRO_VRNN_CACHE"] = str(root / "cache")
    rng = np.random.default_rng(0)
    tiny = str(root / "tiny.h5")
    schema.write_h5(
        tiny,
        {
            s: [rng.normal(size=(int(rng.integers(5, 12)), 2)) for _ in range(n)]
            for s, n in (("train", 16), ("valid", 4), ("test", 4))
        },
        "real",
        "tiny",
        [0, 0],
        [1, 1],
        "t",
    )
    run_dir = str(root / "run")
    load_script("svi").main(
        ["--dataset", "hdf5", "--data-dir", tiny, "--max-steps", "2", "--model", "vrnn-gauss", "--out", run_dir, *TINY]
    )
    yield run_dir
    if previous is None:
        os.environ.pop("PYRO_VRNN_CACHE", None)
    else:
        os.environ["PYRO_VRNN_CACHE"] = previous


class Expensive(AssertionError):
    pass


@pytest.fixture
def scripts(monkeypatch, checkpoint, tmp_path):
    """name -> (module, the flags of a run that would work); whatever is expensive (training,
    evaluating, loading a checkpoint, sampling) raises Expensive, so a check must come before it."""

    def expensive(*args, **kwargs):
        raise Expensive("expensive work began before the flags were checked")

    loaded = {name: load_script(name) for name in ("svi", "evaluate_ll", "sample", "analyze", "figure3", "table1")}
    for attribute in ("train", "evaluate_checkpoint", "Run"):
        patch_everywhere(monkeypatch, attribute, expensive, *loaded.values())
    tiny = os.path.join(os.path.dirname(checkpoint), "tiny.h5")
    flags = {
        "svi": ["--dataset", "hdf5", "--data-dir", tiny, "--out", str(tmp_path / "svi")],
        "evaluate_ll": ["--checkpoint", checkpoint],
        "sample": ["--checkpoint", checkpoint],
        "analyze": ["--checkpoint", checkpoint],
        "figure3": ["--rnn", checkpoint, "--vrnn", checkpoint, "--out", str(tmp_path / "f3.png")],
        "table1": ["--dataset", "hdf5", "--data-dir", tiny, "--out", str(tmp_path / "table1")],
    }
    return {name: (loaded[name], flags[name]) for name in loaded}


def refused(module, argv):
    """The one-line message main(argv) exits with."""
    with pytest.raises(SystemExit) as stop:
        module.main(argv)
    return one_line_error(str(stop.value.code))


def test_seeds_outside_numpys_range(scripts, capsys):
    for name, (module, flags) in scripts.items():
        flag = "--seeds" if name == "table1" else "--seed"  # table1 trains several seeds
        for seed in ("-1", str(2**32), "99999999999999999999"):
            assert refused(module, flags + [flag, seed]) == (
                f"error: {flag} is {seed}; it must be a whole number from 0 to 4294967295"
            ), name
        with pytest.raises(Expensive):  # the largest seed passes the check
            module.main(flags + [flag, "4294967295"])
        with pytest.raises(SystemExit) as stop:  # not a whole number: argparse's usage and one error line
            module.main(flags + [flag, "1e11"])
        assert stop.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].endswith(f"error: argument {flag}: invalid int value: '1e11'")
        assert "Traceback" not in err


def test_devices_that_do_not_exist(scripts):
    import torch

    for name, (module, flags) in scripts.items():
        assert refused(module, flags + ["--device", "foo"]) == (
            "error: --device 'foo' is not a device; choose auto, cpu, cuda or cuda:N (a GPU's number)"
        )
        message = refused(module, flags + ["--device", "cuda:7"])
        if torch.cuda.is_available():
            assert "GPU 7 does not exist" in message and "cuda:0" in message
        else:
            assert "sees no CUDA GPU" in message and "--device cpu" in message
            assert refused(module, flags + ["--device", "cuda"]).startswith("error: --device cuda: torch")


def test_settings_that_end_in_a_traceback_or_in_nothing_are_refused_first(scripts):
    """--threads 100000 (a failed library map, then a segfault), --lr 1e300 (an overflow inside Adam), --epochs 0 (a
    directory that holds only a lock, which --resume then refused), table1's --eval-batch-size 0 (caught after the
    whole training, naming --batch-size): each one line before any work."""
    cpus = os.cpu_count() or 1
    for name in ("svi", "table1"):
        module, flags = scripts[name]
        for flag, value, said in (
            ("--threads", "100000", f"--threads is 100000; this machine has {cpus} CPU(s): give at most {cpus} (0: "),
            ("--lr", "1e300", "--lr is 1e+300; it must be at most 1e+06: Adam moves every weight by about --lr a step"),
            ("--epochs", "0", "--epochs is 0; it must be at least 1"),
        ):
            assert refused(module, flags + [flag, value]).startswith(f"error: {said}"), name
    module, flags = scripts["table1"]
    assert refused(module, flags + ["--eval-batch-size", "0"]) == "error: --eval-batch-size is 0; it must be at least 1"


def test_outputs_that_cannot_be_written(scripts, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_bytes(b"precious")
    for name, flag in (("svi", "--out"), ("sample", "--out"), ("analyze", "--out"), ("table1", "--out")):
        module, flags = scripts[name]
        assert refused(module, flags + [flag, str(a_file)]) == (
            f"error: {flag} {a_file} is a file; give a folder (files are written into it; it is created if missing)"
        )
    module, flags = scripts["figure3"]
    assert refused(module, flags + ["--out", str(tmp_path)]) == (
        f"error: --out {tmp_path} is a folder; give a file name in it"
    )
    module, flags = scripts["evaluate_ll"]
    assert refused(module, flags + ["--json", str(tmp_path)]) == (
        f"error: --json {tmp_path} is a folder; give a file name in it"
    )
    missing = tmp_path / "missing" / "ll.json"
    assert refused(module, flags + ["--json", str(missing)]) == (
        f"error: --json {missing}: the folder {missing.parent} does not exist; create it or choose another"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(monkeypatch, locked):
        message = refused(module, flags + ["--json", str(locked / "ll.json")])
    assert message.startswith(f"error: --json {locked / 'll.json'}: cannot write in {locked} (Permission denied)")
    assert a_file.read_bytes() == b"precious" and os.listdir(locked) == []


def test_sampling_flags(checkpoint, tmp_path, monkeypatch):
    from pyro_vrnn.report.sampling import check_temperature

    sample = load_script("sample")
    for value in ("inf", "nan", "0", "-1"):
        with monkeypatch.context() as patch:
            patch_everywhere(patch, "Run", lambda *a, **k: pytest.fail("the checkpoint was loaded"), sample)
            assert refused(sample, ["--checkpoint", checkpoint, "--temperature", value]) == (
                f"error: --temperature is {float(value)}; it must be a finite number above 0"
            )
        with pytest.raises(ValueError, match="finite number above 0"):
            check_temperature(float(value))
    with monkeypatch.context() as patch:  # memory: said before anything is allocated
        patch_everywhere(patch, "sample_run", lambda *a, **k: pytest.fail("sampling began"), sample)
        for flags, what in (
            (["--length", "1000000000"], "--num 6 --length 1000000000"),
            (["--num", "1000000000", "--length", "10"], "--num 1000000000 --length 10"),
        ):
            message = refused(sample, ["--checkpoint", checkpoint, "--out", str(tmp_path / "s"), *flags])
            assert message.startswith(f"error: {what}: sampling would need about ") and " TB of memory" in message
        assert not (tmp_path / "s").exists()
    written = sample.main(["--checkpoint", checkpoint, "--num", "2", "--length", "5", "--out", str(tmp_path / "s")])
    x = np.load(str(tmp_path / "s" / "samples.npz"))["x"]
    assert str(tmp_path / "s" / "samples.npz") in written and x.shape == (2, 5, 2) and np.isfinite(x).all()


def test_the_real_scripts_print_one_line(checkpoint, tmp_path):
    """As a user runs them: exit status 1, one line on stderr, no traceback."""
    env = dict(os.environ, PYRO_VRNN_CACHE=str(tmp_path / "cache"))
    for script, args in (
        ("sample.py", ["--checkpoint", checkpoint, "--temperature", "inf"]),
        ("svi.py", ["--seed", "-1", "--out", str(tmp_path / "run")]),
    ):
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "run", script), *args],
            capture_output=True,
            text=True,
            cwd=str(tmp_path),
            env=env,
            timeout=120,
        )
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and one_line_error(result.stderr.strip())
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
