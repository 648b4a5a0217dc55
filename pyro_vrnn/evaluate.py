"""Per-sequence evaluation: the ELBO and the importance-sampled log p(x) of Table 1 (Chung et al. 2015).

The ELBO of one sequence (PAPER.md) is

    E_q [ sum_t log p(x_t | z_{<=t}, x_{<t})  -  sum_t ( log q(z_t | x_{<=t}, z_{<t}) - log p(z_t | x_{<t}, z_{<t}) ) ]

A guide trace and the model replayed on it hold every term at its sample site, already masked at
padding steps, with the shape of the plates around it (sequences, and particles when vectorized).
Summing the sites and keeping those dimensions gives one number per sequence, which is what the
paper reports; Pyro's own ELBO objects only give the sum over the batch.

Table 1's "~" rows estimate log p(x) itself by importance sampling with the guide as proposal:

    log p(x) ~ log (1/K) sum_k w_k,    w_k = p(x, z^k) / q(z^k | x),   z^k ~ q(z | x)

Pyro's `vectorized_importance_weights` draws the K particles in one pass (a particle plate at dim -2
over the sequence plate at dim -1); its traces give log w as a [K, B] tensor, so every sequence gets
its own estimate. The same particles give the K-sample ELBO estimate mean_k log w_k, and by Jensen's
inequality log mean_k w_k >= mean_k log w_k for every sequence: the "~" number is never below the ">="
one. K is drawn in chunks so that memory stays bounded. Models without latent variables (the RNN
baselines) have an exact log p(x) = sum_t log p(x_t | x_{<t}): no sampling, reported as exact.
"""
import math
import os
import time

import numpy as np
import torch
import pyro
import pyro.poutine as poutine
from pyro.infer.importance import vectorized_importance_weights
from pyro.poutine.util import site_is_subsample

import models

# Peak memory of one vectorized pass over K particles; K is drawn in chunks that fit it. On a CPU: an
# eighth of the memory free now, between these bounds; on a GPU, a quarter of its free memory. Fewer,
# larger chunks amortize Pyro's per-site work.
CPU_MEMORY_BUDGET = (2 ** 28, 2 ** 32)  # 256 MiB to 4 GiB
PASS_RESERVE_BYTES = 2 ** 25  # what a pass takes whatever its size: an emission block, the allocator's slack


def site_log_prob_sum(trace, observed, dtype=None):
    """Sum of the masked log-densities of the sample sites (observed or latent) of a trace, per sequence.

    dtype: accumulate in this dtype (float64 for long sequences), default the sites' own.
    """
    trace.compute_log_prob()
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] == "sample" and site["is_observed"] == observed and not site_is_subsample(site):
            log_prob = site["log_prob"]
            total = total + (log_prob if dtype is None else log_prob.to(dtype))
    return total


@torch.no_grad()
def elbo_terms(model, guide, vrnn, x, mask):
    """One-sample estimates, per sequence, of the reconstruction term and of the KL term.

    Returns (log_likelihood [B], kl [B]) with ELBO = log_likelihood - kl. For models without
    latent variables kl is zero and log_likelihood is the exact log p(x).
    """
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask)
    log_likelihood = site_log_prob_sum(model_trace, observed=True)
    kl = site_log_prob_sum(guide_trace, observed=False) - site_log_prob_sum(model_trace, observed=False)
    zeros = x.new_zeros(x.shape[0])
    return zeros + log_likelihood, zeros + kl


@torch.no_grad()
def exact_log_likelihood(model, vrnn, x, mask):
    """log p(x) [B] of a model without latent variables: the sum of its observed sites, exactly."""
    trace = poutine.trace(model).get_trace(vrnn, x, mask)
    return x.new_zeros(x.shape[0], dtype=torch.float64) + site_log_prob_sum(trace, True, torch.float64)


@torch.no_grad()
def particle_log_weights(model, guide, vrnn, x, mask, num_samples):
    """log w [K, B] = log p(x, z^k) - log q(z^k | x) for K particles drawn in one vectorized pass.

    Pyro pools the weights over the batch; its traces keep them apart: every site's log-prob has
    the particles at dim -2 and the sequences at dim -1 (padding steps are masked to zero).
    """
    _, model_trace, guide_trace = vectorized_importance_weights(
        model, guide, vrnn, x, mask, num_samples=num_samples, max_plate_nesting=1)
    shape = (num_samples, x.shape[0])
    for trace in (model_trace, guide_trace):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site_is_subsample(site) and site["log_prob"].shape != shape:
                raise RuntimeError(f"site {name} has log-densities of shape {tuple(site['log_prob'].shape)}, "
                                   f"expected {shape} (particles x sequences)")
    log_p = site_log_prob_sum(model_trace, True, torch.float64) + site_log_prob_sum(model_trace, False, torch.float64)
    return log_p - site_log_prob_sum(guide_trace, False, torch.float64)


def bytes_per_cell(vrnn):
    """Peak memory of one pass per particle x sequence x time step, above what run/benchmark.py measures
    (peaks of passes of two sizes, for LSTMs of 64 to 1200 units and z of 8 to 128): h_t, the LSTM's cell
    state and gates; z_t with the guide's and the prior's parameters and log-densities, in both traces; the
    features. The emission's parameters, the largest for speech, exist for one block at a time
    (networks.emission_blocks, within PASS_RESERVE_BYTES)."""
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
def importance_log_weights(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None):
    """log w [K, B] for K = num_samples particles, drawn `chunk_size` at a time (default: what fits memory)."""
    chunk_size = chunk_size or default_chunk_size(num_samples, x.shape[0], x.shape[1], vrnn, memory_budget(x.device))
    chunks = []
    for start in range(0, num_samples, chunk_size):
        chunks.append(particle_log_weights(model, guide, vrnn, x, mask, min(chunk_size, num_samples - start)))
    return torch.cat(chunks, dim=0)


