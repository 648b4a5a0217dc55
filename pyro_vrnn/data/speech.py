"""The paper's speech datasets (Chung et al. 2015, Sec. 5.1), and any folder of audio, as 200-sample frames.

All of them go through audio.py (16 kHz mono, non-overlapping 200-sample frames, ONE global mean
and std from the stored training frames, streamed into the HDF5 schema). They differ in which
files form which split and in how files are cut (audio.CUTS):

  timit         the LDC layout: TRAIN/ and TEST/ trees, DR1-DR8/<speaker>/<sentence>.WAV (NIST
                SPHERE; RIFF copies such as SA1.WAV.wav are accepted, one file per utterance).
                Train: 0.5 s pieces (40 frames) of the TRAIN utterances minus 5% of them, drawn
                with a fixed seed and kept whole as the validation set. Test: whole utterances of
                the full TEST set (all 1680, as in later work, e.g. Fraccaro et al. 2016) or,
                with test_set="core" (dataset "timit-core"), the 192 SI/SX utterances of the 24
                core-test speakers. Evaluation sequences are whole utterances, framed; the
                trailing partial frame (< 12.5 ms) is dropped.
  blizzard      Blizzard Challenge 2013 (300 h of audiobooks, one speaker): every audio file
                under the directory, or only those under unsegmented/ folders where there are any
                (the whole audiobooks the authors used, not the segmented copies of the same
                speech); a seeded 90/5/5 split by file; every split in 0.5 s pieces (40 frames),
                "as the authors cut them".
  accent        the Speech Accent Archive (2,046 speakers reading one paragraph): 90/5/5 by file
                (so by speaker: no speaker in two splits), every split in 0.5 s pieces, as the
                paper states for Blizzard and Accent.
  onomatopoeia  6,738 non-linguistic human sounds (coughs, screams, laughs, ...): 90/5/5 by file;
                each sound is one whole sequence (the paper cuts only Blizzard and Accent).
  audio         any folder of WAV / FLAC / MP3 / SPHERE files: subfolders train/, valid/ (or
                validation/, dev/) and test/ give the split when present, else a seeded 90/5/5
                split by file; every split in 0.5 s pieces unless cut="whole" or "train-pieces".

The paper's "shuffle and divide the data into train/validation/test splits using a ratio of
0.9/0.05/0.05" is applied to files rather than to pieces, so that no recording (or speaker, for
Accent) is heard in two splits. Nothing is ever downloaded: these sets are licensed, or not
public, and the user brings a copy (--data-dir).
"""

import hashlib
import os
import re

import numpy as np

from pyro_vrnn.data.audio import CUTS, FRAME_SIZE, PIECE_FRAMES, SAMPLE_RATE, find_audio_files, prepare_audio_corpus
from pyro_vrnn.data.audio_formats import AUDIO_EXTENSIONS
from pyro_vrnn.data.iam import random_split
from pyro_vrnn.data.schema import SPLITS, DataError

# The TIMIT core test set: 2 men and 1 woman from each of the 8 dialect regions (TIMIT's
# documentation, testset.doc), their SI and SX sentences: 24 x 8 = 192 utterances.
CORE_TEST_SPEAKERS = frozenset(
    """
    MDAB0 MWBT0 FELC0  MTAS1 MWEW0 FPAS0  MJMP0 MLNT0 FPKT0  MLLL0 MTLS0 FJLM0
    MBPM0 MKLT0 FNLP0  MCMJ0 MJDH0 FMGD0  MGRT0 MNJM0 FDHC0  MJLN0 MPAM0 FMLD0""".split()
)
TIMIT_VALID_FRACTION = 0.05
TIMIT_URL = "catalog.ldc.upenn.edu/LDC93S1"
VALID_FOLDERS = ("valid", "validation", "dev")

ABOUT = {  # where each licensed set comes from, for the message when it is missing
    "blizzard": "The Blizzard Challenge 2013 audiobooks (Lessac Technologies) are licensed through the "
    "Blizzard Challenge, www.cstr.ed.ac.uk/projects/blizzard",
    "accent": "The Speech Accent Archive (Weinberger) is downloaded by hand from accent.gmu.edu",
    "onomatopoeia": "The paper's Onomatopoeia set (6,738 human sounds by 51 voice actors) is not public",
    "audio": "--dataset audio reads a folder of your own audio files",
}
DEFAULT_DIRS = {
    "timit": os.path.join("data", "timit"),
    "blizzard": os.path.join("data", "blizzard"),
    "accent": os.path.join("data", "accent"),
    "onomatopoeia": os.path.join("data", "onomatopoeia"),
}


def cache_path_for(cache_dir, name, data_dir, options):
    """One cache per (copy of the data, options), so that two copies never rebuild each other's."""
    tag = hashlib.sha256(f"{os.path.abspath(data_dir)}\n{sorted(options.items())!r}".encode()).hexdigest()[:8]
    return os.path.join(cache_dir, f"{name}-{tag}.h5")


