"""What a trained model shows: its samples in the data's own form, the paper's Figures 2 and 3, and
the pictures written at the end of every run.

    load_run(path)              a checkpoint (file or run directory) -> the rebuilt model and its data info
    write_samples(x, info, out) handwriting -> lines drawn as pen strokes (samples.png);
                                speech -> 16 kHz 16-bit WAV files and a waveform plot; other real
                                data -> its features against the time step;
                                piano rolls -> images; tokens -> text (samples.txt);
                                always samples.npz with the numbers
    latent_activity(...)        Figure 2's numbers for one sequence: delta_t = sum_j (mu_z,t^j - mu_z,t-1^j)^2
                                and KL_t = KL(q(z_t | x_<=t, z_<t) || p(z_t | x_<t, z_<t))
    figure3(...)                real lines beside samples of an RNN-GMM and a VRNN-GMM
    end_of_run_figures(run_dir) samples.png and curves.png, after training (run/svi.py)
"""

import os
import re

import numpy as np
import pyro
import torch

from pyro_vrnn import data as datasets, models
from pyro_vrnn.data import write_wav
from pyro_vrnn.data.tokens import decode
from pyro_vrnn.infer.objectives import traces
from pyro_vrnn.nn.text_window import ConditionalVRNN, encode_texts
from pyro_vrnn.report import plots
from pyro_vrnn.report.sampling import generate, to_data_units
from pyro_vrnn.report.synthesis import phrases, write_lines
from pyro_vrnn.train.checkpoints import check_same_data, load_checkpoint, rebuild, resolve_checkpoint
from pyro_vrnn.train.config import CONDITIONAL_MODELS
from pyro_vrnn.train.process import TrainingError

SAMPLE_RATE = 16000  # docs/paper.md: the speech sets are 16 kHz waveforms (a data set may store its own)


class Run:
    """A rebuilt checkpoint: its path, state, config, guide, network and data info, and its model program
    in the step-by-step form (`models.MODELS[...].model`), the one that generates."""

    def __init__(self, path, device="cpu"):
        self.path = resolve_checkpoint(path)
        self.state = load_checkpoint(self.path)
        self.config, _, self.guide, self.vrnn, info = rebuild(self.state, device)
        self.info = dict(info, sample_rate=audio_rate(self.config.dataset, info))
        self.model = models.MODELS[self.config.model].model
        self.latent = models.MODELS[self.config.model].latent
        self.step = self.state["progress"]["step"]

    @property
    def run_dir(self):
        return os.path.dirname(os.path.abspath(self.path))

    def describe(self):
        return f"{self.config.model} on {self.config.dataset} ({os.path.basename(self.path)}, step {self.step})"

    def dataset(self, split, data_dir=None):
        """One split of the data the model was trained on, checked against the checkpoint's statistics."""
        splits = datasets.load(self.config.dataset, data_dir or self.config.data_dir, verbose=False)
        data = splits[split]
        if len(data) == 0:
            raise TrainingError(f"dataset {self.config.dataset!r} has no sequences in its {split} split")
        check_same_data(self.info, data, f"{self.config.dataset} {split}")
        return data

    def sequence(self, split, index, data_dir=None, flag="--index"):
        """Sequence `index` of a split, normalized as the model saw it: float32 [T, D]."""
        data = self.dataset(split, data_dir)
        check_index(data, index, split, flag)
        return data[index]


def check_index(data, index, split, flag):
    """One clear line when the command-line `flag` names a sequence the split does not have."""
    if not 0 <= index < len(data):
        raise TrainingError(f"{flag} {index} is out of range: the {split} split has {len(data)} sequences")


def audio_rate(dataset, info):
    """The sample rate (Hz) of the audio a run's steps are frames of, or None where its data are not sound:
    the built-in speech sets (data.SPEECH) are 16 kHz; a user's file says so with its sample_rate attribute,
    which the checkpoint keeps (checkpoints.data_info). Any other real-valued data (sensor readings, prices,
    features) would make no sense as a waveform or a WAV file."""
    if info["kind"] != "real":
        return None
    if info.get("sample_rate"):
        return int(info["sample_rate"])
    return SAMPLE_RATE if dataset in datasets.SPEECH else None


