"""Training: stochastic variational inference on the VRNN's ELBO (PAPER.md, "Objective").

One loop serves one process and a `torchrun` group alike (world size 1 is not a special case):

    loss_module = Trace_ELBO()(model, guide)      # Pyro's ELBOModule: a torch.nn.Module
    loss = loss_module(x, mask, num_sequences=N)  # -ELBO of the batch, scaled to the N training sequences
    (loss / N).backward(); clip; Adam.step()      # the gradient of the mean per-sequence -ELBO

This is exactly what `pyro.infer.SVI.step` does, written with a torch optimizer and module-local
parameters so that the same module can be wrapped in DistributedDataParallel. The ELBO is the sum
over time steps of reconstruction minus KL; `--elbo meanfield` computes each KL analytically
(TraceMeanField_ELBO, as the paper), and `kl_scale` (poutine.scale in the programs) anneals it.

Checkpoints (`last.pt`, `best.pt`) hold the model, optimizer, config, data statistics, position in
the data and every RNG state, and are written atomically, so a killed run resumes exactly.
"""
import contextlib
import dataclasses
import gc
import json
import math
import os
import signal
import time

import numpy as np
import pyro
import torch
import torch.distributed as dist
import torch.nn as nn
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from tqdm import tqdm

import models
from pyro_vrnn import data as datasets
from pyro_vrnn.config import config_from_dict, config_to_dict
from pyro_vrnn.evaluate import elbo_terms

CHECKPOINT_VERSION = 1


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says what to do."""


class Program(nn.Module):
    """A model or guide function bound to its network, so that Pyro's ELBOModule (and DDP) see the
    parameters as module-local ones, with no global param store involved."""

    def __init__(self, fn, vrnn):
        super().__init__()
        self.fn, self.vrnn = fn, vrnn

    def forward(self, *args, **kwargs):
        return self.fn(self.vrnn, *args, **kwargs)


def make_elbo(name):
    # One particle, as the paper; the only plate is the one over sequences.
    return {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}[name](max_plate_nesting=1)


def resolve_device(name, local_rank=0):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def setup_distributed(device_name):
    """(rank, world_size, device). torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; plain python sets none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def close_process_group():
    """End a torchrun process's group (if any): a process that exits with it alive can abort in gloo's threads."""
    if dist.is_initialized():
        dist.destroy_process_group()


def svi_step(loss_module, optimizer, x, mask, num_sequences, kl_scale=1.0, clip=5.0, validate=False):
    """One SVI step on the mean per-sequence -ELBO of a batch; returns (loss, gradient norm) as floats.

    The plate over sequences scales the batch's -ELBO to `num_sequences` (the training set), and
    dividing by it gives the mean over the batch; under DDP each rank holds part of the batch and
    the gradient average over ranks is the gradient of the mean over the whole batch.
    A non-finite loss or gradient leaves the parameters untouched.
    """
    with pyro.validation_enabled(validate):
        loss = loss_module(x, mask, num_sequences=num_sequences, kl_scale=kl_scale) / num_sequences
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
    loss_value = loss.item()
    if math.isfinite(loss_value) and math.isfinite(grad_norm):
        optimizer.step()
    return loss_value, grad_norm


@contextlib.contextmanager
def frozen_heap():
    """Leave the objects alive now (torch, Pyro, the networks, the data) out of Python's garbage collections.

    Pyro's traces make many small Python objects at every step, and every so often they trigger a full
    collection, which walks the whole heap: about 300,000 objects once torch and Pyro are imported,
    ~0.15 s, some 5% of a training step. Frozen objects are skipped; those made inside are collected
    as usual, and on the way out everything is handed back to the collector.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def make_loss_module(config, model, guide, vrnn, world_size=1, device=None):
    """Pyro's ELBOModule over the model and guide, wrapped in DDP when there are several processes."""
    pyro.settings.set(module_local_params=True)
    loss_module = make_elbo(config.elbo)(Program(model, vrnn), Program(guide, vrnn))
    if world_size > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device is not None and device.type == "cuda" else None)
    return loss_module


