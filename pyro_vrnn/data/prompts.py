"""Real recorded speech out of the box: Debian's telephony voice prompts, prepared as the paper's speech.

Chung et al. (2015, Sec. 5.1) model raw 16 kHz speech as 200-sample frames; their corpora
(Blizzard, TIMIT, Accent, Onomatopoeia) are licensed or not public. Debian ships professionally
recorded speech under Creative Commons licences: Asterisk's core voice prompts ("Please enter
your password", the digits, the letters, ...), one voice per language, installed by

    apt-get install asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722
        asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722

into /usr/share/asterisk/sounds/<voice>/ (en_US_f_Allison, es_MX_f_Allison, fr_CA_f_June,
it_IT_m_Carlo, ru_RU_f_IvrvoiceRU), with subfolders such as digits/ and letters/: five voices,
four speakers, as Allison Smith records both the US English and the Mexican Spanish prompts.
Their copyright file: Allison Smith (en, es) and June Wallack (fr), CC BY-SA 3.0; Carlo Flora
(it) and the Russian prompts provided by Maxim Topal (ru), CC BY 3.0. Measured: 2,780 prompts,
126.4 minutes of speech (the ten silence/ files of each voice and ru's empty is.g722 left out).

Why G.722: the -wav, -gsm, -ulaw packages hold the same prompts at 8 kHz (telephone band, up to
4 kHz); G.722 is the wide-band coding, 16 kHz samples (up to 7 kHz), the paper's sample rate,
so no resampling and no missing upper half of the spectrum. A .g722 file is raw 64 kbit/s G.722
without a header (audio_formats.G722File, through the optional `g722` package, pip install g722).

Preparation is the paper's (audio.prepare_audio_corpus): 200-sample frames, ONE global mean and
std from the training split, training on 0.5 s pieces (40 frames), validation and test on whole
prompts. Split: 90/5/5 by file with a fixed seed, drawn within each voice, so that every voice
(and language) is in every split. `held_out="ru"` (dataset "prompts-heldout") holds one voice
out as the test split instead, validation a seeded 5% of each other voice's files (ru: its
speaker records no other voice, so the test speaker is unheard in training).
"""

import os
import zlib

import numpy as np

from pyro_vrnn.data.audio import find_audio_files, prepare_audio_corpus
from pyro_vrnn.data.audio_formats import G722_EXTENSIONS, G722_HINT
from pyro_vrnn.data.iam import random_split
from pyro_vrnn.data.schema import SPLITS, DataError
from pyro_vrnn.data.speech import cache_path_for, relative_name

LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGES = tuple(f"asterisk-core-sounds-{language}-g722" for language in LANGUAGES)
INSTALL_HINT = "apt-get install " + " ".join(PACKAGES)
# Where Debian and a from-source Asterisk put the sounds; $XDG_DATA_DIRS may add other share dirs.
SOUNDS_DIRS = ("/usr/share/asterisk/sounds", "/usr/local/share/asterisk/sounds", "/var/lib/asterisk/sounds")
NOT_SPEECH = ("silence",)  # silence/1.g722 ... 10.g722: 1-10 s of codec noise per voice, not speech
HELD_OUT_VALID = 0.05  # prompts-heldout: the share of each training voice's files kept for validation


def candidate_roots():
    """The sounds folders to look in, in order: Debian's first, then every $XDG_DATA_DIRS entry's."""
    share_dirs = os.environ.get("XDG_DATA_DIRS", "").split(os.pathsep)
    extra = [os.path.join(d, "asterisk", "sounds") for d in share_dirs if d]
    return list(dict.fromkeys([*SOUNDS_DIRS, *extra]))


def has_prompts(folder):
    """Whether `folder` holds .g722 files directly (a voice folder)."""
    try:
        return any(e.is_file() and e.name.lower().endswith(G722_EXTENSIONS) for e in os.scandir(folder))
    except OSError:
        return False


def find_voices(root):
    """{voice name: folder} under `root`: each subfolder holding .g722 files, or root itself if it does.

    Debian also installs en -> en_US -> en_US_f_Allison as symbolic links (update-alternatives):
    folders are told apart by their real path and the real folder's name is kept, so no voice is
    read twice.
    """
    if has_prompts(root):
        return {os.path.basename(os.path.normpath(root)): root}
    by_target = {}
    for entry in sorted(os.listdir(root)):
        folder = os.path.join(root, entry)
        if os.path.isdir(folder) and has_prompts(folder):
            by_target.setdefault(os.path.realpath(folder), []).append(entry)
    voices = {}
    for target, names in by_target.items():
        real = [n for n in names if not os.path.islink(os.path.join(root, n))]
        voices[min(real or names, key=lambda n: (-len(n), n))] = os.path.join(root, (real or names)[0])
    return dict(sorted(voices.items()))


def find_prompts(root):
    """({voice: [paths of speech prompts]}, number of files left out): silence/ and empty files out."""
    prompts, left_out = {}, 0
    for voice, folder in find_voices(root).items():
        paths = []
        for path in find_audio_files(folder, G722_EXTENSIONS):
            parts = os.path.relpath(path, folder).split(os.sep)
            if parts[0].lower() in NOT_SPEECH or os.path.getsize(path) == 0:  # ru's is.g722 is empty
                left_out += 1
            else:
                paths.append(path)
        if paths:
            prompts[voice] = paths
    return prompts, left_out