def resolve_dir(name, data_dir):
    if data_dir is None:
        if name not in DEFAULT_DIRS:
            raise DataError(f"--dataset {name} needs --data-dir DIR (a folder of WAV/FLAC/MP3 files)")
        data_dir = DEFAULT_DIRS[name]
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def relative_name(path, root):
    """A file's name in the cache: its path under root, without the extension."""
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")


# ---------------------------------------------------------------------------------------------
# TIMIT
# ---------------------------------------------------------------------------------------------


def find_timit(data_dir):
    """{(split, dialect, speaker, sentence): path} for every utterance of the LDC layout under data_dir.

    Case is ignored (TIMIT/TRAIN/DR1/FCJF0/SA1.WAV and timit/train/dr1/fcjf0/sa1.wav both work);
    when one utterance has several files (SA1.WAV and a converted SA1.WAV.wav), the first by
    name length wins, i.e. the original.
    """
    utterances = {}
    for path in find_audio_files(data_dir, (".wav", ".sph")):
        parts = os.path.relpath(path, data_dir).split(os.sep)
        if len(parts) < 4:
            continue
        split, dialect, speaker, file = parts[-4].lower(), parts[-3].upper(), parts[-2].upper(), parts[-1]
        if split not in ("train", "test") or not re.fullmatch(r"DR\d", dialect):
            continue
        key = (split, dialect, speaker, file.split(".")[0].upper())
        if key not in utterances or len(path) < len(utterances[key]):
            utterances[key] = path
    return utterances


def timit_splits(utterances, test_set="full", seed=0):
    """{split: [(path, "TRAIN/DR1/FCJF0/SA1")]}: 5% of TRAIN held out (seeded) as valid; test full or core."""
    if test_set not in ("full", "core"):
        raise ValueError(f"test_set must be 'full' or 'core', got {test_set!r}")
    train = sorted(k for k in utterances if k[0] == "train")
    test = sorted(k for k in utterances if k[0] == "test")
    if test_set == "core":
        test = [k for k in test if k[2] in CORE_TEST_SPEAKERS and k[3][:2] in ("SI", "SX")]
    num_valid = int(round(TIMIT_VALID_FRACTION * len(train)))
    if len(train) >= 2:
        num_valid = max(1, num_valid)
    held_out = set(np.random.default_rng(seed).permutation(len(train))[:num_valid].tolist())
    name = lambda key: "/".join([key[0].upper(), *key[1:]])  # noqa: E731
    return {
        "train": [(utterances[k], name(k)) for i, k in enumerate(train) if i not in held_out],
        "valid": [(utterances[k], name(k)) for i, k in enumerate(train) if i in held_out],
        "test": [(utterances[k], name(k)) for k in test],
    }


def prepare_timit(
    data_dir, cache_dir, verbose=True, test_set="full", seed=0, name="timit", cut="train-pieces", **audio_options
):
    """TIMIT as later work prepares it for the VRNN: train in 0.5 s pieces, valid/test whole utterances."""
    data_dir = resolve_dir("timit", data_dir)
    missing = (
        f"TIMIT not found: {{}}. TIMIT is licensed by the LDC ({TIMIT_URL}): copy its "
        f"TRAIN/ and TEST/ trees (DR1-DR8/<speaker>/<sentence>.WAV) there or pass their location with --data-dir"
    )
    if not os.path.isdir(data_dir):
        raise DataError(missing.format(f"no directory {data_dir}"))
    utterances = find_timit(data_dir)
    for split in ("train", "test"):
        if not any(k[0] == split for k in utterances):
            raise DataError(missing.format(f"no {split.upper()}/DR*/<speaker>/*.WAV files under {data_dir}"))
    files = timit_splits(utterances, test_set, seed)
    if not files["test"]:
        raise DataError(
            f"TIMIT under {data_dir} has none of the 24 core-test speakers' SI/SX utterances "
            f"(e.g. TEST/DR1/MDAB0/SI1039.WAV); use the full test set (dataset timit)"
        )
    options = dict(test_set=test_set, seed=seed, cut=cut, **audio_options)
    note = (
        f"{len(files['train']) + len(files['valid'])} TRAIN utterances: {len(files['valid'])} held out "
        f"(seed {seed}), the rest in 0.5 s pieces; {test_set} test set of {len(files['test'])} utterances"
    )
    return prepare_audio_corpus(
        files,
        data_dir,
        cache_path_for(cache_dir, name, data_dir, options),
        name,
        cut=cut,
        settings=options,
        verbose=verbose,
        note=note,
        **audio_options,
    )


# ---------------------------------------------------------------------------------------------
# Folders of audio: Blizzard, Accent, Onomatopoeia, any
# ---------------------------------------------------------------------------------------------


