"""Raw speech as the VRNN authors modelled it: 16 kHz waveforms cut into 200-sample frames.

Chung et al. (2015, Sec. 5.1) model "raw audio signals, represented as a sequence of
200-dimensional frames", each frame "the real-valued amplitudes of 200 consecutive raw acoustic
samples", at 16 kHz, standardized with one global mean and standard deviation from the training
set. This module is the one audio path every speech dataset goes through (speech.py):

  read        WAV (RIFF, 8/16/24/32-bit PCM; the standard library's `wave`), NIST SPHERE (TIMIT's
              .WAV files: a 1024-byte text header, then PCM or mu-law samples; read here), and
              FLAC / MP3 / OGG / other WAV codings through the optional `soundfile` package.
              The format is recognised from the file's first bytes, not its extension, since
              TIMIT's SPHERE files are named .WAV; raw G.722 (.g722, 16 kHz: Asterisk's voice
              prompts, prompts.py) has no header and goes by its extension, decoded by the
              optional `g722` package. Samples are scaled to [-1, 1); channels are averaged to mono.
  resample    to 16 kHz with a band-limited polyphase filter (Kaiser-windowed sinc, numpy only):
              exact rational ratios (22.05 kHz -> 16 kHz is 320/441), zero phase, output length
              ceil(n * 16000 / rate); it streams, so an hour-long audiobook chapter never sits in
              memory whole.
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
import math
import os
import struct
import time
import wave

import numpy as np

from pyro_vrnn.data.schema import DataError, SPLITS, StreamWriter, cached_source, summary_line

SAMPLE_RATE = 16000  # PAPER.md: raw 16 kHz waveforms
FRAME_SIZE = 200  # samples per frame: x_t is 200-dimensional
PIECE_FRAMES = 40  # 0.5 s pieces (Blizzard, Accent, TIMIT training)
G722_EXTENSIONS = (".g722",)  # raw G.722 has no magic bytes: only its extension says what it is
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".sph", ".ogg", ".oga", ".aif", ".aiff", ".au") + G722_EXTENSIONS
CUTS = ("pieces", "whole", "train-pieces")  # every split in pieces / whole files / train in pieces only
SOUNDFILE_HINT = "pip install soundfile"
G722_HINT = 'pip install g722 (or pip install -e ".[speech]")'


# ---------------------------------------------------------------------------------------------
# Reading: WAV, NIST SPHERE, and the rest through soundfile
# ---------------------------------------------------------------------------------------------

def pcm_to_float(raw, sample_width, big_endian=False, unsigned_8bit=True):
    """Interleaved integer PCM bytes -> float32 in [-1, 1) (8-bit WAV is unsigned, 128 = silence)."""
    if sample_width == 1:
        values = np.frombuffer(raw, dtype=np.uint8 if unsigned_8bit else np.int8).astype(np.float32)
        return (values - 128.0) / 128.0 if unsigned_8bit else values / 128.0
    if sample_width == 3:  # 24-bit: assemble the three bytes, then sign-extend
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        if big_endian:
            b = b[:, ::-1]
        values = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        return values.astype(np.float32) / float(1 << 23)
    if sample_width in (2, 4):
        dtype = np.dtype(f"{'>' if big_endian else '<'}i{sample_width}")
        return np.frombuffer(raw, dtype=dtype).astype(np.float32) / float(1 << (8 * sample_width - 1))
    raise ValueError(f"unsupported sample width {sample_width} bytes")


def ulaw_to_float(raw):
    """G.711 mu-law bytes -> float32 in [-1, 1)."""
    u = ~np.frombuffer(raw, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return (np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84) / 32768.0).astype(np.float32)


def parse_sphere_header(header, path="<sphere>"):
    """The fields of a NIST SPHERE header (bytes from the file's start) -> dict.

    The header is text: "NIST_1A", its size in bytes (normally 1024), then one "name -type value"
    per line (-i integer, -r real, -sN string of N characters) up to "end_head".
    """
    if not header.startswith(b"NIST_1A"):
        raise DataError(f"{path}: not a NIST SPHERE file (no NIST_1A magic)")
    lines = header.decode("latin-1").split("\n")
    try:
        fields = {"header_size": int(lines[1].strip())}
    except (IndexError, ValueError):
        raise DataError(f"{path}: malformed SPHERE header (no header size on its second line)") from None
    for line in lines[2:]:
        line = line.strip()
        if line == "end_head":
            return fields
        if not line or line.startswith(";"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].startswith("-"):
            raise DataError(f"{path}: malformed SPHERE header line {line!r}")
        key, kind, value = parts
        try:
            fields[key] = int(value) if kind == "-i" else float(value) if kind == "-r" else value
        except ValueError:
            raise DataError(f"{path}: malformed SPHERE header line {line!r}") from None
    raise DataError(f"{path}: malformed SPHERE header (no end_head within {len(header)} bytes)")


class SphereFile:
    """A NIST SPHERE file (TIMIT's .WAV): PCM of 1-4 bytes either endianness, or mu-law."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(1024)
            size = parse_sphere_header(head, path)["header_size"] if head.startswith(b"NIST_1A") else 0
            if size > len(head):
                head += f.read(size - len(head))
        fields = parse_sphere_header(head[:size], path)
        coding = str(fields.get("sample_coding", "pcm")).lower()
        if "shorten" in coding or "wavpack" in coding or "shortpack" in str(fields.get("sample_byte_format", "")):
            raise DataError(f"{path}: compressed SPHERE ({coding}); decompress it first, e.g. with LDC's "
                            f"sph2pipe (sph2pipe -f wav in.sph out.wav) or sox")
        self.channels = int(fields.get("channel_count", 1))
        self.sample_rate = int(fields.get("sample_rate", 0))
        self.width = int(fields.get("sample_n_bytes", 2))
        if self.sample_rate <= 0:
            raise DataError(f"{path}: SPHERE header without a sample_rate")
        if coding in ("ulaw", "mu-law", "mulaw"):
            if self.width != 1:
                raise DataError(f"{path}: mu-law SPHERE with sample_n_bytes {self.width} (expected 1)")
            self.decode = ulaw_to_float
        elif coding == "pcm":
            if self.width not in (1, 2, 3, 4):
                raise DataError(f"{path}: SPHERE sample_n_bytes {self.width} not supported (1-4)")
            order = str(fields.get("sample_byte_format", "01" if self.width > 1 else "1"))
            ascending = "".join(str(i) for i in range(self.width))
            if self.width > 1 and order not in (ascending, ascending[::-1]):
                raise DataError(f"{path}: SPHERE sample_byte_format {order!r} not supported")
            big = self.width > 1 and order == ascending[::-1]
            width = self.width
            self.decode = lambda raw: pcm_to_float(raw, width, big_endian=big, unsigned_8bit=False)
        else:
            raise DataError(f"{path}: SPHERE sample_coding {coding!r} not supported (pcm or ulaw)")
        self.data_start = fields["header_size"]
        available = (os.path.getsize(path) - self.data_start) // (self.width * self.channels)
        self.num_samples = int(fields.get("sample_count", available))
        if self.num_samples > available:
            raise DataError(f"{path}: truncated SPHERE file ({available} of {self.num_samples} samples present)")

    def blocks(self, block_samples):
        with open(self.path, "rb") as f:
            f.seek(self.data_start)
            left = self.num_samples
            while left > 0:
                n = min(block_samples, left)
                raw = f.read(n * self.width * self.channels)
                left -= n
                yield self.decode(raw).reshape(-1, self.channels).mean(axis=1, dtype=np.float32)


DAMAGED = "the file is damaged (or not audio); replace or remove it"

# RIFF WAVE codings (the fmt chunk's format tag) that libsndfile decodes; PCM (1) is read here.
WAV_CODINGS = {1: "PCM", 2: "MS ADPCM", 3: "IEEE float", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM",
               0x31: "GSM 6.10", 0x55: "MP3", 0xFFFE: "extensible"}


def wav_coding(path):
    """(format tag, extensible) of a RIFF WAVE file, from its fmt chunk (an extensible file's sub-format).

    The chunks are walked here rather than left to `wave` or libsndfile, so that a cut or garbled
    header is reported as a damaged file, not as a coding that needs another package.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(12)  # "RIFF", the RIFF size, "WAVE"
        position = 12
        while True:
            header = f.read(8)
            if len(header) < 8:
                raise DataError(f"{path}: its RIFF header ends at byte {position} before a 'fmt ' chunk; {DAMAGED}")
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"fmt ":
                body = f.read(min(length, 40))
                if length < 16 or len(body) < 16:
                    raise DataError(f"{path}: its 'fmt ' chunk is cut short ({len(body)} of at least 16 bytes); "
                                    f"{DAMAGED}")
                tag, channels, rate = struct.unpack("<HHI", body[:8])
                extensible = tag == 0xFFFE and len(body) >= 26
                if extensible:
                    tag = struct.unpack("<H", body[24:26])[0]  # the first two bytes of the sub-format GUID
                if channels == 0 or rate == 0:
                    raise DataError(f"{path}: its 'fmt ' chunk says {channels} channels at {rate} Hz; {DAMAGED}")
                return tag, extensible
            if not all(32 <= c < 127 for c in chunk):  # chunk ids are four printable ASCII characters
                raise DataError(f"{path}: garbled RIFF header (chunk id {chunk!r} at byte {position}); {DAMAGED}")
            position += 8 + length + (length & 1)
            if position > size:
                raise DataError(f"{path}: its {chunk.decode()!r} chunk runs past the end of the file "
                                f"({position} > {size} bytes) before a 'fmt ' chunk; {DAMAGED}")
            f.seek(position)


class WavFile:
    """A RIFF WAV file of integer PCM, through the standard library's `wave`."""

    def __init__(self, path):
        self.path = path
        try:
            with wave.open(path, "rb") as w:
                self.channels, self.width = w.getnchannels(), w.getsampwidth()
                self.sample_rate, self.num_samples = w.getframerate(), w.getnframes()
        except (wave.Error, EOFError, struct.error) as error:
            raise DataError(f"{path}: a PCM WAV that cannot be read ({error or 'cut short'}); {DAMAGED}") from None
        if self.width not in (1, 2, 3, 4):
            raise DataError(f"{path}: WAV sample width {self.width} bytes not supported")

    def blocks(self, block_samples):
        with wave.open(self.path, "rb") as w:
            while True:
                raw = w.readframes(block_samples)
                if not raw:
                    return
                usable = len(raw) // (self.width * self.channels) * self.width * self.channels
                yield pcm_to_float(raw[:usable], self.width).reshape(-1, self.channels).mean(
                    axis=1, dtype=np.float32)


class SoundFile:
    """Anything libsndfile reads (FLAC, MP3 with libsndfile >= 1.1, OGG, float WAV, ...)."""

    def __init__(self, path, what="this format"):
        try:
            import soundfile
        except ImportError:
            raise DataError(f"{path}: reading {what} needs the soundfile package: {SOUNDFILE_HINT}") from None
        self.path, self._soundfile = path, soundfile
        try:
            info = soundfile.info(path)
        except Exception as error:  # soundfile raises its own LibsndfileError / RuntimeError
            raise DataError(f"{path}: libsndfile cannot read it ({str(error).strip()}); {DAMAGED}") from None
        self.channels, self.sample_rate, self.num_samples = info.channels, info.samplerate, info.frames

    def blocks(self, block_samples):
        try:
            for block in self._soundfile.blocks(self.path, blocksize=block_samples, dtype="float32",
                                                always_2d=True):
                yield block.mean(axis=1, dtype=np.float32)
        except Exception as error:
            raise DataError(f"{self.path}: cannot decode it ({str(error).strip()}); {DAMAGED}") from None


def sniff(magic):
    """The audio format that a file's first 12 bytes begin, or None."""
    if magic[:4] in (b"RIFF", b"RIFX", b"RF64") and magic[8:12] == b"WAVE":
        return "WAV"
    if magic.startswith(b"fLaC"):
        return "FLAC"
    if magic.startswith(b"ID3") or (len(magic) > 1 and magic[0] == 0xFF and magic[1] & 0xE0 == 0xE0):
        return "MP3"  # an ID3 tag, or an MPEG frame's sync bits
    if magic.startswith(b"OggS"):
        return "OGG"
    if magic[:4] == b"FORM" and magic[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if magic.startswith(b".snd"):
        return "AU"
    return None


class G722File:
    """Raw G.722 at 64 kbit/s, as Asterisk stores its wide-band prompts: 16 kHz mono, no header,
    one byte per two samples (a low and a high sub-band ADPCM code). Decoded by the `g722`
    package's C codec; one decoder carries its ADPCM state from block to block, so blocks decode
    to exactly what the whole file does."""

    RATE, BIT_RATE = 16000, 64000

    def __init__(self, path):
        try:
            import G722
        except ImportError:
            raise DataError(f"{path}: decoding G.722 needs the g722 package: {G722_HINT}") from None
        self.path, self._codec = path, G722
        self.channels, self.sample_rate = 1, self.RATE
        self.num_samples = 2 * os.path.getsize(path)

    def blocks(self, block_samples):
        decoder = self._codec.G722(self.RATE, self.BIT_RATE)
        with open(self.path, "rb") as f:
            while raw := f.read(max(1, block_samples // 2)):
                # int16 in the machine's byte order (an array.array 'h') -> [-1, 1)
                yield np.frombuffer(decoder.decode(raw), dtype=np.int16).astype(np.float32) / 32768.0


def open_audio(path):
    """The reader for one audio file, chosen by its first bytes (.g722: by extension): .blocks(n),
    .sample_rate, .channels.

    A file that is damaged, or is no audio at all, raises a DataError that says so and names it,
    whether or not the optional soundfile package is installed.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(12)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if magic.startswith(b"NIST_1A"):
        return SphereFile(path)
    if len(magic) == 0:
        raise DataError(f"{path}: empty file")
    if path.lower().endswith(G722_EXTENSIONS):  # before the guesses below: G.722 bytes may look like MP3's
        return G722File(path)
    found = sniff(magic)
    if found == "WAV" and magic[:4] == b"RIFF":
        tag, extensible = wav_coding(path)
        if tag == 1 and not extensible:
            return WavFile(path)
        if tag == 1:  # extensible PCM: `wave` reads it from Python 3.12 on, libsndfile always
            try:
                return WavFile(path)
            except DataError:
                return SoundFile(path, what="extensible PCM WAV")
        if tag not in WAV_CODINGS:  # e.g. junk over the fmt chunk: no reader knows such a coding
            raise DataError(f"{path}: its 'fmt ' chunk names WAV coding 0x{tag:04x}, which no reader knows; "
                            f"{DAMAGED}")
        return SoundFile(path, what=f"{WAV_CODINGS[tag]} WAV")
    if found is None:
        try:
            import soundfile  # noqa: F401  libsndfile knows a few more formats by their content
        except ImportError:
            raise DataError(f"{path}: its first bytes {magic!r} begin no WAV, SPHERE, FLAC, MP3, OGG, AIFF "
                            f"or AU file; {DAMAGED}") from None
        return SoundFile(path)
    if found == "WAV":  # RIFX (big-endian) or RF64 (over 4 GB): libsndfile's
        return SoundFile(path, what=f"{magic[:4].decode()} WAV")
    return SoundFile(path, what=found)


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
# Resampling: a polyphase Kaiser-windowed sinc filter
# ---------------------------------------------------------------------------------------------

class Resampler:
    """Band-limited resampling from `rate_in` to `rate_out` by the exact ratio up/down, streaming.

    In principle: insert up-1 zeros between input samples, low-pass at the lower of the two
    Nyquist frequencies, keep every down-th sample. In practice only the filter taps that meet
    non-zero samples are used (polyphase): output m sits at input time m * down / up and is a
    dot product of K input samples with one of `up` phases of the filter. The filter is a sinc
    cut off at `rolloff` x the lower Nyquist frequency, `zero_crossings` lobes each side, under a
    Kaiser window (beta 8.6: about -85 dB stop band), so that nothing above the new Nyquist
    frequency folds back and the band below 0.82 x Nyquist passes flat to within 0.01 dB.

    Output m is the band-limited signal at input time m * down / up exactly (zero phase); the
    signal is taken as zero outside the file; n input samples give ceil(n * up / down) outputs.
    """

    CHUNK = 4096  # outputs per matrix product

    def __init__(self, rate_in, rate_out, zero_crossings=32, rolloff=0.9, beta=8.6):
        rate_in, rate_out = int(rate_in), int(rate_out)
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive, got {rate_in} and {rate_out}")
        g = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        cutoff = rolloff * 0.5 / max(self.up, self.down)  # cycles per sample of the upsampled signal
        half = int(math.ceil(zero_crossings / (2 * cutoff)))
        n = np.arange(-half, half + 1)
        h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(len(n), beta) * self.up  # up: zero-stuffing gain
        self.center = half
        self.taps = -(-len(h) // self.up)  # K taps per output
        padded = np.zeros(self.taps * self.up)
        padded[:len(h)] = h
        # table[p, k] = h[p + k * up], reversed along k so that a window of ascending input
        # samples x[n - K + 1 .. n] meets taps k = K-1 .. 0.
        self.table = padded.reshape(self.taps, self.up).T[:, ::-1].copy()
        self.reset()

    def reset(self):
        self.buffer = np.zeros(self.taps - 1)  # input x[buffer_start:], zeros before the start
        self.buffer_start = -(self.taps - 1)
        self.num_in = 0
        self.next_out = 0

    def _newest_input(self, m):
        """The newest input sample that output m needs (for an array of m)."""
        return (m * self.down + self.center) // self.up

    def _compute(self, m_end):
        """Outputs next_out .. m_end-1 from the buffer (which must cover their windows)."""
        m0 = self.next_out
        if m_end <= m0:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(m_end - m0)
        windows = np.lib.stride_tricks.sliding_window_view(self.buffer, self.taps)
        for r in range(min(self.up, m_end - m0)):  # outputs m = m0 + r + j * up share one phase
            m = m0 + r
            phase = (m * self.down + self.center) % self.up
            first = self._newest_input(m) - self.taps + 1 - self.buffer_start
            count = len(range(m, m_end, self.up))
            column = out[r::self.up]  # a view: filled in chunks that keep the copied windows small
            for j in range(0, count, self.CHUNK):
                n = min(self.CHUNK, count - j)
                start = first + j * self.down
                column[j:j + n] = windows[start:start + (n - 1) * self.down + 1:self.down] @ self.table[phase]
        self.next_out = m_end
        # Keep only the input that later outputs still need.
        keep_from = self._newest_input(m_end) - self.taps + 1
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start:]
            self.buffer_start = keep_from
        return out.astype(np.float32)

    def process(self, samples):
        """Feed input samples; returns the outputs that they complete."""
        samples = np.asarray(samples, dtype=np.float64).reshape(-1)
        self.buffer = np.concatenate([self.buffer, samples])
        self.num_in += len(samples)
        # Output m is complete once its newest input sample has arrived: m*down + center < num_in*up.
        m_end = max(self.next_out, -(-(self.num_in * self.up - self.center) // self.down))
        return self._compute(m_end)

    def flush(self):
        """The remaining outputs, with zeros after the last input sample; then ready for a new signal."""
        total = -(-self.num_in * self.up // self.down)
        needed = self._newest_input(total - 1) + 1 if total > self.next_out else 0
        missing = needed - (self.buffer_start + len(self.buffer))
        if missing > 0:
            self.buffer = np.concatenate([self.buffer, np.zeros(missing)])
        out = self._compute(total)
        self.reset()
        return out


def resample(samples, rate_in, rate_out, **filter_options):
    """A whole signal from rate_in to rate_out (see Resampler); float32."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if int(rate_in) == int(rate_out):
        return samples.copy()
    resampler = Resampler(rate_in, rate_out, **filter_options)
    return np.concatenate([resampler.process(samples), resampler.flush()])


# ---------------------------------------------------------------------------------------------
# Framing
# ---------------------------------------------------------------------------------------------

def frame(samples, frame_size=FRAME_SIZE):
    """[n] samples -> [n // frame_size, frame_size] non-overlapping frames (the partial last one dropped)."""
    samples = np.asarray(samples).reshape(-1)
    n = len(samples) // frame_size
    return samples[:n * frame_size].reshape(n, frame_size)


def cut_pieces(frames, piece_frames=PIECE_FRAMES):
    """[T, D] frames -> list of [piece_frames, D] non-overlapping pieces (the partial last one dropped)."""
    return [frames[i:i + piece_frames] for i in range(0, len(frames) - piece_frames + 1, piece_frames)]


class _Framer:
    """Cuts a stream of sample blocks into frames (the leftover samples wait for the next block)."""

    def __init__(self, frame_size):
        self.frame_size = frame_size
        self.rest = np.zeros(0, dtype=np.float32)

    def frames(self, block):
        samples = np.concatenate([self.rest, block]) if len(self.rest) else block
        frames = frame(samples, self.frame_size)
        self.rest = samples[len(frames) * self.frame_size:]
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
        pending = [buffered[len(buffered) // piece_frames * piece_frames:]]
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


def prepare_audio_corpus(files, root, cache_path, name, cut="pieces", piece_frames=PIECE_FRAMES,
                         frame_size=FRAME_SIZE, sample_rate=SAMPLE_RATE, settings=None, verbose=True,
                         note="", buffer_bytes=4 << 20):
    """Stream `files` ({split: [(path, name)]}) into the HDF5 cache at `cache_path`, as the authors
    prepared speech; returns the path. Reused as is while the files and settings are unchanged.

    kind "real", dim `frame_size`; ONE scalar mean and std from the stored training frames.
    """
    start_time = time.time()
    settings = dict(settings or {}, cut=cut, piece_frames=piece_frames, frame_size=frame_size,
                    sample_rate=sample_rate, version=PREPARATION_VERSION)
    source = fingerprint(root, [p for split in SPLITS for p, _ in files.get(split, [])], settings)
    if cached_source(cache_path) == source:
        return cache_path
    skipped = 0
    with StreamWriter(cache_path, "real", name, frame_size, source, buffer_bytes=buffer_bytes) as writer:
        for split in SPLITS:
            for path, sequence_name in files.get(split, []):
                if not write_file(writer, split, path, sequence_name,
                                  piece_frames_for(cut, split, piece_frames), frame_size, sample_rate):
                    skipped += 1  # shorter than one frame (or one piece)
        if not writer.lengths["train"]:
            raise DataError(f"{name}: no training sequence: every training file under {root} is shorter "
                            f"than {'one frame' if piece_frames_for(cut, 'train') is None else 'one piece'}")
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