def summarize_log_weights(log_w):
    """Per-sequence figures from log w [K, B]: the K-sample ELBO mean_k log w_k, the IS estimate
    log (1/K) sum_k w_k, and the effective sample size (sum_k w_k)^2 / sum_k w_k^2 (1 to K)."""
    num_samples = log_w.shape[0]
    log_sum = torch.logsumexp(log_w, dim=0)
    return {"elbo": log_w.mean(0),
            "log_px": log_sum - math.log(num_samples),
            "ess": torch.exp(2 * log_sum - torch.logsumexp(2 * log_w, dim=0))}


@torch.no_grad()
def estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None, latent=True):
    """Per-sequence {"elbo", "log_px", "ess"} [B] tensors (float64) for one padded batch.

    latent=False (the RNN baselines): exact log p(x), returned as both elbo and log_px, ess None.
    """
    if not latent:
        exact = exact_log_likelihood(model, vrnn, x, mask)
        return {"elbo": exact, "log_px": exact, "ess": None}
    return summarize_log_weights(importance_log_weights(model, guide, vrnn, x, mask, num_samples, chunk_size))


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
    """The report's figures from per-sequence arrays (elbo, log_px, ess) and the sequence lengths."""
    elbo, elbo_se = mean_and_stderr(per_sequence["elbo"])
    log_px, log_px_se = mean_and_stderr(per_sequence["log_px"])
    elbo_step, elbo_step_se = ratio_and_stderr(per_sequence["elbo"], lengths)
    log_px_step, log_px_step_se = ratio_and_stderr(per_sequence["log_px"], lengths)
    ess = per_sequence.get("ess")
    return {
        "exact": exact, "num_samples": None if exact else num_samples,
        "sequences": len(lengths), "steps": int(np.sum(lengths)),
        "elbo_per_seq": elbo, "elbo_per_seq_stderr": elbo_se,
        "log_px_per_seq": log_px, "log_px_per_seq_stderr": log_px_se,
        "elbo_per_step": elbo_step, "elbo_per_step_stderr": elbo_step_se,
        "log_px_per_step": log_px_step, "log_px_per_step_stderr": log_px_step_se,
        "ess_mean": None if ess is None else float(np.mean(ess)),
        "ess_min": None if ess is None else float(np.min(ess)),
    }


@torch.no_grad()
def evaluate_dataset(model, guide, vrnn, dataset, latent, num_samples=100, batch_size=32, chunk_size=None,
                     device="cpu", progress=False):
    """Evaluate every sequence of a SequenceDataset; returns (summary dict, per-sequence dict of arrays
    in the dataset's order). Batches hold sequences of similar length (sorted), so little is padded."""
    from pyro_vrnn.data import pad_batch
    from pyro_vrnn.train import frozen_heap
    from tqdm import tqdm

    lengths = np.asarray(dataset.lengths)
    order = np.argsort(lengths, kind="stable")
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    keys = ("elbo", "log_px", "ess") if latent else ("elbo", "log_px")
    per_sequence = {key: np.zeros(len(lengths)) for key in keys}
    start = time.time()
    # argument checks cost time and were done in training; frozen_heap: see pyro_vrnn/train.py
    with pyro.validation_enabled(False), frozen_heap():
        for indices in tqdm(batches, disable=not progress, desc="evaluating", unit="batch", dynamic_ncols=True):
            x, mask = pad_batch([dataset[int(i)] for i in indices])
            x, mask = x.to(device), mask.to(device)
            result = estimate_log_likelihood(model, guide, vrnn, x, mask, num_samples, chunk_size, latent)
            for key in keys:
                per_sequence[key][indices] = result[key].cpu().numpy()
    summary = summarize(per_sequence, lengths, exact=not latent, num_samples=num_samples)
    summary["seconds"] = time.time() - start
    per_sequence["length"] = lengths
    return summary, per_sequence


def resolve_checkpoint(path):
    """A .pt file as is; a run directory -> its best.pt, else its last.pt."""
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        return os.path.join(path, "best.pt")  # load_checkpoint says it is missing
    return path


def evaluate_checkpoint(path, split=None, num_samples=100, batch_size=None, chunk_size=None, device="cpu",
                        data_dir=None, seed=0, progress=False):
    """Load a checkpoint (file or run directory), evaluate it on a split of its dataset; returns the
    summary dict (with model, dataset, split, checkpoint) and the per-sequence arrays.

    split None: test, or valid where the data set has no test split (IAM-OnDB with its official lists:
    the authors trained on every list but validation set 1 and reported on that)."""
    # imported here: pyro_vrnn.train imports this module
    from pyro_vrnn import data as datasets
    from pyro_vrnn.train import TrainingError, check_same_data, load_checkpoint, rebuild, resolve_device

    for flag, value in (("num-samples", num_samples), ("batch-size", batch_size), ("chunk-size", chunk_size)):
        if value is not None and value < 1:
            raise TrainingError(f"--{flag} is {value}; it must be at least 1")
    path = resolve_checkpoint(path)
    state = load_checkpoint(path)
    device = resolve_device(device) if isinstance(device, str) else device
    config, model, guide, vrnn, info = rebuild(state, device)
    if config.threads > 0:  # as in training: tiny models run best on few threads
        torch.set_num_threads(config.threads)
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
