"""Polyphonic music: the Bach chorales bundled with music21, as 88-key piano rolls (the JSB convention).

The VRNN lecture benchmarks include polyphonic music, where x_t is a binary vector of the keys
sounding at step t and the emission is a product of Bernoullis (kind "binary"). The standard set,
JSB Chorales (Boulanger-Lewandowski et al., 2012), samples each chorale at quarter-note steps on
the 88 piano keys (MIDI 21-108). Its pickle is not redistributable here; the chorales music21
ships (with permission) are the same music, so this module rebuilds the set from them:

  * the Riemenschneider chorales of `music21.corpus.chorales.Iterator` (371 numbers naming 350
    distinct files; a piece listed twice, or two files with the same notes, is kept once, so
    that no piece is in two splits: 348 chorales with music21 10.5);
  * the four voices, as in JSB: the parts named Soprano, Alto, Tenor, Bass (or "Soprano 1",
    "Bass Continuo", ...); the 18 chorales with horns, trumpets, timpani, strings or a separate
    continuo lose those parts (a score without such names keeps every part);
  * ties merged (`stripTies`), each note (and each pitch of a chord) as (MIDI pitch, onset,
    offset) in quarter notes from the start of the score;
  * frame t (t = 0, 1, ... quarter notes) has key p on when a note of pitch p has
    onset <= t < offset: notes sounding on a beat are kept, passing notes between beats are not,
    exactly as sampling at quarter-note resolution does; T = ceil(last offset);
  * a fixed seeded split in the JSB proportions 229 / 76 / 77 (train / valid / test);
  * not transposed, not normalized (mean 0, std 1): the values stay 0/1 for the Bernoulli.

The numbers are close in kind to published JSB results but not identical (another edition and
split): compare within this project. The music literature reports log-likelihood per time step
(frame) as well as per sequence. Parsing all chorales takes ~40 s on two cores, so the piano
rolls are cached, and rebuilt when the music21 version (or this preparation) changes.
music21 is optional: `pip install music21` (or the extra `pyro-vrnn[music]`).
"""

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from pyro_vrnn.data.schema import DataError, StreamWriter, cached_source, summary_line

PREPARATION_VERSION = 3  # bump when the conversion below changes: the cache is rebuilt (3: fingerprints)
LOWEST_KEY = 21  # A0
NUM_KEYS = 88  # A0 .. C8 (MIDI 21-108)
JSB_SPLIT = {"train": 229, "valid": 76, "test": 77}  # pieces in the JSB Chorales benchmark
MUSIC21_HINT = "the chorales dataset needs music21: pip install music21 (or pip install 'pyro-vrnn[music]')"
EPSILON = 1e-6  # offsets are floats (triplets): 2.9999999 is beat 3
VOICES = ("soprano", "alto", "tenor", "bass")


def piano_roll(notes, num_frames=None):
    """(MIDI pitch, onset, offset) triples in quarter notes -> float32 [T, 88] of 0/1.

    Key p - 21 is on at frame t when some note of pitch p has onset <= t < offset.
    T = ceil(the last offset) unless num_frames is given. Pitches outside 21-108 are dropped.
    """
    notes = [(int(p), float(on), float(off)) for p, on, off in notes]
    if num_frames is None:
        num_frames = max([math.ceil(off - EPSILON) for _, _, off in notes], default=0)
    roll = np.zeros((max(0, int(num_frames)), NUM_KEYS), dtype=np.float32)
    for pitch, onset, offset in notes:
        key = pitch - LOWEST_KEY
        if 0 <= key < NUM_KEYS:
            first, end = max(0, math.ceil(onset - EPSILON)), min(len(roll), math.ceil(offset - EPSILON))
            roll[first:end, key] = 1.0
    return roll


def voice_parts(score):
    """The score's vocal parts (first word of the part name soprano / alto / tenor / bass), or every
    part when none is named so (or the score itself when it has no parts)."""
    parts = list(score.parts)
    voices = [p for p in parts if (str(p.partName or p.id or "").lower().split() or [""])[0] in VOICES]
    return voices or parts or [score]


def score_notes(score, voices_only=True):
    """The notes of a music21 score (its voices, or all parts; ties merged) as (MIDI pitch, onset,
    offset) in quarter notes from the start of the score."""
    notes = []
    for part in voice_parts(score) if voices_only else list(score.parts) or [score]:
        for element in part.stripTies(inPlace=False).flatten().notes:
            onset = float(element.offset)
            offset = onset + float(element.quarterLength)
            for pitch in element.pitches:  # one for a Note, several for a Chord
                notes.append((pitch.midi, onset, offset))
    return notes


