"""Raw speech as the VRNN authors modelled it: 16 kHz waveforms cut into 200-sample frames.

Chung et al. (2015, Sec. 5.1) model "raw audio signals, represented as a sequence of
200-dimensional frames", each frame "the real-valued amplitudes of 200 consecutive raw acoustic
samples", at 16 kHz, standardized with one global mean and standard deviation from the training
set. This module is the one audio path every speech dataset goes through (speech.py):

  read        WAV, NIST SPHERE (TIMIT's .WAV files), raw G.722 (Asterisk's voice prompts,
              prompts.py), and FLAC / MP3 / OGG / other WAV codings through the optional
              `soundfile` package; recognised from the file's first bytes, not its extension
              (audio_formats.py). Samples are scaled to [-1, 1); channels are averaged to mono.
  resample    to 16 kHz with a band-limited polyphase filter (Kaiser-windowed sinc, numpy only):
              exact rational ratios (22.05 kHz -> 16 kHz is 320/441), zero phase, output length
              ceil(n * 16000 / rate); it streams, so an hour-long audiobook chapter never sits in
              memory whole (resampling.py).
  frame       non-overlapping 200-sample frames; the trailing partial frame (< 12.5 ms) is dropped.
  cut         either whole files (one sequence each: TIMIT's evaluation utterances, Onomatopoeia's
              sounds) or non-overlapping 0.5 s pieces of 40 frames (Blizzard, Accent, TIMIT's
              training set); a file's trailing partial piece is dropped.
  store       frames are streamed file by file into the HDF5 schema (schema.StreamWriter), the
              training split's moments are accumulated on the way, and the stored frames are then
              standardized in place with ONE scalar mean and std (repeated over the 200 columns),
              taken from the stored training frames only.

Nothing here holds more than a block of one file in memory, whatever the corpus size.
"""

import hashlib
import os
import time
import wave

import numpy as np

from pyro_vrnn.data.audio_formats import AUDIO_EXTENSIONS, open_audio
from pyro_vrnn.data.resampling import Resampler, resample
from pyro_vrnn.data.schema import SPLITS, DataError, StreamWriter, cached_source, summary_line

SAMPLE_RATE = 16000  # docs/paper.md: raw 16 kHz waveforms
FRAME_SIZE = 200  # samples per frame: x_t is 200-dimensional
PIECE_FRAMES = 40  # 0.5 s pieces (Blizzard, Accent, TIMIT training)
CUTS = ("pieces", "whole", "train-pieces")  # every split in pieces / whole files / train in pieces only


# ---------------------------------------------------------------------------------------------
# Reading at 16 kHz (decoding: audio_formats.py, resampling: resampling.py), and writing WAV
# ---------------------------------------------------------------------------------------------


def read_audio(path, sample_rate=SAMPLE_RATE):
    """A whole file as float32 mono in [-1, 1), resampled to `sample_rate` (None: as stored).

    Returns (samples, rate). For small files and tests; the preparation streams instead.
    """
    audio = open_audio(path)
    blocks = list(audio.blocks(1 << 16))
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if sample_rate is None or sample_rate == audio.sample_rate:
        return samples, audio.sample_rate
    return resample(samples, audio.sample_rate, sample_rate), sample_rate


def stream_audio(path, sample_rate=SAMPLE_RATE, block_seconds=8.0):
    """Yield one file's samples at `sample_rate`, float32 mono, in blocks of a few seconds."""
    audio = open_audio(path)
    block = max(1, int(block_seconds * audio.sample_rate))
    if audio.sample_rate == sample_rate:
        yield from audio.blocks(block)
        return
    resampler = Resampler(audio.sample_rate, sample_rate)
    for samples in audio.blocks(block):
        out = resampler.process(samples)
        if len(out):
            yield out
    tail = resampler.flush()
    if len(tail):
        yield tail


def write_wav(path, samples, sample_rate=SAMPLE_RATE):
    """float samples in [-1, 1] -> 16-bit PCM mono WAV (clipped; rounded to the nearest step)."""
    pcm = np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------


def frame(samples, frame_size=FRAME_SIZE):
    """[n] samples -> [n // frame_size, frame_size] non-overlapping frames (the partial last one dropped)."""
    samples = np.asarray(samples).reshape(-1)
    n = len(samples) // frame_size
    return samples[: n * frame_size].reshape(n, frame_size)


def cut_pieces(frames, piece_frames=PIECE_FRAMES):
    """[T, D] frames -> list of [piece_frames, D] non-overlapping pieces (the partial last one dropped)."""
    return [frames[i : i + piece_frames] for i in range(0, len(frames) - piece_frames + 1, piece_frames)]


