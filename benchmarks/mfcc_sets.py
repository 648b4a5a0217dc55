"""The bring-your-own speech sets of docs/ablations.md: 12 MFCCs a frame from Asterisk's US English prompts.

A new user's data, brought through `--dataset hdf5`: the recorded prompts of Debian's
`asterisk-core-sounds-en-g722` (16 kHz G.722, `pip install g722`), 25 ms Hamming frames every 10 ms,
26 mel bands from 20 Hz to 7.6 kHz, the orthonormal DCT of their log energies, c1..c12. Files split
80/10/10 with a fixed seed, each file's frames cut into consecutive pieces (a short tail kept when it is
at least the shortest length), every dimension
standardized with the train split's statistics (kept as the `mean` and `std` attributes):

    short12: pieces of 20 frames (10-20), from a quarter of the files (about 4,800 training frames)
    mfcc12:  pieces of 100 frames (50-100) (about 28,500 training frames)

    python -m pyro_vrnn.benchmarks.mfcc_sets OUT_DIR     # writes OUT_DIR/short12.h5 and OUT_DIR/mfcc12.h5
"""

import argparse
import os

import numpy as np

from pyro_vrnn.data.audio import read_audio
from pyro_vrnn.data.schema import write_h5

SAMPLE_RATE, FRAME, HOP, FFT, BANDS, COEFFICIENTS = 16000, 400, 160, 512, 26, 12
SETS = {"short12": dict(piece=(10, 20), file_share=0.25, train_sequences=243, held_out_sequences=60),
        "mfcc12": dict(piece=(50, 100), file_share=1.0, train_sequences=300, held_out_sequences=60)}  # fmt: skip


def mel_filterbank(low_hz=20.0, high_hz=7600.0):
    """[BANDS, FFT // 2 + 1] triangular filters evenly spaced on the mel scale."""
    mel = np.linspace(*(2595 * np.log10(1 + np.array([low_hz, high_hz]) / 700)), BANDS + 2)
    bins = np.floor((FFT + 1) * 700 * (10 ** (mel / 2595) - 1) / SAMPLE_RATE).astype(int)
    bank = np.zeros((BANDS, FFT // 2 + 1))
    for b in range(BANDS):
        left, centre, right = bins[b : b + 3]
        bank[b, left:centre] = (np.arange(left, centre) - left) / max(centre - left, 1)
        bank[b, centre:right] = (right - np.arange(centre, right)) / max(right - centre, 1)
    return bank


def mfcc(samples, bank):
    """[frames, 12]: c1..c12 of the DCT-II (orthonormal) of the log mel energies of each Hamming frame."""
    count = 1 + (len(samples) - FRAME) // HOP
    if count < 1:  # a clip shorter than one frame
        return np.zeros((0, COEFFICIENTS), np.float32)
    frames = np.stack([samples[i * HOP : i * HOP + FRAME] for i in range(count)]) * np.hamming(FRAME)
    power = np.abs(np.fft.rfft(frames, FFT)) ** 2 / FFT
    log_energy = np.log(power @ bank.T + 1e-10)
    n = np.arange(BANDS)
    dct = np.sqrt(2 / BANDS) * np.cos(np.pi * np.outer(np.arange(1, COEFFICIENTS + 1), 2 * n + 1) / (2 * BANDS))
    return (log_energy @ dct.T).astype(np.float32)


def pieces(frames, low, high):
    """Consecutive pieces of `high` frames of `frames`; a tail of at least `low` frames is kept as the last."""
    out = [frames[start : start + high] for start in range(0, len(frames), high)]
    return out if not out or len(out[-1]) >= low else out[:-1]


def build(name, files, bank, seed=0):
    """{split: [array [T, 12]]} of the set `name` (SETS), standardized with the train statistics."""
    spec, rng = SETS[name], np.random.default_rng(seed)
    files = sorted(files)
    files = [files[i] for i in rng.permutation(len(files))[: max(3, round(spec["file_share"] * len(files)))]]
    held_out = max(1, round(0.1 * len(files)))  # files for each of valid and test
    cut = [len(files) - 2 * held_out, len(files) - held_out]
    splits = {"train": files[: cut[0]], "valid": files[cut[0] : cut[1]], "test": files[cut[1] :]}
    out = {}
    for split, paths in splits.items():
        seqs = [p for path in paths for p in pieces(mfcc(read_audio(path, SAMPLE_RATE)[0], bank), *spec["piece"])]
        keep = spec["train_sequences"] if split == "train" else spec["held_out_sequences"]
        out[split] = [seqs[i] for i in sorted(rng.permutation(len(seqs))[:keep])]
    train = np.concatenate(out["train"])
    mean, std = train.mean(0), train.std(0)
    return {split: [(s - mean) / std for s in seqs] for split, seqs in out.items()}, mean, std


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write short12.h5 and mfcc12.h5 into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = "/usr/share/asterisk/sounds/en_US_f_Allison"  # Debian's asterisk-core-sounds-en-g722
    files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(".g722")]
    files = [f for f in files if "/silence/" not in f]
    if not files:
        hint = "apt-get install asterisk-core-sounds-en-g722, pip install g722"
        raise SystemExit(f"no .g722 prompts under {root}: {hint}")
    os.makedirs(args.out, exist_ok=True)
    bank = mel_filterbank()
    for name in SETS:
        splits, mean, std = build(name, files, bank, args.seed)
        path = os.path.join(args.out, f"{name}.h5")
        write_h5(path, splits, kind="real", name=name, mean=mean, std=std, source=root)  # atomically, with checksums
        sizes = ", ".join(f"{s} {len(v)} ({sum(map(len, v)):,} frames)" for s, v in splits.items())
        print(f"{name}: {sizes}")


if __name__ == "__main__":
    main()
