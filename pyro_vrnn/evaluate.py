"""Evaluating a trained model as Table 1 does (Chung et al. 2015): the ELBO and the importance-sampled
log p(x) of every sequence of a split, averaged per sequence and per time step.

The estimators themselves are in objectives.py (Pyro's traces and `vectorized_importance_weights`);
here they run over a data set in length-sorted batches, with the K particles drawn in chunks that fit
in memory, and are summarized with standard errors, the KL term, the gap between the estimate and the
bound, and the effective sample size. Models without latent variables (the RNN baselines) have an exact
log p(x) = sum_t log p(x_t | x_{<t}): no sampling, reported as exact.
"""
import math
import os
import time

import numpy as np
import torch
import pyro
from tqdm import tqdm

import models
from pyro_vrnn import data as datasets
from pyro_vrnn.checkpoints import check_same_data, load_checkpoint, rebuild, resolve_checkpoint
from pyro_vrnn.objectives import exact_log_likelihood, particle_terms, summarize_log_weights
from pyro_vrnn.runtime import TrainingError, frozen_heap, resolve_device, set_threads

# Peak memory of one vectorized pass over K particles; K is drawn in chunks that fit it. On a CPU: an
# eighth of the memory free now, between these bounds; on a GPU, a quarter of its free memory. Fewer,
# larger chunks amortize Pyro's per-site work.
CPU_MEMORY_BUDGET = (2 ** 28, 2 ** 32)  # 256 MiB to 4 GiB
PASS_RESERVE_BYTES = 2 ** 25  # what a pass takes whatever its size: an emission block, the allocator's slack


def bytes_per_cell(vrnn):
    """Peak memory of one pass per particle x sequence x time step, above what run/benchmark.py measures
    (peaks of passes of two sizes, for LSTMs of 64 to 1200 units and z of 8 to 128): h_t, the LSTM's cell
    state and gates; z_t with the guide's and the prior's parameters and log-densities, in both traces; the
    features. The emission's parameters, the largest for speech, exist for one block of steps at a time
    (VRNN.emission_log_prob, within PASS_RESERVE_BYTES)."""
    return 4 * (3 * vrnn.hidden + 16 * vrnn.z_dim + vrnn.rnn.input_size + 384)