def any_rank(flag, device):
    """True on every rank if `flag` is True on any (a signal may reach the ranks at different steps)."""
    tensor = torch.tensor([float(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def all_reduce_sum(values, device):
    """Sum a list of floats over the process group (identity in a single process)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def get_rng_state():
    state = pyro.util.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    state = dict(state)
    cuda = state.pop("cuda", None)
    pyro.util.set_rng_state(state)
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path, state):
    """Write to a temporary file in the same directory, then rename: a kill never leaves half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise TrainingError(f"no checkpoint at {path}; pass a run directory that holds last.pt or a .pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise TrainingError(f"cannot read checkpoint {path} ({error.__class__.__name__}: {error}); "
                            "it is not a pyro-vrnn checkpoint or it is damaged") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path} is not a pyro-vrnn checkpoint of version {CHECKPOINT_VERSION}; "
                            "retrain with this version of the code")
    return state


def rebuild(state, device="cpu"):
    """(config, model, guide, vrnn, data_info) from a checkpoint, the network loaded and in eval mode."""
    config = config_from_dict(state["config"])
    info = state["data"]
    model, guide, vrnn = models.build(config, info["kind"], info["dim"])
    load_weights(vrnn, state)
    return config, model, guide, vrnn.to(device).eval(), info


def load_weights(vrnn, state):
    try:
        vrnn.load_state_dict(state["model"])
    except RuntimeError as error:
        raise TrainingError(f"checkpoint weights do not fit the network its config describes: {error}") from None


def check_same_data(info, dataset, what):
    """Raise TrainingError unless `dataset` is data of the kind, dimension and normalization that the
    checkpoint's model (its data `info`) was trained on; `what` names the data in the message."""
    if dataset.kind != info["kind"] or dataset.dim != info["dim"]:
        raise TrainingError(f"the model was trained on {info['kind']} data of dimension {info['dim']}, but "
                            f"{what} is {dataset.kind} of dimension {dataset.dim}")
    if not (np.allclose(dataset.mean, info["mean"]) and np.allclose(dataset.std, info["std"])):
        raise TrainingError(f"{what} is normalized differently from the data the model was trained on (was the "
                            "dataset rebuilt from other files?); log-likelihoods would not compare")


def kl_weight(config, epoch, batch, batches_per_epoch):
    """KL annealing: the weight rises linearly from ~0 to 1 over `kl_anneal_epochs` epochs."""
    if config.kl_anneal_epochs <= 0:
        return 1.0
    progress = epoch + (batch + 1) / batches_per_epoch
    return min(1.0, progress / config.kl_anneal_epochs)


def to_device(batch, device):
    x, mask = batch
    return x.to(device, non_blocking=True), mask.to(device, non_blocking=True)


@torch.no_grad()
def validate(model, guide, vrnn, dataset, config, device, rank, world_size):
    """Mean ELBO per sequence and per time step on a split, with its reconstruction and KL parts."""
    vrnn.eval()
    sampler = datasets.LengthBucketSampler(dataset.lengths, config.batch_size, shuffle=False,
                                           rank=rank, world_size=world_size)
    totals = [0.0, 0.0, 0.0, 0.0]  # log-likelihood, kl, sequences, steps
    for indices in sampler:
        x, mask = to_device(datasets.pad_batch([dataset[i] for i in indices]), device)
        log_likelihood, kl = elbo_terms(model, guide, vrnn, x, mask)
        totals[0] += log_likelihood.sum().item()
        totals[1] += kl.sum().item()
        totals[2] += len(indices)
        totals[3] += mask.sum().item()
    vrnn.train()
    log_likelihood, kl, sequences, steps = all_reduce_sum(totals, device)
    elbo = log_likelihood - kl
    return {"elbo_per_seq": elbo / sequences, "elbo_per_step": elbo / steps,
            "log_likelihood_per_seq": log_likelihood / sequences, "kl_per_seq": kl / sequences}


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and stops."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for s in self.previous:
                signal.signal(s, self.handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = {}
        return self

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def train(config, resume=None, quiet=False, after_training=None):
    """Train `config`; resume from `resume` (a run directory or checkpoint) if given. Returns the run dir.

    `after_training(run_dir, state)` runs on rank 0 at the end (figures); kept outside this loop.
    """
    rank, world_size, device = setup_distributed(config.device)
    if config.threads > 0:
        # Tiny matrices gain nothing from more threads, and OpenMP threads that wait on each other
        # make every op cost milliseconds as soon as another process shares the cores.
        torch.set_num_threads(config.threads)
    main = rank == 0
    say = (lambda *a: None) if (quiet or not main) else (lambda *a: print(*a, flush=True))

    if config.data_dir is not None:  # saved in config.json and checkpoints: valid from any directory
        config = dataclasses.replace(config, data_dir=os.path.abspath(os.path.expanduser(config.data_dir)))
    state = None
    if resume is not None:
        path = os.path.join(resume, "last.pt") if os.path.isdir(resume) else resume
        state = load_checkpoint(path)
        run_dir = os.path.dirname(os.path.abspath(path))
    else:
        run_dir = config.out or os.path.join(
            "runs", f"{config.dataset}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    if main:
        os.makedirs(run_dir, exist_ok=True)

    pyro.set_rng_seed(config.seed)  # the same initial weights on every rank
    splits = datasets.load(config.dataset, config.data_dir, verbose=main and not quiet)
    train_set, valid_set = splits["train"], splits["valid"]
    if len(train_set) == 0 or len(valid_set) == 0:
        raise TrainingError(f"dataset {config.dataset!r} has an empty train or valid split")
    model, guide, vrnn = models.build(config, train_set.kind, train_set.dim)
    vrnn.to(device)
    loss_module = make_loss_module(config, model, guide, vrnn, world_size, device)
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=config.lr)
    num_train = len(train_set)
    data_info = {"kind": train_set.kind, "dim": train_set.dim, "name": train_set.name,
                 "mean": np.asarray(train_set.mean).tolist(), "std": np.asarray(train_set.std).tolist(),
                 "median_length": int(np.median(train_set.lengths)), "train_sequences": num_train}

    # Where we are: epoch, batches done in it, global step, early-stopping memory, epoch sums.
    progress = {"epoch": 0, "batch": 0, "step": 0, "best_valid": -math.inf, "bad_epochs": 0,
                "epoch_loss": 0.0, "epoch_sequences": 0.0}
    if state is not None:
        check_same_data(state["data"], train_set, f"{config.dataset} train")
        trained_on = state["data"].get("train_sequences", num_train)
        if num_train != trained_on:
            raise TrainingError(f"{config.dataset} train has {num_train} sequences, the run was trained on "
                                f"{trained_on}; resume with the same data or start a new run")
        load_weights(vrnn, state)
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # --lr may change on resume (e.g. after a divergence)
            group["lr"] = config.lr
        progress = dict(state["progress"])
        done = finished(progress, config)
        if done is not None:  # before the log and config.json are touched
            say(f"nothing to do: {run_dir} {done}; pass a larger value with --resume to go on")
            return run_dir
        saved_world_size = len(state["rng"])  # one random state per process
        if saved_world_size != world_size and progress["batch"] > 0:
            # The position within an epoch indexes the batches of that many processes' shards.
            raise TrainingError(f"{run_dir} stopped mid-epoch with {saved_world_size} process(es); resume it with "
                                f"as many ({resume_command(run_dir, saved_world_size)}): a different number can "
                                f"only take over at the end of an epoch")
        if rank != 0:  # rank 0 carries the epoch's sums so far
            progress.update(epoch_loss=0.0, epoch_sequences=0.0)
        set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
        say(f"resuming {run_dir} at epoch {progress['epoch'] + 1}, step {progress['step']}")
    else:
        pyro.set_rng_seed(config.seed + rank)  # different z samples per rank
    log_path = os.path.join(run_dir, "log.jsonl")
    if main:
        truncate_log(log_path, progress["step"] if state is not None else -1)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config_to_dict(config), f, indent=2)
    say(f"training {config.model} on {config.dataset} ({num_train} sequences, "
        f"{sum(p.numel() for p in vrnn.parameters()):,} parameters) on {device}"
        + (f" x {world_size} processes" if world_size > 1 else "") + f"; run directory {run_dir}")

    def log(record):
        if main:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def checkpoint(name):
        rng = [get_rng_state()]
        if world_size > 1:
            gathered = [None] * world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        progress["elapsed"] = time.time() - start
        # The epoch's sums over every rank: on resume rank 0 carries them and the others start at 0.
        epoch_sums = all_reduce_sum([progress["epoch_loss"], progress["epoch_sequences"]], device)
        if main:
            save_checkpoint(os.path.join(run_dir, name), {
                "version": CHECKPOINT_VERSION, "config": config_to_dict(config), "data": data_info,
                "model": vrnn.state_dict(), "optimizer": optimizer.state_dict(),
                "progress": dict(progress, epoch_loss=epoch_sums[0], epoch_sequences=epoch_sums[1]), "rng": rng})

    sampler = datasets.LengthBucketSampler(train_set.lengths, config.batch_size, shuffle=True,
                                           seed=config.seed, rank=rank, world_size=world_size)
    batches_per_epoch = len(sampler)
    stop_reason = None
    first_step = True
    start = time.time() - progress.get("elapsed", 0.0)  # the log's "time" goes on across resumes
    with StopRequest() as stop, frozen_heap():
        while progress["epoch"] < config.epochs and stop_reason is None:
            epoch = progress["epoch"]
            sampler.set_epoch(epoch)
            bar = tqdm(total=batches_per_epoch, initial=progress["batch"], disable=not main or quiet,
                       desc=f"epoch {epoch + 1}/{config.epochs}", dynamic_ncols=True, leave=True)
            for i, indices in enumerate(sampler):
                if i < progress["batch"]:
                    continue  # already done before the run was resumed
                x, mask = to_device(datasets.pad_batch([train_set[j] for j in indices]), device)
                if not torch.isfinite(x).all():
                    raise TrainingError(f"a training batch holds NaN or inf (sequences {list(indices)[:5]}...); "
                                        f"check the data or rebuild its cache")
                kl_scale = kl_weight(config, epoch, i, batches_per_epoch)
                # Pyro checks shapes and supports on the first step only: clear errors up front,
                # no per-step cost after, and a NaN shows as a NaN loss (handled below).
                loss_value, grad_norm = svi_step(loss_module, optimizer, x, mask, num_train, kl_scale,
                                                 config.clip, validate=first_step)
                if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                    stop_reason = "nan"
                    bar.close()
                    what = f"\nthe loss or its gradient became non-finite at step {progress['step'] + 1}"
                    remedy = "a lower --lr, a smaller --clip, --kl-anneal-epochs 1 or --elbo meanfield"
                    if os.path.isfile(os.path.join(run_dir, "last.pt")):
                        say(f"{what}; {run_dir}/last.pt holds the last good checkpoint. Resume it with {remedy} "
                            f"(as is, it would diverge again): {resume_command(run_dir, world_size)} --lr ...")
                    else:
                        say(f"{what}, before the first checkpoint; start again with {remedy}")
                    break
                first_step = False
                progress["step"] += 1
                progress["batch"] = i + 1
                progress["epoch_loss"] += loss_value * len(indices)
                progress["epoch_sequences"] += len(indices)
                bar.update(1)
                bar.set_postfix(elbo=f"{-loss_value:.1f}", refresh=False)
                if progress["step"] % config.log_every == 0:  # the whole batch, over every rank
                    loss_sum, sequences, steps = all_reduce_sum(
                        [loss_value * len(indices), len(indices), mask.sum().item()], device)
                    log({"event": "train", "epoch": epoch + 1, "step": progress["step"],
                         "elbo_per_seq": -loss_sum / sequences, "elbo_per_step": -loss_sum / steps,
                         "kl_scale": kl_scale, "grad_norm": grad_norm, "time": time.time() - start})
                last_batch = i + 1 == batches_per_epoch
                out_of_steps = config.max_steps is not None and progress["step"] >= config.max_steps
                stop_now = any_rank(stop.requested, device) if world_size > 1 else stop.requested
                if stop_now or (out_of_steps and not last_batch):
                    stop_reason = "signal" if stop_now else "max_steps"
                    checkpoint("last.pt")
                    break
                if progress["step"] % config.checkpoint_every == 0 and not last_batch:
                    checkpoint("last.pt")
            bar.close()
            if stop_reason is not None:
                break
            # End of an epoch: validate, remember the best, maybe stop early.
            train_sums = all_reduce_sum([progress["epoch_loss"], progress["epoch_sequences"]], device)
            metrics = validate(model, guide, vrnn, valid_set, config, device, rank, world_size)
            improved = metrics["elbo_per_seq"] > progress["best_valid"]
            progress.update(epoch=epoch + 1, batch=0, epoch_loss=0.0, epoch_sequences=0.0,
                            bad_epochs=0 if improved else progress["bad_epochs"] + 1,
                            best_valid=max(progress["best_valid"], metrics["elbo_per_seq"]))
            record = {"event": "epoch", "epoch": epoch + 1, "step": progress["step"],
                      "train_elbo_per_seq": -train_sums[0] / max(train_sums[1], 1),
                      **{f"valid_{k}": v for k, v in metrics.items()}, "time": time.time() - start}
            log(record)
            say(f"epoch {epoch + 1}: train ELBO/seq {record['train_elbo_per_seq']:.2f}, "
                f"valid ELBO/seq {metrics['elbo_per_seq']:.2f} ({metrics['elbo_per_step']:.3f}/step)"
                + ("  (best)" if improved else ""))
            if improved:
                checkpoint("best.pt")
            checkpoint("last.pt")
            if progress["bad_epochs"] >= config.patience:
                stop_reason = "early_stopping"
                say(f"no better validation bound for {config.patience} epochs: stopping early")
            elif config.max_steps is not None and progress["step"] >= config.max_steps:
                stop_reason = "max_steps"
            elif progress["epoch"] < config.epochs and (any_rank(stop.requested, device) if world_size > 1
                                                         else stop.requested):
                stop_reason = "signal"  # a Ctrl-C during validation: last.pt is written
    stop_reason = stop_reason or "epochs"
    log({"event": "end", "reason": stop_reason, "step": progress["step"], "time": time.time() - start})
    if main and after_training is not None and stop_reason != "nan":
        after_training(run_dir)
    if dist.is_initialized():
        dist.barrier()
    if stop_reason == "nan":
        raise TrainingError(f"training diverged (non-finite loss); see the message above. Run: {run_dir}")
    if stop_reason == "signal":
        say(f"stopped; resume with: {resume_command(run_dir, world_size)}")
    return run_dir


def resume_command(run_dir, world_size):
    if world_size == 1:
        return f"python run/svi.py --resume {run_dir}"
    return f"the same torchrun command ({world_size} processes in all) with --resume {run_dir}"


def finished(progress, config):
    """What a run has already reached that stops it, said for a message, or None if it can go on."""
    if progress["epoch"] >= config.epochs:
        return f"has trained its {progress['epoch']} epochs (--epochs)"
    if config.max_steps is not None and progress["step"] >= config.max_steps:
        return f"has taken its {progress['step']} steps (--max-steps)"
    if progress["bad_epochs"] >= config.patience:
        return f"stopped early after {progress['bad_epochs']} epochs without a better validation bound (--patience)"
    return None


def truncate_log(path, step):
    """On resume, drop log lines written after the checkpoint: they will be written again."""
    if step < 0 or not os.path.exists(path):
        if step < 0 and os.path.exists(path):
            os.remove(path)
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= step
                and json.loads(line).get("event") != "end"]
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)
