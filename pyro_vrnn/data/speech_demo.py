"""The embedded speech dataset: a small multi-speaker corpus synthesized with espeak-ng.

The paper's speech sets (Blizzard, TIMIT, Onomatopoeia, Accent) are licensed or not public, so
the project makes its own, TIMIT-shaped: `num_speakers` synthetic speakers (an espeak-ng accent
of English x a voice variant m1-m7 / f1-f5 x their own pitch, speed and word gap) read
`sentences_per_speaker` sentences each (10, as in TIMIT), drawn from a small English grammar;
each utterance varies its speaker's pitch and speed a little. espeak-ng speaks at 22.05 kHz:
the waveforms are resampled to 16 kHz (resampling.Resampler), scaled to leave ~1 dB of headroom (a
few samples clip without it), written as 16-bit WAV files under the cache, and then prepared by
exactly the same code as TIMIT (speech.py, audio.py): speakers split 90/5/5 with a fixed seed
(no speaker in two splits), training on 0.5 s pieces (40 frames of 200 samples), validation and
test on whole utterances, one global mean and std from the training pieces.

Everything is determined by (num_sentences, seed) and the espeak-ng version. Set-up:
`apt-get install espeak-ng` (Debian/Ubuntu) or `brew install espeak-ng` (macOS).
"""

import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pyro_vrnn.data.audio import SAMPLE_RATE, prepare_audio_corpus, read_audio, write_wav
from pyro_vrnn.data.iam import random_split
from pyro_vrnn.data.schema import SPLITS, DataError
from pyro_vrnn.data.speech import cache_path_for
from pyro_vrnn.data.text import WORDS

GENERATOR_VERSION = 1  # bump when the synthesis below changes: the WAV files are regenerated

ESPEAK_HINT = (
    "the speech-demo dataset is synthesized with espeak-ng, which is not installed: "
    "apt-get install espeak-ng (Debian/Ubuntu) or brew install espeak-ng (macOS)"
)
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
HEADROOM = 10 ** (-1.0 / 20)  # -1 dB
SENTENCES_PER_SPEAKER = 10

# ---------------------------------------------------------------------------------------------
# Text: sentences of 5-12 words from the vocabulary of the Hershey handwriting set
# ---------------------------------------------------------------------------------------------

SENTENCES = [  # (pattern, weight); a word in capitals is literal
    ("det adj noun verb prep det noun", 3),
    ("det noun verb adv prep det adj noun", 3),
    ("prep det noun , det adj noun verb adv", 2),
    ("det noun AND det adj noun verb prep det noun", 2),
    ("det adj noun verb adv , AND det noun verb", 2),
    ("adv det noun verb prep det adj noun", 1),
    ("det noun prep det noun verb adv", 2),
]


def random_sentence(rng):
    """An English sentence such as "The old farm sleeps by the river." (string)."""
    weights = np.array([w for _, w in SENTENCES], dtype=np.float64)
    pattern = SENTENCES[rng.choice(len(SENTENCES), p=weights / weights.sum())][0]
    words = []
    for part in pattern.split():
        if part == ",":
            words[-1] += ","
        elif part.isupper():
            words.append(part.lower())
        else:
            words.append(WORDS[part][rng.integers(len(WORDS[part]))])
    end = rng.choice([".", "!", "?"], p=[0.8, 0.1, 0.1])
    return " ".join(words)[0].upper() + " ".join(words)[1:] + end


def random_speaker(rng):
    """An espeak-ng speaker: voice "accent+variant", base pitch (0-99), speed (words/min), word gap (10 ms)."""
    return {
        "voice": f"{ACCENTS[rng.integers(len(ACCENTS))]}+{VARIANTS[rng.integers(len(VARIANTS))]}",
        "pitch": int(rng.integers(25, 76)),
        "speed": int(rng.integers(135, 186)),
        "gap": int(rng.integers(0, 3)),
    }


# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------


def espeak_binary():
    return shutil.which("espeak-ng")


