"""Resampling to the paper's 16 kHz: a band-limited polyphase Kaiser-windowed sinc filter, numpy only.

Chung et al. (2015) model waveforms at 16 kHz; a corpus recorded at another rate is resampled on
the way in (audio.stream_audio). The ratio is exact and rational (22.05 kHz -> 16 kHz is 320/441),
the filter zero phase, the output length ceil(n * 16000 / rate), and `Resampler` streams, block by
block, so that an hour-long audiobook chapter never sits in memory whole.
"""

import math

import numpy as np


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
        padded[: len(h)] = h
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
            column = out[r :: self.up]  # a view: filled in chunks that keep the copied windows small
            for j in range(0, count, self.CHUNK):
                n = min(self.CHUNK, count - j)
                start = first + j * self.down
                column[j : j + n] = windows[start : start + (n - 1) * self.down + 1 : self.down] @ self.table[phase]
        self.next_out = m_end
        # Keep only the input that later outputs still need.
        keep_from = self._newest_input(m_end) - self.taps + 1
        if keep_from > self.buffer_start:
            self.buffer = self.buffer[keep_from - self.buffer_start :]
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
