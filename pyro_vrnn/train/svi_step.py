"""One SVI step, and one pass of validation: the units the training loop (loop.py) is made of.

    loss_module = Trace_ELBO()(Program(model, vrnn), Program(guide, vrnn))   # Pyro's ELBOModule
    loss = loss_module(x, mask, num_sequences=N, record=Record()) / N        # mean -ELBO per sequence
    loss.backward(); clip_grad_norm_(...); Adam.step()

which is what `pyro.infer.SVI.step` does, with module-local parameters so that the module can be
wrapped in DistributedDataParallel, and with the `Record` that carries the guide's recurrence to the
model (pyro_vrnn/infer/record.py). The ELBO is the one `make_elbo` picks:

    --elbo trace                  StackedTrace_ELBO: Trace_ELBO's estimator, the z_t of all steps scored in
                                  one call (stacked_elbo.py, on Pyro's public trace and replay handlers)
    --elbo trace --scoring steps  Pyro's Trace_ELBO itself
    --elbo meanfield              FreeBitsELBO(0): TraceMeanField_ELBO's, the KL of all steps in one call
                                  (with --scoring steps: Pyro's TraceMeanField_ELBO itself)
    --free-bits L > 0             FreeBitsELBO(L), with either scoring (the chorales preset)
    --elbo iwae / fivo            IWAEELBO / FIVOELBO (objectives.py)

each the same loss and gradients as Pyro's class it names (tests/test_stacked_elbo.py).
"""

import math
import os

import pyro
import torch
import torch.nn as nn
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vrnn import data as datasets
from pyro_vrnn.infer.objectives import FIVOELBO, IWAEELBO, FreeBitsELBO, elbo_terms
from pyro_vrnn.infer.record import Record
from pyro_vrnn.infer.stacked_elbo import StackedTrace_ELBO
from pyro_vrnn.nn.text_window import text_inputs
from pyro_vrnn.train.config import PARTICLE_BOUNDS
from pyro_vrnn.train.process import TrainingError, all_reduce_sum
from pyro_vrnn.train.run_directory import resume_command

ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


class Program(nn.Module):
    """A model or guide function bound to its network, so that Pyro's ELBOModule (and DDP) see the
    parameters as module-local ones, with no global param store involved."""

    def __init__(self, fn, vrnn):
        super().__init__()
        self.fn, self.vrnn = fn, vrnn

    def forward(self, *args, **kwargs):
        return self.fn(self.vrnn, *args, **kwargs)


def make_elbo(name, free_bits=0.0, particles=1, guide="filtering", scoring="batched"):
    """Trace_ELBO ("trace"; with --scoring batched, StackedTrace_ELBO: the same estimator, its z_t sites scored
    in one call, stacked_elbo.py) or TraceMeanField_ELBO ("meanfield", analytic KL); with free bits (> 0 nats a
    step), FreeBitsELBO, whose KL is analytic too and computed for all steps in one call: one particle.
    "iwae": IWAEELBO, "fivo": FIVOELBO with `particles` K, FIVO's particle filter being the network's stepper
    with `guide` (the run's --guide). One plate, over sequences."""
    if name == "iwae":
        return IWAEELBO(particles)
    if name == "fivo":
        return FIVOELBO(particles, guide)
    if free_bits > 0 or (name == "meanfield" and scoring == "batched"):
        return FreeBitsELBO(free_bits, max_plate_nesting=1)  # free_bits 0: TraceMeanField_ELBO, its KL stacked
    if name == "trace" and scoring == "batched":
        return StackedTrace_ELBO(max_plate_nesting=1)
    return ELBOS[name](max_plate_nesting=1)


def make_loss_module(config, model, guide, vrnn, world_size=1, device=None):
    """Pyro's ELBOModule over the model and guide, wrapped in DDP when there are several processes."""
    pyro.settings.set(module_local_params=True)
    elbo = make_elbo(config.elbo, config.free_bits, config.particles, config.guide, config.scoring)
    loss_module = elbo(Program(model, vrnn), Program(guide, vrnn))
    if world_size > 1:
        loss_module = nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[device.index] if device is not None and device.type == "cuda" else None
        )
    return loss_module


