"""Evaluating a trained model as Table 1 does (Chung et al. 2015), and as FIVO's papers do: estimates of
log p(x) for every sequence of a split, averaged per sequence and per time step. `Estimators` chooses them:

  elbo  the K-sample average mean_k log w_k of the IS particles (Table 1's ">=");
  iwae  log (1/K') sum_k w_k with K' = iwae_particles (Burda et al. 2016): a bound, tighter as K' grows;
  smc   log p^(x) of the particle filter with smc_particles, each sequence resampled when its ESS < K/2
        (pyro_vrnn/infer/smc.py; Maddison et al. 2017): its expectation is FIVO's bound;
  is    log (1/K) sum_k w_k with K = num_samples, importance sampling with the guide as proposal ("~").

IWAE(K) and IS with K particles are one and the same number: by default iwae_particles = num_samples and
the IS particles give both (reported under both names); a different --iwae-particles draws its own.

The importance weights are in objectives.py (Pyro's traces and `vectorized_importance_weights`); here
they run over a data set in length-sorted batches, with the K particles drawn in chunks that fit in
memory (the particle filter needs no chunks: it holds one step), and are summarized with standard
errors, the KL term, the gap between the IS estimate and the ELBO, and the effective sample size. Models
without latent variables (the RNN baselines) have an exact log p(x) = sum_t log p(x_t | x_{<t}): no
sampling, every estimator reported as that exact number.

Per time step means what the music literature means by it (Boulanger-Lewandowski et al. 2012; STORN; the
SRNN; the DMM and Pyro's examples/dmm.py, whose test NLL is the summed loss over the test sequences divided
by the sum of their lengths; FIVO): sum_i L_i / sum_i T_i over the split's sequences i, not the mean of the
per-sequence averages L_i / T_i (`ratio_and_stderr`).

Memory: one vectorized pass holds every site of its particles over all steps, K' x B x T cells
(`bytes_per_cell`). A pass is sized to a budget (`memory_budget`, or Estimators.memory_budget): the K
particles are drawn in chunks, and a batch whose single particle would not fit is evaluated a few sequences
at a time (`fitting_groups`), down to one sequence and one particle a pass, whose memory grows linearly in T.
The chunks' log-weights are concatenated before the logsumexp, so the estimate combines them exactly.
"""

import math
import os
import time
from typing import Callable, NamedTuple, Optional, Tuple

import numpy as np
import pyro
import torch
from tqdm import tqdm

from pyro_vrnn import data as datasets, models
from pyro_vrnn.infer.objectives import exact_log_likelihood, particle_terms, summarize_log_weights
from pyro_vrnn.infer.smc import particle_filter
from pyro_vrnn.nn.text_window import text_inputs
from pyro_vrnn.train.allocator import freed_memory_kept
from pyro_vrnn.train.checkpoints import check_same_data, load_checkpoint, rebuild, resolve_checkpoint
from pyro_vrnn.train.config import CONDITIONAL_MODELS
from pyro_vrnn.train.process import TrainingError, resolve_device, set_threads

# Peak memory of one vectorized pass over K particles; K is drawn in chunks that fit it. On a CPU: an
# eighth of the memory free now, between these bounds; on a GPU, a quarter of its free memory. Fewer,
# larger chunks amortize Pyro's per-site work.
CPU_MEMORY_BUDGET = (2**28, 2**32)  # 256 MiB to 4 GiB
PASS_RESERVE_BYTES = 2**25  # what a pass takes whatever its size: an emission block, the allocator's slack
ESTIMATORS = ("elbo", "iwae", "smc", "is")
DEFAULT_ESTIMATORS = ("elbo", "is")
FIGURES = ("elbo", "iwae", "smc", "log_px", "kl", "gap")  # per-sequence figures summarized (log_px: IS)


class Estimators(NamedTuple):
    """What `evaluate_dataset` estimates: `names` among ESTIMATORS; K of IS (and of the ELBO's average); K' of
    IWAE (None: K, the IS number itself); K of SMC (None: K); stepper(vrnn, x, mask) for SMC (a network's .stepper);
    the bytes one vectorized pass may take at its peak (None: `memory_budget` of the device)."""

    names: Tuple[str, ...] = DEFAULT_ESTIMATORS
    num_samples: int = 100
    iwae_particles: Optional[int] = None
    smc_particles: Optional[int] = None
    stepper: Optional[Callable] = None
    memory_budget: Optional[int] = None

    def particles(self, name):
        return {"iwae": self.iwae_particles, "smc": self.smc_particles}.get(name) or self.num_samples


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