def load_run(path, device="cpu"):
    return Run(path, device)


# ---------------------------------------------------------------------------------------------
# Samples, written in the form that suits the data
# ---------------------------------------------------------------------------------------------


def audio_units(info):
    """The data's waveform values per unit of full scale, for `pyro_vrnn.data.write_wav` (floats in [-1, 1]).

    A data set may say it (`audio_units` in its info). Otherwise: the speech sets prepared here hold
    floats in [-1, 1) (1); waveforms whose standard deviation is 4 or more can only be 16-bit
    sample values (e.g. a user's HDF5 file), so they are divided by 32768.
    """
    if "audio_units" in info:
        return float(info["audio_units"])
    return 1.0 if float(np.median(info["std"])) < 4 else 32768.0


def write_samples(x, info, out_dir, suptitle=None, prime_steps=0, audio=True, arrays=True, name="samples"):
    """Write sequences x [N, T, D] (data units) as files that suit info["kind"]; returns the paths.

    handwriting: NAME.png, lines drawn as pen strokes (pen lifts respected)
    real, audio: NAME.png waveforms, and NAME-01.wav ... (16-bit, at info["sample_rate"]) when `audio`
    other real:  NAME.png, the features against the time step (one line each, or a heat map)
    binary:      NAME.png piano rolls
    tokens:      NAME.txt, each sample as text (characters, or tokens such as chess moves between spaces; a
                 prime's steps, then "|", then the generated ones), decoded with info["vocabulary"]
    and NAME.npz (x in data units, prime_steps) when `arrays`.
    """
    os.makedirs(out_dir, exist_ok=True)
    x = np.asarray(x)
    kind, rate = info["kind"], info.get("sample_rate")  # a Run's info says whether real data are audio
    where = "in blue" if kind == "handwriting" or (kind == "real" and rate) else "left of the blue line"
    where = "before the |" if kind == "tokens" else where
    titles = [
        f"sample {i + 1}" + (f" (the first {prime_steps} steps are real, {where})" if prime_steps else "")
        for i in range(len(x))
    ]
    picture = os.path.join(out_dir, f"{name}.png")
    written = []
    if kind == "handwriting":
        written.append(plots.plot_handwriting(x, picture, titles, suptitle, prime_steps))
    elif kind == "real" and rate:
        waves = x.reshape(len(x), -1)  # frames of D samples, end to end
        written.append(plots.plot_waveforms(waves, picture, rate, titles, suptitle, prime_steps * x.shape[2]))
        if audio:
            units = audio_units(info)
            for i, w in enumerate(waves):
                path = os.path.join(out_dir, f"{name}-{i + 1:02d}.wav")
                write_wav(path, w / units, rate)  # 16-bit PCM, clipped at full scale
                written.append(path)
    elif kind == "real":
        written.append(plots.plot_features(x, picture, titles, suptitle, prime_steps))
    elif kind == "binary":
        written.append(plots.plot_piano_rolls(x, picture, titles, suptitle, prime_steps))
    elif kind == "tokens":
        written.append(
            write_token_samples(
                x, info["vocabulary"], os.path.join(out_dir, f"{name}.txt"), titles, suptitle, prime_steps
            )
        )
    else:
        raise ValueError(f"unknown data kind {kind!r}")
    if arrays:
        path = os.path.join(out_dir, f"{name}.npz")
        np.savez(path, x=x.astype(np.float32), prime_steps=prime_steps, kind=kind)
        written.append(path)
    return written


def token_sample_texts(x, vocabulary, prime_steps=0):
    """Samples x [N, T, 1] of token ids as text: the prime's tokens, "|", the generated ones."""
    texts = []
    for sample in np.asarray(x):
        prime, generated = decode(sample[:prime_steps], vocabulary), decode(sample[prime_steps:], vocabulary)
        texts.append(f"{prime}|{generated}" if prime_steps else generated)
    return texts


