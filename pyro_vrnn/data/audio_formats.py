"""Audio files decoded to float samples: the first step of the paper's speech path (audio.py).

Chung et al. (2015, Sec. 5.1) model raw 16 kHz waveforms; the corpora store them as WAV, NIST
SPHERE (TIMIT), FLAC, MP3 or raw G.722 (Asterisk's prompts). `open_audio(path)` gives one file's
reader, whose `.blocks(n)` yields its samples n at a time as float32 mono in [-1, 1), at the
file's own rate (`.sample_rate`; resampling.py takes it to 16 kHz):

  WAV     RIFF, 8/16/24/32-bit integer PCM, through the standard library's `wave`
  SPHERE  TIMIT's .WAV files: a 1024-byte text header, then PCM or mu-law samples; read here
  G.722   raw .g722 (16 kHz, 64 kbit/s), decoded by the optional `g722` package
  other   FLAC / MP3 / OGG / AIFF / AU / other WAV codings through the optional `soundfile` package

The format is recognised from the file's first bytes, not its extension, since TIMIT's SPHERE
files are named .WAV; raw G.722 has no header and goes by its extension. Channels are averaged to
mono. A damaged file, or one that is no audio, is a DataError that names it and says so.
"""

import os
import struct
import wave

import numpy as np

from pyro_vrnn.data.schema import DataError

G722_EXTENSIONS = (".g722",)  # raw G.722 has no magic bytes: only its extension says what it is
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".sph", ".ogg", ".oga", ".aif", ".aiff", ".au") + G722_EXTENSIONS
SOUNDFILE_HINT = "pip install soundfile"
G722_HINT = 'pip install g722 (or pip install -e ".[speech]")'


# ---------------------------------------------------------------------------------------------
# Decoding: WAV, NIST SPHERE, G.722, and the rest through soundfile
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
            raise DataError(
                f"{path}: compressed SPHERE ({coding}); decompress it first, e.g. with LDC's "
                f"sph2pipe (sph2pipe -f wav in.sph out.wav) or sox"
            )
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
WAV_CODINGS = {
    1: "PCM",
    2: "MS ADPCM",
    3: "IEEE float",
    6: "A-law",
    7: "mu-law",
    0x11: "IMA ADPCM",
    0x31: "GSM 6.10",
    0x55: "MP3",
    0xFFFE: "extensible",
}


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
                    raise DataError(
                        f"{path}: its 'fmt ' chunk is cut short ({len(body)} of at least 16 bytes); {DAMAGED}"
                    )
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
                raise DataError(
                    f"{path}: its {chunk.decode()!r} chunk runs past the end of the file "
                    f"({position} > {size} bytes) before a 'fmt ' chunk; {DAMAGED}"
                )
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
                yield pcm_to_float(raw[:usable], self.width).reshape(-1, self.channels).mean(axis=1, dtype=np.float32)


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
            for block in self._soundfile.blocks(self.path, blocksize=block_samples, dtype="float32", always_2d=True):
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
            raise DataError(f"{path}: its 'fmt ' chunk names WAV coding 0x{tag:04x}, which no reader knows; {DAMAGED}")
        return SoundFile(path, what=f"{WAV_CODINGS[tag]} WAV")
    if found is None:
        try:
            import soundfile  # noqa: F401  libsndfile knows a few more formats by their content
        except ImportError:
            raise DataError(
                f"{path}: its first bytes {magic!r} begin no WAV, SPHERE, FLAC, MP3, OGG, AIFF or AU file; {DAMAGED}"
            ) from None
        return SoundFile(path)
    if found == "WAV":  # RIFX (big-endian) or RF64 (over 4 GB): libsndfile's
        return SoundFile(path, what=f"{magic[:4].decode()} WAV")
    return SoundFile(path, what=found)