def score_to_piano_roll(score):
    """A music21 score -> [T, 88] piano roll at quarter-note steps."""
    return piano_roll(score_notes(score))


def chorale_files():
    """The corpus paths ('bach/bwv269', ...) of the Riemenschneider chorales, each file once, in order."""
    from music21 import corpus

    return list(dict.fromkeys(corpus.chorales.Iterator(returnType="filename")))


def _parse(filename):
    """(filename, piano roll or the parse error) of one corpus file; runs in a worker process."""
    from music21 import corpus

    try:
        return filename, score_to_piano_roll(corpus.parse(filename))
    except Exception as error:  # music21 raises many kinds; one bad file must not stop the rest
        return filename, f"{type(error).__name__}: {error}"


def jsb_split(names, seed=0):
    """{name: split}: a seeded shuffle cut in the JSB proportions 229 / 76 / 77."""
    names = sorted(names)
    total = sum(JSB_SPLIT.values())
    num_valid = int(round(len(names) * JSB_SPLIT["valid"] / total))
    num_test = int(round(len(names) * JSB_SPLIT["test"] / total))
    order = np.random.default_rng(seed).permutation(len(names))
    split_of = {}
    for rank, i in enumerate(order):
        split_of[names[i]] = "valid" if rank < num_valid else "test" if rank < num_valid + num_test else "train"
    return split_of


def unique_rolls(rolls):
    """Drop empty rolls and all but the first (by name) of identical ones; returns (rolls, how many dropped)."""
    kept, seen = {}, set()
    for name in sorted(rolls):
        key = (rolls[name].shape, rolls[name].tobytes())
        if len(rolls[name]) and key not in seen:
            seen.add(key)
            kept[name] = rolls[name]
    return kept, len(rolls) - len(kept)


def write_piano_rolls(cache_path, rolls, split_of, source, name="chorales", buffer_bytes=4 << 20):
    """{name: [T, 88] roll} -> the schema (kind binary, not normalized), sequences in name order."""
    with StreamWriter(cache_path, "binary", name, NUM_KEYS, source, buffer_bytes=buffer_bytes) as writer:
        for piece in sorted(rolls):
            if len(rolls[piece]):
                writer.add(split_of[piece], rolls[piece], piece)
        writer.finish(normalize=False)
    return cache_path


def prepare_chorales(data_dir, cache_dir, verbose=True, seed=0, workers=None):
    """Build (or reuse) the piano-roll cache of music21's Bach chorales; returns its path."""
    if data_dir is not None:
        raise DataError(
            "the chorales dataset reads the corpus bundled with music21; --data-dir is not used "
            "(for your own music, write piano rolls to a file and use --dataset hdf5)"
        )
    try:
        import music21
    except ImportError:
        raise DataError(MUSIC21_HINT) from None
    source = f"music21 {music21.__version__}; preparation {PREPARATION_VERSION}; seed {seed}"
    cache_path = os.path.join(cache_dir, f"chorales-seed{seed}.h5")
    if cached_source(cache_path) == source:
        return cache_path
    start_time = time.time()
    files = chorale_files()
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:  # spawn: safe whatever the parent holds (torch threads, HDF5 handles)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rolls = dict(pool.map(_parse, files, chunksize=8))
    else:
        rolls = dict(map(_parse, files))
    failed = sorted(n for n, r in rolls.items() if isinstance(r, str))
    if len(failed) == len(rolls):
        raise DataError(
            f"music21 {music21.__version__} could not parse any Bach chorale "
            f"(e.g. {failed[0]}: {rolls[failed[0]]}); reinstall music21"
        )
    rolls, dropped = unique_rolls({n: r for n, r in rolls.items() if not isinstance(r, str)})
    write_piano_rolls(cache_path, rolls, jsb_split(rolls, seed), source)
    if verbose:
        frames = sum(len(r) for r in rolls.values())
        skipped = [f"{len(failed)} unreadable"] * bool(failed) + [f"{dropped} duplicate or empty"] * bool(dropped)
        note = (
            f"music21 {music21.__version__}: {len(rolls)} Riemenschneider chorales"
            f"{' (' + ', '.join(skipped) + ' left out)' if skipped else ''}, {frames} quarter-note frames, "
            f"JSB proportions, seed {seed}; {time.time() - start_time:.1f} s"
        )
        print(summary_line(cache_path, unit="frames", note=note), flush=True)
    return cache_path