def voice_seed(seed, voice):
    """A seed per voice that depends on its name only, so adding a voice leaves the others' splits."""
    return [seed, zlib.crc32(voice.encode("utf-8"))]


def hold_out_share(names, fraction, seed):
    """{name: "valid" | "train"}: a seeded `fraction` of `names` (at least one of two or more) validates."""
    names = sorted(names)
    count = max(1, round(fraction * len(names))) if len(names) >= 2 else 0
    chosen = {names[i] for i in np.random.default_rng(seed).permutation(len(names))[:count]}
    return {name: "valid" if name in chosen else "train" for name in names}


def split_prompts(prompts, root, seed=0, held_out=None):
    """{split: [(path, "en_US_f_Allison/digits/1")]}, and a phrase saying how they were split.

    By default each voice's files are split 90/5/5 on their own (seeded), so that every voice is in
    every split. With `held_out` (a voice name or its language, e.g. "ru"), that voice is the test
    split and 5% of each other voice's files (seeded) validate.
    """
    test_voices = set()
    if held_out is not None:
        test_voices = {v for v in prompts if v == held_out or v.split("_")[0] == held_out}
        if not test_voices:
            raise DataError(
                f"prompts: no voice {held_out!r} to hold out under {root}; the voices are {', '.join(prompts)}"
            )
    files = {split: [] for split in SPLITS}
    for voice, paths in prompts.items():
        names = {relative_name(p, root): p for p in paths}
        if voice in test_voices:
            split_of = dict.fromkeys(names, "test")
        elif held_out is not None:
            split_of = hold_out_share(names, HELD_OUT_VALID, voice_seed(seed, voice))
        else:
            split_of = random_split(names, voice_seed(seed, voice))
        for name in sorted(names):
            files[split_of[name]].append((names[name], name))
    how = (
        f"{', '.join(sorted(test_voices))} held out as test, valid {HELD_OUT_VALID:.0%} of each other "
        f"voice's files (seed {seed})"
        if held_out is not None
        else f"90/5/5 by file within each voice (seed {seed})"
    )
    return files, how


def have_g722():
    try:
        import G722  # noqa: F401
    except ImportError:
        return False
    return True


def install_hint():
    """The command that brings the prompts, and the decoder too when it is missing."""
    return INSTALL_HINT if have_g722() else f"{INSTALL_HINT} (then pip install g722 to decode them)"


def find_root(data_dir):
    """The sounds folder: --data-dir if given, else the first standard place that holds voice prompts."""
    if data_dir is not None:
        root = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
        if not os.path.isdir(root):
            raise DataError(
                f"prompts: no directory {root}; install the voice prompts with {install_hint()} "
                f"or point --data-dir at their folder (e.g. /usr/share/asterisk/sounds)"
            )
        return root
    for root in candidate_roots():
        if os.path.isdir(root) and find_voices(root):
            return root
    raise DataError(
        f"prompts: Asterisk's G.722 voice prompts are not installed (looked in "
        f"{', '.join(candidate_roots())}): {install_hint()} (Debian/Ubuntu), or point --data-dir "
        f"at a folder of voice folders of .g722 files"
    )


def prepare_prompts(data_dir, cache_dir, verbose=True, seed=0, held_out=None, name="prompts", **audio_options):
    """Asterisk's voice prompts as a speech dataset: train in 0.5 s pieces, valid/test whole prompts."""
    root = find_root(data_dir)
    prompts, left_out = find_prompts(root)
    if not prompts:
        raise DataError(
            f"prompts: no .g722 voice prompts under {root} (voice folders such as "
            f"en_US_f_Allison/activated.g722): {install_hint()}, or point --data-dir at them"
        )
    if not have_g722():  # checked here so that the message names the dataset, not the first file
        raise DataError(f"prompts: decoding the G.722 voice prompts needs the g722 package: {G722_HINT}")
    files, how = split_prompts(prompts, root, seed, held_out)
    if not files["train"]:
        raise DataError(f"prompts: no training file under {root} ({sum(map(len, prompts.values()))} prompts)")
    options = dict(seed=seed, held_out=held_out, **audio_options)
    total = sum(len(paths) for paths in prompts.values())
    note = (
        f"{total} prompts by {len(prompts)} voices ({', '.join(prompts)}), {how}; train in 0.5 s pieces, "
        f"valid/test whole prompts" + (f"; {left_out} silence or empty files left out" if left_out else "")
    )
    return prepare_audio_corpus(
        files,
        root,
        cache_path_for(cache_dir, name, root, options),
        name,
        cut="train-pieces",
        settings=options,
        verbose=verbose,
        note=note,
        **audio_options,
    )


def prepare_prompts_heldout(data_dir, cache_dir, verbose=True, **options):
    """prompts with the Russian voice as the test split: how the model does on an unheard speaker."""
    return prepare_prompts(data_dir, cache_dir, verbose, **{"held_out": "ru", "name": "prompts-heldout", **options})