def synthesize(text, voice, pitch, speed, gap, out_path, espeak):
    """One utterance: espeak-ng -> 22.05 kHz WAV -> 16 kHz with -1 dB headroom -> 16-bit WAV at out_path."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.wav")
        command = [espeak, "-v", voice, "-p", str(pitch), "-s", str(speed), "-g", str(gap), "-w", raw, text]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.exists(raw):
            raise DataError(
                f"espeak-ng failed on voice {voice} ({' '.join(command[:-1])} ...): "
                f"{(result.stderr or result.stdout).strip()[:200]}"
            )
        samples, _ = read_audio(raw, SAMPLE_RATE)
    write_wav(out_path, samples * HEADROOM, SAMPLE_RATE)


def plan(num_sentences, seed):
    """The corpus to synthesize: [(speaker id, speaker, utterance id, text, pitch, speed)], deterministic."""
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    num_speakers = max(3, -(-num_sentences // SENTENCES_PER_SPEAKER))
    speakers = [random_speaker(rng) for _ in range(num_speakers)]
    items = []
    for i in range(num_sentences):
        s = i % num_speakers
        speaker = speakers[s]
        pitch = int(np.clip(speaker["pitch"] + rng.integers(-6, 7), 0, 99))
        speed = int(np.clip(speaker["speed"] + rng.integers(-12, 13), 80, 400))
        items.append((f"spk{s:03d}", speaker, f"spk{s:03d}/utt{i:04d}", random_sentence(rng), pitch, speed))
    return items


def stamp_of(num_sentences, seed):
    return f"espeak-ng speech-demo v{GENERATOR_VERSION} sentences {num_sentences} seed {seed}\n"


def complete(out_dir, num_sentences, seed):
    """Whether out_dir holds the whole corpus of (num_sentences, seed): its COMPLETE file says so."""
    try:
        with open(os.path.join(out_dir, "COMPLETE")) as f:
            return f.read() == stamp_of(num_sentences, seed)
    except OSError:
        return False


def generate(out_dir, num_sentences, seed, workers=None):
    """Write the corpus's WAV files and prompts.txt under out_dir, a folder of the cache (skipped when already
    complete)."""
    done, stamp = os.path.join(out_dir, "COMPLETE"), stamp_of(num_sentences, seed)
    if complete(out_dir, num_sentences, seed):
        return False
    espeak = espeak_binary()
    if espeak is None:
        raise DataError(ESPEAK_HINT)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    items = plan(num_sentences, seed)
    jobs = [
        (text, speaker["voice"], pitch, speed, speaker["gap"], os.path.join(out_dir, utt + ".wav"), espeak)
        for _, speaker, utt, text, pitch, speed in items
    ]
    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda job: synthesize(*job), jobs))  # espeak-ng runs in its own process
    with open(os.path.join(out_dir, "prompts.txt"), "w", encoding="utf-8") as f:
        for speaker_id, speaker, utt, text, pitch, speed in items:
            f.write(f"{utt}\t{speaker['voice']}\tpitch {pitch}\tspeed {speed}\tgap {speaker['gap']}\t{text}\n")
    with open(done, "w") as f:
        f.write(stamp)
    return True


def prepare_speech_demo(data_dir, cache_dir, verbose=True, num_sentences=400, seed=0):
    """Synthesize (once) and prepare the embedded speech corpus; returns the .h5 path.

    The WAV files are synthesized under the cache directory. A `data_dir` is read, never written: it must hold
    such a synthesized corpus (its COMPLETE marker), which is then prepared.
    """
    if num_sentences < 3:
        raise DataError(f"speech-demo needs num_sentences >= 3 (a speaker for each split), got {num_sentences}")
    start_time = time.time()
    if data_dir is not None:
        wav_dir, synthesized = os.path.abspath(os.path.expanduser(data_dir)), False
        if not complete(wav_dir, num_sentences, seed):
            raise DataError(
                f"--data-dir {data_dir} holds no synthesized speech-demo corpus of {num_sentences} sentences, seed "
                f"{seed} (its COMPLETE file); speech-demo needs no --data-dir: drop it, and the corpus is "
                "synthesized into the cache (a data directory is only read)"
            )
    else:
        wav_dir = os.path.join(cache_dir, f"speech-demo-{num_sentences}-seed{seed}")
        synthesized = generate(wav_dir, num_sentences, seed)
    items = plan(num_sentences, seed)
    speakers = sorted({speaker_id for speaker_id, *_ in items})
    split_of = random_split(speakers, seed)  # 90/5/5 by speaker, as TIMIT's speakers are disjoint
    files = {
        split: [
            (os.path.join(wav_dir, utt + ".wav"), utt)
            for speaker_id, _, utt, *_ in items
            if split_of[speaker_id] == split
        ]
        for split in SPLITS
    }
    note = (
        f"{len(speakers)} espeak-ng speakers split by speaker (seed {seed}); train in 0.5 s pieces, "
        f"valid/test whole utterances; WAV files in {wav_dir}"
        + (f", synthesized in {time.time() - start_time:.1f} s" if synthesized else "")
    )
    options = dict(num_sentences=num_sentences, seed=seed)
    return prepare_audio_corpus(
        files,
        wav_dir,
        cache_path_for(cache_dir, "speech-demo", wav_dir, options),
        "speech-demo",
        cut="train-pieces",
        settings=options,
        verbose=verbose,
        note=note,
    )