class _Framer:
    """Cuts a stream of sample blocks into frames (the leftover samples wait for the next block)."""

    def __init__(self, frame_size):
        self.frame_size = frame_size
        self.rest = np.zeros(0, dtype=np.float32)

    def frames(self, block):
        samples = np.concatenate([self.rest, block]) if len(self.rest) else block
        frames = frame(samples, self.frame_size)
        self.rest = samples[len(frames) * self.frame_size :]
        return frames


def write_file(writer, split, path, name, piece_frames, frame_size=FRAME_SIZE, sample_rate=SAMPLE_RATE):
    """Stream one audio file into `writer`'s split: as one sequence of frames (piece_frames None)
    or as pieces of piece_frames frames named "name@first_frame". Returns the sequences written."""
    framer = _Framer(frame_size)
    written, total_frames, pending = 0, 0, []
    for block in stream_audio(path, sample_rate):
        frames = framer.frames(block)
        if piece_frames is None:
            writer.append(split, frames)
            total_frames += len(frames)
            continue
        pending.append(frames)
        buffered = np.concatenate(pending)
        for piece in cut_pieces(buffered, piece_frames):
            writer.add(split, piece, f"{name}@{total_frames}")
            total_frames += piece_frames
            written += 1
        pending = [buffered[len(buffered) // piece_frames * piece_frames :]]
    if piece_frames is None and total_frames:
        writer.end_sequence(split, name)
        written = 1
    return written


# ---------------------------------------------------------------------------------------------
# A corpus
# ---------------------------------------------------------------------------------------------


def find_audio_files(root, extensions=AUDIO_EXTENSIONS):
    """Every audio file under `root` (by extension, any case), sorted by relative path."""
    found = []
    for directory, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for file in sorted(files):
            if file.lower().endswith(extensions) and not file.startswith("."):
                found.append(os.path.join(directory, file))
    return found


def fingerprint(root, paths, settings):
    """Changes whenever a file is added, removed or touched, or a preparation setting changes."""
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def piece_frames_for(cut, split, piece_frames=PIECE_FRAMES):
    """How `cut` treats `split`: pieces of piece_frames frames, or None for whole files."""
    if cut not in CUTS:
        raise ValueError(f"cut must be one of {CUTS}, got {cut!r}")
    if cut == "whole" or (cut == "train-pieces" and split != "train"):
        return None
    return piece_frames


def prepare_audio_corpus(
    files,
    root,
    cache_path,
    name,
    cut="pieces",
    piece_frames=PIECE_FRAMES,
    frame_size=FRAME_SIZE,
    sample_rate=SAMPLE_RATE,
    settings=None,
    verbose=True,
    note="",
    buffer_bytes=4 << 20,
):
    """Stream `files` ({split: [(path, name)]}) into the HDF5 cache at `cache_path`, as the authors
    prepared speech; returns the path. Reused as is while the files and settings are unchanged.

    kind "real", dim `frame_size`; ONE scalar mean and std from the stored training frames.
    """
    start_time = time.time()
    settings = dict(
        settings or {},
        cut=cut,
        piece_frames=piece_frames,
        frame_size=frame_size,
        sample_rate=sample_rate,
        version=PREPARATION_VERSION,
    )
    source = fingerprint(root, [p for split in SPLITS for p, _ in files.get(split, [])], settings)
    if cached_source(cache_path) == source:
        return cache_path
    skipped = 0
    with StreamWriter(cache_path, "real", name, frame_size, source, buffer_bytes=buffer_bytes) as writer:
        for split in SPLITS:
            for path, sequence_name in files.get(split, []):
                if not write_file(
                    writer,
                    split,
                    path,
                    sequence_name,
                    piece_frames_for(cut, split, piece_frames),
                    frame_size,
                    sample_rate,
                ):
                    skipped += 1  # shorter than one frame (or one piece)
        if not writer.lengths["train"]:
            raise DataError(
                f"{name}: no training sequence: every training file under {root} is shorter "
                f"than {'one frame' if piece_frames_for(cut, 'train') is None else 'one piece'}"
            )
        mean, std = writer.moments["train"].pooled_stats()
        std = std if std > 0 else 1.0
        writer.finish(np.full(frame_size, mean), np.full(frame_size, std))
        stats = (mean, std)
    if verbose:
        parts = [note] if note else []
        if skipped:
            parts.append(f"{skipped} file{'s' * (skipped > 1)} too short to yield a sequence")
        parts.append(f"global mean {stats[0]:.3g}, std {stats[1]:.3g}; {time.time() - start_time:.1f} s")
        print(summary_line(cache_path, unit="frames", note="; ".join(parts)), flush=True)
    return cache_path


PREPARATION_VERSION = 3  # bump when the preparation above changes: every audio cache is rebuilt (3: fingerprints)