def write_token_samples(x, vocabulary, path, titles, suptitle=None, prime_steps=0):
    """NAME.txt: a heading line per sample, then its text (token_sample_texts); returns the path."""
    lines = [suptitle, ""] if suptitle else []
    for title, text in zip(titles, token_sample_texts(x, vocabulary, prime_steps)):
        lines += [f"--- {title}", text.rstrip("\n"), ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def remove_stale_audio(out_dir, written, name="samples"):
    """Remove the NAME-NN.wav files in out_dir that are not among `written`: an earlier call's (with a
    larger --num, or of a model of audio data), which no longer match NAME.npz. Only that pattern is
    touched; returns the paths removed."""
    pattern, keep = re.compile(rf"{re.escape(name)}-\d{{2,}}\.wav"), {os.path.abspath(path) for path in written}
    stale = [os.path.join(out_dir, entry) for entry in sorted(os.listdir(out_dir)) if pattern.fullmatch(entry)]
    stale = [path for path in stale if os.path.abspath(path) not in keep]
    for path in stale:
        os.remove(path)
    return stale


def sample_run(run, num, steps, seed=0, tau=1.0, prime=None):
    """`num` samples of `steps` steps from a run, in data units [num, steps, D] (numpy).

    prime: optional [P, D] normalized real sequence whose steps begin every sample; for a VRNN its
    z_{<=P} are drawn from the guide. Binary samples are bits already; handwriting pen bits are
    0/1 by construction (they are never normalized).
    """
    if run.config.model in CONDITIONAL_MODELS:
        raise TrainingError(
            f'{run.config.model} writes a given text: python run/write.py "TEXT" --checkpoint {run.run_dir}'
        )
    pyro.set_rng_seed(seed)
    x = generate(run.model, run.vrnn, num, steps, prime=prime, guide=run.guide if run.latent else None, tau=tau)
    if run.info["kind"] in ("binary", "tokens"):  # bits and token ids are never normalized
        return x.cpu().numpy()
    return to_data_units(x, run.info)


# ---------------------------------------------------------------------------------------------
# Figure 2: what the latent variables do along one sequence
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def latent_activity(model, guide, vrnn, sequence, particles=1, text=None):
    """Figure 2's numbers for one normalized sequence [T, D] (and, for a model conditioned on text, the `text` that
    it writes, a string): a dict of [T] numpy arrays

        delta  sum_j (mu_z,t^j - mu_z,t-1^j)^2, the squared change of the guide's mean (delta_1 = 0)
        kl     KL(q(z_t | x_<=t, z_<t) || p(z_t | x_<t, z_<t)), analytic (both are diagonal Gaussians)

    and mu [T, z] (the guide's means of the first particle). The guide draws z_t as it goes (its
    next state depends on it), so both depend on that draw: `particles` > 1 averages over
    independent draws. The model is replayed on the guide's trace, so that its prior at step t
    conditions on the same z_{<t} as the guide's posterior.
    """
    x = torch.as_tensor(sequence, dtype=torch.float32).to(next(vrnn.parameters()).device)
    x = x.expand(particles, -1, -1)  # independent particles as a batch of copies
    mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    conditioned = {}
    if isinstance(vrnn, ConditionalVRNN):
        if text is None:
            raise TrainingError("a model conditioned on text draws Figure 2 for a line with its text: pass it")
        conditioned["text"] = encode_texts([text] * particles, vrnn.alphabet, x.device)
    guide_trace, model_trace = traces(model, guide, vrnn, x, mask, **conditioned)
    names = [f"z_{t + 1}" for t in range(x.shape[1])]
    if names[0] not in guide_trace.nodes:
        raise TrainingError("this model has no latent variables (an RNN baseline): Figure 2 needs a VRNN")
    mu = torch.stack([guide_trace.nodes[n]["fn"].mean for n in names], dim=1)  # [particles, T, z]
    kl = torch.stack(
        [torch.distributions.kl_divergence(guide_trace.nodes[n]["fn"], model_trace.nodes[n]["fn"]) for n in names],
        dim=1,
    )  # [particles, T]
    delta = torch.cat([torch.zeros_like(mu[:, :1, 0]), (mu[:, 1:] - mu[:, :-1]).pow(2).sum(-1)], dim=1)
    return {"delta": delta.mean(0).cpu().numpy(), "kl": kl.mean(0).cpu().numpy(), "mu": mu[0].cpu().numpy()}


def figure2(run, sequence, path, particles=1, title=None, text=None):
    """Compute Figure 2's numbers on a normalized sequence (with its `text`, for a model conditioned on text) and
    draw them; writes PATH.png and PATH.csv.

    Returns (paths written, the numbers)."""
    numbers = latent_activity(run.model, run.guide, run.vrnn, sequence, particles, text)
    kind = run.info["kind"]
    data = to_data_units(sequence, run.info) if kind != "binary" else np.asarray(sequence)
    stem = os.path.splitext(path)[0]
    png = plots.plot_figure2(
        stem + ".png", numbers["delta"], numbers["kl"], kind, data, run.info.get("sample_rate"), title
    )
    columns = ["t", "delta", "kl"] + (["pen", "dx", "dy"] if kind == "handwriting" else [])
    table = [np.arange(1, len(data) + 1), numbers["delta"], numbers["kl"]]
    if kind == "handwriting":
        table += [data[:, 0], data[:, 1], data[:, 2]]
    np.savetxt(
        stem + ".csv",
        np.column_stack(table),
        delimiter=",",
        header=",".join(columns),
        comments="",
        fmt=["%d"] + ["%.6g"] * (len(columns) - 1),
    )
    return [png, stem + ".csv"], numbers


# ---------------------------------------------------------------------------------------------
# Figure 3: real lines beside samples of an RNN and a VRNN
# ---------------------------------------------------------------------------------------------


def figure3(runs, path, num=4, steps=None, split="valid", seed=0, tau=1.0, data_dir=None, first=0):
    """Real lines (`num` of the split, from index `first`) beside `num` samples of each run (handwriting).

    runs: list of Run, drawn left to right after the real lines (the paper: RNN-GMM, VRNN-GMM).
    steps: length of the samples (default: the median length of the real lines shown).
    """
    for run in runs:
        if run.info["kind"] != "handwriting":
            raise TrainingError(f"Figure 3 draws handwriting; {run.path} was trained on {run.info['kind']} data")
    reference = runs[0]
    for run in runs[1:]:
        if run.config.dataset != reference.config.dataset or not np.allclose(run.info["std"], reference.info["std"]):
            raise TrainingError(
                f"{run.path} and {reference.path} were trained on different data "
                f"({run.config.dataset}, {reference.config.dataset}); compare models of one data set"
            )
    data = reference.dataset(split, data_dir)
    check_index(data, first, split, "--first")
    indices = range(first, min(first + num, len(data)))
    real = [to_data_units(data[i], reference.info) for i in indices]
    steps = steps or int(np.median([len(r) for r in real]))
    columns = [(f"real lines ({reference.config.dataset} {split})", real)]
    for run in runs:
        columns.append((f"{run.config.model} samples (step {run.step})", list(sample_run(run, num, steps, seed, tau))))
    note = f"samples of {steps} steps" + (f", temperature {tau:g}" if tau != 1 else "")
    return plots.plot_figure3(columns, path, suptitle=note)


# ---------------------------------------------------------------------------------------------
# After training
# ---------------------------------------------------------------------------------------------


def end_of_run_figures(run_dir, num=None, seed=0):
    """Write samples.png (generated sequences, any data kind) and curves.png into run_dir; returns the paths."""
    written = []
    name = "best.pt" if os.path.exists(os.path.join(run_dir, "best.pt")) else "last.pt"
    if os.path.exists(os.path.join(run_dir, name)):
        run = Run(os.path.join(run_dir, name))
        num = num or run.config.num_samples_figure
        if run.config.model in CONDITIONAL_MODELS:  # it writes given texts: phrases of the embedded vocabulary
            pyro.set_rng_seed(seed)
            texts = phrases(run.vrnn.alphabet, num, seed, run.config.longest_text)
            lines, _ = write_lines(run, texts)
            titles = [repr(text) for text in texts]
            written.append(plots.plot_handwriting(lines, os.path.join(run_dir, "samples.png"), titles, run.describe()))
        else:
            x = sample_run(run, num, run.info["median_length"], seed)
            written += write_samples(
                x, run.info, run_dir, suptitle=f"{run.describe()}: samples", audio=False, arrays=False
            )
    log_path = os.path.join(run_dir, "log.jsonl")
    if os.path.exists(log_path):
        curves = plots.plot_training_curves(log_path, os.path.join(run_dir, "curves.png"))
        if curves:
            written.append(curves)
    return written