def svi_step(loss_module, optimizer, x, mask, num_sequences, kl_scale=1.0, clip=5.0, validate=False, condition=None):
    """One SVI step on the mean per-sequence -ELBO of a batch; returns (loss, gradient norm) as floats.

    The plate over sequences scales the batch's -ELBO to `num_sequences` (the training set), and
    dividing by it gives the mean over the batch; under DDP each rank holds part of the batch and
    the gradient average over ranks is the gradient of the mean over the whole batch.
    A non-finite loss or gradient leaves the parameters untouched. condition: the programs' further
    keyword arguments (the batch's text for a model conditioned on it: text_window.text_inputs).
    """
    with pyro.validation_enabled(validate):
        loss = (
            loss_module(x, mask, num_sequences=num_sequences, kl_scale=kl_scale, record=Record(), **(condition or {}))
            / num_sequences
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
    loss_value = loss.item()
    if math.isfinite(loss_value) and math.isfinite(grad_norm):
        optimizer.step()
    return loss_value, grad_norm


def kl_weight(config, epoch, batch, batches_per_epoch):
    """KL annealing: the weight rises linearly from ~0 to 1 over `kl_anneal_epochs` epochs."""
    if config.kl_anneal_epochs <= 0:
        return 1.0
    progress = epoch + (batch + 1) / batches_per_epoch
    return min(1.0, progress / config.kl_anneal_epochs)


def to_device(batch, device):
    x, mask = batch
    return x.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def check_finite(x, split, indices):
    """A batch with NaN or inf is the data's fault: said in one line before the model sees it (training reads
    `split` "training")."""
    if not torch.isfinite(x).all():
        raise TrainingError(
            f"a {split} batch holds NaN or inf (sequences {list(indices)[:5]}...); check the data or rebuild its cache"
        )


def divergence_advice(x, step, run_dir, config, world_size):
    """Why the loss of `step` on batch x became non-finite, and what to do: (the message to print, the end of the
    error line). The remedies offered are those the run does not use already."""
    largest = x.abs().max().item()
    again = f" (with --overwrite to train into {run_dir.path} again)"
    if largest > 1e4:  # standardized data are O(1): values this large are the data's fault, not the optimizer's
        message = (
            f"\nthe loss became non-finite at step {step} on a batch with values up to {largest:.3g}: "
            f"standardize the data (mean 0, std 1, statistics from train) and start again{again}"
        )
        return message, (
            f" on a batch with values up to {largest:.3g}: the data are not standardized; standardize them "
            f"(mean 0, std 1, statistics from train) and start again{again}"
        )
    remedies = ["a lower --lr", "a smaller --clip"]
    if config.elbo not in PARTICLE_BOUNDS:  # which have no KL term to weigh
        if not config.kl_anneal_epochs:
            remedies.append("--kl-anneal-epochs 1")
        if not config.free_bits and config.elbo != "meanfield":  # free bits take the KL in closed form already
            remedies.append("--elbo meanfield")
    remedy = ", ".join(remedies[:-1]) + " or " + remedies[-1]
    if os.path.isfile(run_dir.file("last.pt")):
        message = (
            f"\nthe loss or its gradient became non-finite at step {step}; {run_dir.path}/last.pt holds "
            f"the last good checkpoint. Resume it with {remedy} (as is, it would diverge again): "
            f"{resume_command(run_dir.path, world_size)} --lr ..."
        )
    else:
        message = (
            f"\nthe loss or its gradient became non-finite at step {step}, before the first checkpoint; "
            f"start again with {remedy}{again}"
        )
    return message, "; see the message above"


@torch.no_grad()
def validate(model, guide, vrnn, dataset, batch_size, device, rank=0, world_size=1, bound=None):
    """Mean ELBO per sequence and per time step on a split, with its reconstruction and KL parts; with a particle
    `bound` (IWAEELBO, FIVOELBO: the run's objective), its mean too ("bound_per_seq"), which training then
    selects the best model and stops early by, as FIVO does."""
    vrnn.eval()
    sampler = datasets.LengthBucketSampler(dataset.lengths, batch_size, shuffle=False, rank=rank, world_size=world_size)
    totals = [0.0, 0.0, 0.0, 0.0, 0.0]  # log-likelihood, kl, sequences, steps, bound
    for indices in sampler:
        x, mask = to_device(datasets.pad_batch([dataset[i] for i in indices]), device)
        check_finite(x, dataset.split, indices)
        condition = text_inputs(vrnn, dataset, indices, device)  # {} or the lines' text
        log_likelihood, kl = elbo_terms(model, guide, vrnn, x, mask, **condition)
        totals[0] += log_likelihood.sum().item()
        totals[1] += kl.sum().item()
        totals[2] += len(indices)
        totals[3] += mask.sum().item()
        if bound is not None:
            totals[4] += bound.per_sequence(model, guide, vrnn, x, mask, **condition)[0].sum().item()
    vrnn.train()
    log_likelihood, kl, sequences, steps, bound_sum = all_reduce_sum(totals, device)
    elbo = log_likelihood - kl
    metrics = {
        "elbo_per_seq": elbo / sequences,
        "elbo_per_step": elbo / steps,
        "log_likelihood_per_seq": log_likelihood / sequences,
        "kl_per_seq": kl / sequences,
        "kl_per_step": kl / steps,
    }
    if bound is not None:
        metrics.update(bound_per_seq=bound_sum / sequences, bound_per_step=bound_sum / steps)
    return metrics