def unsegmented_only(files, data_dir):
    """Blizzard 2013 ships the audiobooks whole (train/unsegmented/<collection>/<book>/*.mp3) and again cut
    into sentences (the segmented WAV archives). The authors used the unsegmented MP3s; where such a folder
    exists, only the files under it count, or the same speech would be there twice, in two splits."""
    kept = [p for p in files if "unsegmented" in os.path.relpath(p, data_dir).lower().split(os.sep)[:-1]]
    return (kept, "unsegmented audiobooks only, ") if kept else (files, "")


def folder_splits(data_dir, seed=0, use_split_folders=True, only_unsegmented=False):
    """{split: [(path, name)]}: from train/ valid/ test/ subfolders if all are there, else a
    seeded 90/5/5 split by file. Returns (files, how)."""
    files, only = find_audio_files(data_dir), ""
    if only_unsegmented:
        files, only = unsegmented_only(files, data_dir)
    if use_split_folders:
        folders = {
            entry.lower(): entry for entry in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, entry))
        }
        valid = next((folders[v] for v in VALID_FOLDERS if v in folders), None)
        if "train" in folders and "test" in folders and valid is not None:
            by_folder = {"train": folders["train"], "valid": valid, "test": folders["test"]}
            split_files = {
                split: [
                    (p, relative_name(p, data_dir))
                    for p in files
                    if os.path.relpath(p, data_dir).split(os.sep)[0] == folder
                ]
                for split, folder in by_folder.items()
            }
            return split_files, only + "split by folder"
    split_of = random_split(range(len(files)), seed)
    split_files = {
        split: [(p, relative_name(p, data_dir)) for i, p in enumerate(files) if split_of[i] == split]
        for split in SPLITS
    }
    return split_files, f"{only}90/5/5 split by file, seed {seed}"


def prepare_folder(
    name,
    data_dir,
    cache_dir,
    verbose=True,
    cut="pieces",
    seed=0,
    use_split_folders=True,
    only_unsegmented=False,
    **audio_options,
):
    """A folder of audio files as a speech dataset `name` (blizzard, accent, onomatopoeia, audio)."""
    data_dir = resolve_dir(name, data_dir)
    about = ABOUT.get(name, ABOUT["audio"])
    if not os.path.isdir(data_dir):
        raise DataError(
            f"{name} data not found: no directory {data_dir}. {about}; nothing is downloaded "
            f"here: pass the location of your copy with --data-dir"
        )
    if cut not in CUTS:
        raise DataError(f"cut must be one of {', '.join(CUTS)}, got {cut!r}")
    files, how = folder_splits(data_dir, seed, use_split_folders, only_unsegmented)
    total = sum(len(v) for v in files.values())
    if total == 0:
        raise DataError(
            f"{name} data not found: no audio files ({', '.join(AUDIO_EXTENSIONS)}) under "
            f"{data_dir}. {about}; nothing is downloaded here: pass the location of your copy "
            f"with --data-dir"
        )
    if not files["train"]:
        raise DataError(
            f"{name}: no training file under {data_dir} ({total} audio files in all; a random "
            f"split needs at least 3, a train/ folder at least 1)"
        )
    options = dict(
        cut=cut, seed=seed, use_split_folders=use_split_folders, only_unsegmented=only_unsegmented, **audio_options
    )
    piece = audio_options.get("piece_frames", PIECE_FRAMES) * audio_options.get("frame_size", FRAME_SIZE)
    cut_note = {
        "pieces": f"every split in {piece / audio_options.get('sample_rate', SAMPLE_RATE):g} s pieces",
        "whole": "whole files",
        "train-pieces": "train in pieces, valid/test whole",
    }[cut]
    note = f"{total} files, {how}; {cut_note}"
    return prepare_audio_corpus(
        files,
        data_dir,
        cache_path_for(cache_dir, name, data_dir, options),
        name,
        cut=cut,
        settings=options,
        verbose=verbose,
        note=note,
        **audio_options,
    )


def prepare_blizzard(data_dir, cache_dir, verbose=True, **options):
    return prepare_folder(
        "blizzard", data_dir, cache_dir, verbose, **{"cut": "pieces", "only_unsegmented": True, **options}
    )


def prepare_accent(data_dir, cache_dir, verbose=True, **options):
    return prepare_folder("accent", data_dir, cache_dir, verbose, **{"cut": "pieces", **options})


def prepare_onomatopoeia(data_dir, cache_dir, verbose=True, **options):
    return prepare_folder("onomatopoeia", data_dir, cache_dir, verbose, **{"cut": "whole", **options})


def prepare_audio_folder(data_dir, cache_dir, verbose=True, **options):
    return prepare_folder("audio", data_dir, cache_dir, verbose, **{"cut": "pieces", **options})