def fitting_groups(indices, steps, vrnn, budget):
    """`indices` (a batch's sequences, padded to `steps`) in groups of as many as one particle's pass over them
    fits `budget` bytes, at least one each: what bounds a pass over long sequences (MuseData's 4,273 steps)."""
    most = max(1, (budget - PASS_RESERVE_BYTES) // (bytes_per_cell(vrnn) * max(1, steps)))
    return [indices[i : i + most] for i in range(0, len(indices), most)]


@torch.no_grad()
def importance_terms(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None, budget=None, **condition):
    """(log p(x | z^k), log q(z^k | x) - log p(z^k), closed-form KL along z^k) [K, B] for K = num_samples particles
    (objectives.particle_terms), drawn `chunk_size` at a time (default: what fits `budget` bytes, itself by
    default `memory_budget`); log w = the first minus the second."""
    budget = budget or memory_budget(x.device)
    chunk_size = chunk_size or default_chunk_size(num_samples, x.shape[0], x.shape[1], vrnn, budget)
    chunks = [
        particle_terms(model, guide, vrnn, x, mask, min(chunk_size, num_samples - start), **condition)
        for start in range(0, num_samples, chunk_size)
    ]
    return tuple(torch.cat(terms) for terms in zip(*chunks))


def importance_log_weights(model, guide, vrnn, x, mask, num_samples=100, chunk_size=None, budget=None, **condition):
    """log w [K, B] for K = num_samples particles, drawn `chunk_size` at a time."""
    log_likelihood, log_q_minus_log_p, _ = importance_terms(
        model, guide, vrnn, x, mask, num_samples, chunk_size, budget, **condition
    )
    return log_likelihood - log_q_minus_log_p


@torch.no_grad()
def estimate_log_likelihood(
    model, guide, vrnn, x, mask, num_samples=100, chunk_size=None, latent=True, budget=None, **condition
):
    """Per-sequence {"elbo", "log_px", "ess", "kl"} [B] tensors (float64) for one padded batch.

    latent=False (the RNN baselines): exact log p(x), returned as both elbo and log_px, ess None, kl 0.
    """
    if not latent:
        exact = exact_log_likelihood(model, vrnn, x, mask, **condition)
        return {"elbo": exact, "log_px": exact, "ess": None, "kl": torch.zeros_like(exact)}
    log_likelihood, log_q_minus_log_p, kl = importance_terms(
        model, guide, vrnn, x, mask, num_samples, chunk_size, budget, **condition
    )
    return summarize_log_weights(log_likelihood - log_q_minus_log_p, kl)


@torch.no_grad()
def estimate_batch(model, guide, vrnn, x, mask, estimators, chunk_size=None, latent=True, condition=None):
    """Per-sequence [B] float64 tensors for one padded batch: elbo, log_px (IS), kl, ess from the IS particles
    (drawn when elbo or is is asked for, or iwae with the same K); iwae; smc and smc_resamples. condition: the
    programs' further keyword arguments (the batch's text for a model conditioned on it)."""
    names, condition = estimators.names, condition or {}
    if not latent:
        exact = estimate_log_likelihood(model, guide, vrnn, x, mask, latent=False, **condition)
        return dict(exact, **{name: exact["log_px"] for name in ("iwae", "smc") if name in names})
    result, iwae_k, budget = {}, estimators.particles("iwae"), estimators.memory_budget
    if {"elbo", "is"} & set(names) or ("iwae" in names and iwae_k == estimators.num_samples):
        result = estimate_log_likelihood(
            model, guide, vrnn, x, mask, estimators.num_samples, chunk_size, budget=budget, **condition
        )
    if "iwae" in names:  # IS with K' particles: the same number as IS when K' = K
        result["iwae"] = (
            result["log_px"]
            if iwae_k == estimators.num_samples
            else summarize_log_weights(
                importance_log_weights(model, guide, vrnn, x, mask, iwae_k, chunk_size, budget, **condition)
            )["log_px"]
        )
    if "smc" in names:
        smc = particle_filter(estimators.stepper(vrnn, x, mask), estimators.particles("smc"))
        result.update(smc=smc.log_evidence, smc_resamples=smc.resamples.double())
    return result


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
    return ratio, float(math.sqrt((residual**2).sum() / (n * (n - 1))) / lengths.mean())


def summarize(per_sequence, lengths, exact, num_samples, estimators=None):
    """The report's figures from per-sequence arrays (elbo, log_px, kl, ess; iwae, smc, smc_resamples) and
    the sequence lengths: each per sequence and per time step with its standard error; the gap
    log p(x) - ELBO (how far the bound is from the estimate: the guide's distance from the posterior);
    the ESS; the estimators asked for and their particles (`Estimators`)."""
    estimators = estimators or Estimators(num_samples=num_samples)
    figures = {
        "exact": exact,
        "num_samples": None if exact else num_samples,
        "sequences": len(lengths),
        "steps": int(np.sum(lengths)),
        "estimators": list(estimators.names),
        **{f"{name}_particles": None if exact else estimators.particles(name) for name in ("iwae", "smc")},
    }
    if "log_px" in per_sequence and "elbo" in per_sequence:
        per_sequence = dict(per_sequence, gap=np.asarray(per_sequence["log_px"]) - np.asarray(per_sequence["elbo"]))
    for key in FIGURES:
        if key in per_sequence:
            figures[f"{key}_per_seq"], figures[f"{key}_per_seq_stderr"] = mean_and_stderr(per_sequence[key])
            figures[f"{key}_per_step"], figures[f"{key}_per_step_stderr"] = ratio_and_stderr(per_sequence[key], lengths)
    ess = per_sequence.get("ess")
    figures["ess_mean"] = None if ess is None else float(np.mean(ess))
    figures["ess_min"] = None if ess is None else float(np.min(ess))
    if "smc_resamples" in per_sequence:
        figures["smc_resamples_per_seq"] = float(np.mean(per_sequence["smc_resamples"]))
    return figures


@torch.no_grad()
def evaluate_dataset(
    model,
    guide,
    vrnn,
    dataset,
    latent,
    num_samples=100,
    batch_size=32,
    chunk_size=None,
    device="cpu",
    progress=False,
    estimators=None,
):
    """Evaluate every sequence of a SequenceDataset; returns (summary dict, per-sequence dict of arrays
    in the dataset's order). Batches hold sequences of similar length (sorted), so little is padded.
    estimators: an `Estimators` (default: the ELBO and IS with num_samples particles)."""
    estimators = estimators or Estimators(num_samples=num_samples)
    num_samples = estimators.num_samples
    lengths = np.asarray(dataset.lengths)
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if latent:  # long sequences a few at a time, so that one particle's pass fits the budget
        # measured once: the groups and every batch's chunks are sized to the same number
        estimators = estimators._replace(memory_budget=estimators.memory_budget or memory_budget(device))
        budget = estimators.memory_budget
        batches = [group for b in batches for group in fitting_groups(b, int(lengths[b].max()), vrnn, budget)]
    per_sequence = {}
    start = time.time()
    # argument checks cost time and were done in training; freed_memory_kept: pyro_vrnn/train/allocator.py
    with pyro.validation_enabled(False), freed_memory_kept():
        for indices in tqdm(batches, disable=not progress, desc="evaluating", unit="batch", dynamic_ncols=True):
            x, mask = datasets.pad_batch([dataset[int(i)] for i in indices])
            x, mask = x.to(device), mask.to(device)
            condition = text_inputs(vrnn, dataset, indices, device)  # {} or the lines' text
            result = estimate_batch(model, guide, vrnn, x, mask, estimators, chunk_size, latent, condition)
            for key, values in result.items():
                if values is not None:
                    per_sequence.setdefault(key, np.zeros(len(lengths)))[indices] = values.cpu().numpy()
    summary = summarize(per_sequence, lengths, exact=not latent, num_samples=num_samples, estimators=estimators)
    summary["seconds"] = time.time() - start
    per_sequence["length"] = lengths
    return summary, per_sequence


def evaluate_checkpoint(
    path,
    split=None,
    num_samples=100,
    batch_size=None,
    chunk_size=None,
    device="cpu",
    data_dir=None,
    seed=0,
    progress=False,
    estimators=DEFAULT_ESTIMATORS,
    iwae_particles=None,
    smc_particles=None,
    memory_budget_bytes=None,
):
    """Load a checkpoint (file or run directory), evaluate it on a split of its dataset; returns the
    summary dict (with model, dataset, split, checkpoint) and the per-sequence arrays.

    split None: test, or valid where the data set has no test split (IAM-OnDB with its official lists:
    the authors trained on every list but validation set 1 and reported on that). estimators: names
    among ESTIMATORS, with iwae_particles and smc_particles (default num_samples; see `Estimators`);
    memory_budget_bytes: the peak of one vectorized pass (default `memory_budget`)."""
    for flag, value in (
        ("num-samples", num_samples),
        ("batch-size", batch_size),
        ("chunk-size", chunk_size),
        ("iwae-particles", iwae_particles),
        ("smc-particles", smc_particles),
        ("memory-budget", memory_budget_bytes),
    ):
        if value is not None and value < 1:
            raise TrainingError(f"--{flag} is {value}; it must be at least 1")
    unknown = [name for name in estimators if name not in ESTIMATORS]
    if unknown or not estimators:
        raise TrainingError(f"unknown --estimators {' '.join(unknown)}; choose among {', '.join(ESTIMATORS)}")
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
    if "smc" in estimators and latent and config.model in CONDITIONAL_MODELS:  # no particle filter reads text
        raise TrainingError(f"--estimators smc: {config.model} has no particle filter; choose among elbo, iwae, is")
    plan = Estimators(
        tuple(dict.fromkeys(estimators)),
        num_samples,
        iwae_particles,
        smc_particles,
        lambda network, x, mask: network.stepper(x, mask, config.guide),
        memory_budget_bytes,
    )
    pyro.set_rng_seed(seed)
    summary, per_sequence = evaluate_dataset(
        model,
        guide,
        vrnn,
        dataset,
        latent,
        num_samples,
        batch_size or config.batch_size,
        chunk_size,
        device,
        progress,
        plan,
    )
    summary = {
        "checkpoint": path,
        "model": config.model,
        "dataset": config.dataset,
        "split": split,
        "step": state["progress"]["step"],
        "device": str(device),
        "units": units(info["kind"]),
        **summary,
    }
    return summary, per_sequence


def units(kind):
    """What the log-likelihoods are in: binary and token data are scored as they are, real values after the
    standardization that training saw (the training split's mean and standard deviation)."""
    return "nats" if kind in ("binary", "tokens") else "nats of the normalized data"