def memory_budget(device):
    """Bytes one pass may take at its peak (see CPU_MEMORY_BUDGET)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 4
    low, high = CPU_MEMORY_BUDGET
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name (macOS)
        return low
    return max(low, min(high, free // 8))


def default_chunk_size(num_samples, batch, steps, vrnn, budget):
    """Particles per vectorized pass so that one pass over particles x sequences x steps peaks within `budget`
    bytes; the passes are made as even as they can be (100 particles that need two passes go 50 and 50)."""
    most = max(1, (budget - PASS_RESERVE_BYTES) // (bytes_per_cell(vrnn) * max(1, batch * steps)))
    passes = -(-num_samples // most)
    return max(1, -(-num_samples // passes))


@torch.no_grad()
def importance_terms(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None):
    """(log p(x | z^k), KL term) [K, B] for K = num_samples particles, drawn `chunk_size` at a time
    (default: what fits memory); log w = the first minus the second."""
    chunk_size = chunk_size or default_chunk_size(num_samples, x.shape[0], x.shape[1], vrnn, memory_budget(x.device))
    chunks = [particle_terms(model, guide, vrnn, x, mask, min(chunk_size, num_samples - start))
              for start in range(0, num_samples, chunk_size)]
    return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])


def importance_log_weights(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None):
    """log w [K, B] for K = num_samples particles, drawn `chunk_size` at a time."""
    log_likelihood, kl = importance_terms(model, guide, vrnn, x, mask, num_samples, chunk_size)
    return log_likelihood - kl


@torch.no_grad()
def estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None, latent=True):
    """Per-sequence {"elbo", "log_px", "ess", "kl"} [B] tensors (float64) for one padded batch.

    latent=False (the RNN baselines): exact log p(x), returned as both elbo and log_px, ess None, kl 0.
    """
    if not latent:
        exact = exact_log_likelihood(model, vrnn, x, mask)
        return {"elbo": exact, "log_px": exact, "ess": None, "kl": torch.zeros_like(exact)}
    log_likelihood, kl = importance_terms(model, guide, vrnn, x, mask, num_samples, chunk_size)
    return summarize_log_weights(log_likelihood - kl, kl)


def mean_and_stderr(values):
    """Mean across sequences and its standard error (None for a single sequence)."""
    values = np.asarray(values, dtype=np.float64)
    stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return float(values.mean()), stderr


def ratio_and_stderr(values, lengths):
    """Per-time-step figure sum_i v_i / sum_i T_i and its standard error (ratio estimator, delta method)."""
    values, lengths = np.asarray(values, dtype=np.float64), np.asarray(lengths, dtype=np.float64)
    ratio = float(values.sum() / lengths.sum())
    n = len(values)
    if n < 2:
        return ratio, None
    residual = values - ratio * lengths
    return ratio, float(math.sqrt((residual ** 2).sum() / (n * (n - 1))) / lengths.mean())


def summarize(per_sequence, lengths, exact, num_samples):
    """The report's figures from per-sequence arrays (elbo, log_px, kl, ess) and the sequence lengths:
    each per sequence and per time step with its standard error; the gap log p(x) - ELBO (how far the
    bound is from the estimate: the guide's distance from the posterior); the ESS."""
    figures = {"exact": exact, "num_samples": None if exact else num_samples,
               "sequences": len(lengths), "steps": int(np.sum(lengths))}
    per_sequence = dict(per_sequence, gap=np.asarray(per_sequence["log_px"]) - np.asarray(per_sequence["elbo"]))
    for key in ("elbo", "log_px", "kl", "gap"):
        if key in per_sequence:
            figures[f"{key}_per_seq"], figures[f"{key}_per_seq_stderr"] = mean_and_stderr(per_sequence[key])
            figures[f"{key}_per_step"], figures[f"{key}_per_step_stderr"] = ratio_and_stderr(per_sequence[key],
                                                                                            lengths)
    ess = per_sequence.get("ess")
    figures["ess_mean"] = None if ess is None else float(np.mean(ess))
    figures["ess_min"] = None if ess is None else float(np.min(ess))
    return figures


@torch.no_grad()
def evaluate_dataset(model, guide, vrnn, dataset, latent, num_samples=100, batch_size=32, chunk_size=None,
                     device="cpu", progress=False):
    """Evaluate every sequence of a SequenceDataset; returns (summary dict, per-sequence dict of arrays
    in the dataset's order). Batches hold sequences of similar length (sorted), so little is padded."""
    lengths = np.asarray(dataset.lengths)
    order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    keys = ("elbo", "log_px", "kl", "ess") if latent else ("elbo", "log_px", "kl")
    per_sequence = {key: np.zeros(len(lengths)) for key in keys}
    start = time.time()
    # argument checks cost time and were done in training; frozen_heap: see pyro_vrnn/runtime.py
    with pyro.validation_enabled(False), frozen_heap():
        for indices in tqdm(batches, disable=not progress, desc="evaluating", unit="batch", dynamic_ncols=True):
            x, mask = datasets.pad_batch([dataset[int(i)] for i in indices])
            x, mask = x.to(device), mask.to(device)
            result = estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples, chunk_size, latent)
            for key in keys:
                per_sequence[key][indices] = result[key].cpu().numpy()
    summary = summarize(per_sequence, lengths, exact=not latent, num_samples=num_samples)
    summary["seconds"] = time.time() - start
    per_sequence["length"] = lengths
    return summary, per_sequence


def evaluate_checkpoint(path, split=None, num_samples=100, batch_size=None, chunk_size=None, device="cpu",
                        data_dir=None, seed=0, progress=False):
    """Load a checkpoint (file or run directory), evaluate it on a split of its dataset; returns the
    summary dict (with model, dataset, split, checkpoint) and the per-sequence arrays.

    split None: test, or valid where the data set has no test split (IAM-OnDB with its official lists:
    the authors trained on every list but validation set 1 and reported on that)."""
    for flag, value in (("num-samples", num_samples), ("batch-size", batch_size), ("chunk-size", chunk_size)):
        if value is not None and value < 1:
            raise TrainingError(f"--{flag} is {value}; it must be at least 1")
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    device = resolve_device(device) if isinstance(device, str) else device
    config, model, guide, vrnn, info = rebuild(state, device)
    set_threads(config.threads)  # as in training: tiny models run best on few threads
    splits = datasets.load(config.dataset, data_dir or config.data_dir, verbose=progress)
    if split is None:
        split = "test" if len(splits["test"]) else "valid"
    dataset = splits.get(split)
    if dataset is None or len(dataset) == 0:
        raise TrainingError(f"dataset {config.dataset!r} has no sequences in a split {split!r}")
    check_same_data(info, dataset, f"{config.dataset} {split}")
    latent = models.MODELS[config.model].latent
    pyro.set_rng_seed(seed)
    summary, per_sequence = evaluate_dataset(model, guide, vrnn, dataset, latent, num_samples,
                                             batch_size or config.batch_size, chunk_size, device, progress)
    summary = {"checkpoint": path, "model": config.model, "dataset": config.dataset, "split": split,
               "step": state["progress"]["step"], "device": str(device), **summary}
    return summary, per_sequence
