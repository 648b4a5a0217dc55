"""Training: stochastic variational inference on the VRNN's ELBO (Chung et al. 2015; docs/paper.md).

One loop serves one process and a `torchrun` group alike (world size 1 is not a special case): steps of `svi.svi_step`
(the ELBO that svi.make_elbo picks, as a module; Adam, gradient clipping) over length-bucketed batches. The ELBO is
the sum over time steps of reconstruction minus KL; `--elbo meanfield` computes each KL analytically (as the paper)
and `--kl-anneal-epochs` anneals its weight; `--elbo iwae` / `fivo` with `--particles K` train a K-particle bound
instead (objectives.py), which then also picks the best model on validation.

`Trainer.run` reads in one screen: resume or start, then epochs of steps, each epoch ended by validation, early
stopping and a checkpoint; `--resume` continues exactly where `last.pt` was.
"""

import dataclasses
import math
import os
import sys
import time

import pyro
import torch
import torch.distributed as dist
from tqdm import tqdm

from pyro_vrnn import data as datasets, models
from pyro_vrnn.nn.text_window import text_inputs, training_alphabet
from pyro_vrnn.train.allocator import freed_memory_kept
from pyro_vrnn.train.checkpoints import (
    CHECKPOINT_VERSION,
    Progress,
    check_same_training_data,
    data_info,
    load_checkpoint,
    load_weights,
    vocabulary_size,
)
from pyro_vrnn.train.config import (
    EXACT_MODELS,
    PARTICLE_BOUNDS,
    check_feature_norm_data,
    config_from_dict,
    config_to_dict,
    unused_flags,
)
from pyro_vrnn.train.process import (
    EXIT_CODES,
    Interrupted,
    StopRequest,
    TrainingError,
    all_reduce_sum,
    any_rank,
    get_rng_state,
    network_fits,
    set_rng_state,
    set_threads,
    setup_distributed,
)
from pyro_vrnn.train.replay import replayed_batches
from pyro_vrnn.train.run_directory import RunDirectory, resume_command, resume_path
from pyro_vrnn.train.svi_step import (
    check_finite,
    divergence_advice,
    kl_weight,
    make_elbo,
    make_loss_module,
    svi_step,
    to_device,
    validate,
)


class Trainer:
    """One training run: its process, data, programs, optimizer, run directory and `Progress`."""

    def __init__(self, config, resume=None, quiet=False, overwrite=False, passed=()):
        self.rank, self.world_size, self.device = setup_distributed(config.device)
        set_threads(config.threads)
        self.main = self.rank == 0
        self.quiet = quiet
        self.state = load_checkpoint(resume_path(resume)) if resume is not None else None
        new_out = os.path.join("runs", f"{config.dataset}-{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        out = os.path.dirname(resume_path(resume)) if resume is not None else config.out or new_out
        self.run_dir = RunDirectory(out)
        if config.data_dir is not None:  # saved in config.json and checkpoints: valid from any directory
            config = dataclasses.replace(config, data_dir=os.path.abspath(os.path.expanduser(config.data_dir)))
        if resume is not None:  # the run may have been moved since: it is where it is resumed
            config = dataclasses.replace(config, out=self.run_dir.path)
        self.config = config
        try:
            if self.main:
                self.run_dir.open(resuming=resume is not None, overwrite=overwrite)
            self.build()
            if self.main:  # the flags given that this model, or its data, has no use for
                for note in unused_flags(config, passed, self.train_set.kind):
                    print(note, file=sys.stderr, flush=True)
            if self.state is not None:
                self.progress = self.resume()
            else:
                self.progress = Progress()
                pyro.set_rng_seed(config.seed + self.rank)  # different z samples per rank
            if self.main and resume is None and self.run_dir.holds_a_run():  # open() let it in: --overwrite, or
                if not overwrite:  # left by a run stopped before its first checkpoint (never_checkpointed)
                    self.say(f"{self.run_dir.path} holds a run stopped before its first checkpoint: starting afresh")
                self.run_dir.clear()  # only now: a run that cannot start leaves the old one as it was
        except BaseException:  # bad data, a checkpoint that does not fit, a Ctrl-C: nothing was written
            self.close(abandon=True)
            raise
        self.stop_reason = self.divergence = None
        self.first_step = True

    def say(self, *args):
        if self.main and not self.quiet:
            print(*args, flush=True)

    def build(self):
        c = self.config
        pyro.set_rng_seed(c.seed)  # the same initial weights on every rank
        splits = datasets.load(c.dataset, c.data_dir, verbose=self.main and not self.quiet)
        self.train_set, self.valid_set = splits["train"], splits["valid"]
        if len(self.train_set) == 0 or len(self.valid_set) == 0:
            raise TrainingError(f"dataset {c.dataset!r} has an empty train or valid split")
        if models.MODELS[c.model].network is models.ConditionalVRNN and not c.alphabet:  # what it can write
            longest = max(len(text) for text in self.train_set.texts or [""])
            self.config = c = dataclasses.replace(c, alphabet=training_alphabet(splits.values()), longest_text=longest)
        self.sampler = datasets.LengthBucketSampler(
            self.train_set.lengths, c.batch_size, shuffle=True, seed=c.seed, rank=self.rank, world_size=self.world_size
        )
        try:
            check_feature_norm_data(c, self.train_set.kind, self.train_set.lengths, min(self.sampler.batch_sizes()))
        except ValueError as error:
            raise TrainingError(str(error)) from None
        with network_fits(c, self.device):  # a network too big for the memory: one line, not a traceback
            self.data_info = data_info(self.train_set)
            self.model, self.guide, self.vrnn = models.build(
                c, self.train_set.kind, self.train_set.dim, vocabulary_size(self.data_info)
            )
            self.vrnn.to(self.device)
            self.loss_module = make_loss_module(c, self.model, self.guide, self.vrnn, self.world_size, self.device)
        self.optimizer = torch.optim.Adam(self.vrnn.parameters(), lr=c.lr)

    def resume(self):
        """Load the checkpoint's weights, optimizer, position and random states; check that it fits."""
        state, c = self.state, self.config
        check_same_training_data(state["data"], self.train_set, f"{c.dataset} train")
        load_weights(self.vrnn, state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            progress = Progress(**state["progress"])
        except (KeyError, TypeError, ValueError) as error:  # written by another version, or damaged
            raise TrainingError(
                f"the optimizer state or progress in {self.run_dir.file('last.pt')} does not fit "
                f"this run ({error}); start a new run"
            ) from None
        for group in self.optimizer.param_groups:  # --lr may change on resume (e.g. after a divergence)
            group["lr"] = c.lr
        saved = config_from_dict(state["config"])  # a checkpoint of an older version may lack fields
        scored = [(s.elbo, s.particles) if s.elbo in PARTICLE_BOUNDS else 1 for s in (saved, c)]
        if scored[0] != scored[1]:  # --elbo changed: best_valid is the old objective's score, not comparable
            progress.best_valid, progress.bad_epochs = -math.inf, 0
        saved_world_size = len(state["rng"])  # one random state per process
        if saved_world_size != self.world_size and progress.batch > 0:
            # The position within an epoch indexes the batches of that many processes' shards.
            raise TrainingError(
                f"{self.run_dir.path} stopped mid-epoch with {saved_world_size} process(es); "
                f"resume it with as many ({resume_command(self.run_dir.path, saved_world_size)}): "
                "a different number can only take over at the end of an epoch"
            )
        if self.rank != 0:  # rank 0 carries the epoch's sums so far
            progress.epoch_loss = progress.epoch_sequences = 0.0
        set_rng_state(state["rng"][self.rank] if self.rank < len(state["rng"]) else state["rng"][0])
        return progress

    def run(self, after_training=None):
        """Train until a stopping rule says so; returns the run directory."""
        c, p = self.config, self.progress
        done = p.finished(c)
        if done is not None:  # before the log and config.json are touched
            self.say(f"nothing to do: {self.run_dir.path} {done}; pass a larger value with --resume to go on")
            self.make_missing_figures(after_training)
            return self.run_dir.path
        if self.main:
            self.start_log()
        self.say(
            f"training {c.model} on {c.dataset} ({len(self.train_set)} sequences, "
            f"{sum(q.numel() for q in self.vrnn.parameters()):,} parameters) on {self.device}"
            + (f" x {self.world_size} processes" if self.world_size > 1 else "")
            + f"; run directory {self.run_dir.path}"
        )
        self.start = time.time() - p.elapsed  # the log's "time" goes on across resumes
        with StopRequest() as self.stop, freed_memory_kept():  # no page faults for big tensors (allocator.py)
            while p.epoch < c.epochs and self.stop_reason is None:
                self.stop_reason = self.run_epoch() or self.end_of_epoch()
        return self.finish(after_training)

    def run_epoch(self):
        """The rest of the current epoch; returns why it stopped early ("nan", "signal", "max_steps") or None."""
        c, p = self.config, self.progress
        epoch = p.epoch
        self.sampler.set_epoch(epoch)
        batches = len(self.sampler)
        desc, disable = f"epoch {epoch + 1}/{c.epochs}", not self.main or self.quiet
        bar = tqdm(total=batches, initial=p.batch, disable=disable, desc=desc, dynamic_ncols=True)
        replayed = replayed_batches(self.sampler, epoch, c.replay, c.seed)  # [] a step unless --replay
        try:
            for i, indices in enumerate(self.sampler):
                if i < p.batch:
                    continue  # already done before the run was resumed
                trained = indices + replayed[i]  # the step's batch, and the earlier one --replay mixes in
                x, mask = to_device(datasets.pad_batch([self.train_set[j] for j in trained]), self.device)
                check_finite(x, "training", trained)
                kl_scale = kl_weight(c, epoch, i, batches)
                condition = text_inputs(self.vrnn, self.train_set, trained, self.device)  # {} or the lines' text
                # Pyro checks shapes and supports on the first step only: clear errors up front, no per-step cost.
                loss, grad_norm = svi_step(
                    self.loss_module,
                    self.optimizer,
                    x,
                    mask,
                    len(self.train_set),
                    kl_scale,
                    c.clip,
                    self.first_step,
                    condition,
                )
                self.first_step = False
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    message, self.divergence = divergence_advice(x, p.step + 1, self.run_dir, c, self.world_size)
                    self.say(message)
                    return "nan"
                p.step, p.batch = p.step + 1, i + 1
                p.epoch_loss += loss * len(indices)
                p.epoch_sequences += len(indices)
                bar.update(1)
                bar.set_postfix(elbo=f"{-loss:.1f}", refresh=False)
                if p.step % c.log_every == 0:
                    self.log_train(loss, grad_norm, kl_scale, trained, mask)
                # a stop asked for at the run's very last step lets it finish as it would have
                last_step = (i + 1 == batches and epoch + 1 == c.epochs) or (
                    c.max_steps is not None and p.step >= c.max_steps
                )
                if any_rank(self.stop.requested, self.device) and not last_step:
                    self.checkpoint("last.pt")
                    return "signal"
                if c.max_steps is not None and p.step >= c.max_steps and i + 1 < batches:
                    self.checkpoint("last.pt")
                    return "max_steps"
                if p.step % c.checkpoint_every == 0 and i + 1 < batches:
                    self.checkpoint("last.pt")
        finally:
            bar.close()
        return None

    def end_of_epoch(self):
        """Validate, remember the best, checkpoint; returns why to stop ("early_stopping", ...) or None."""
        c, p = self.config, self.progress
        train_loss, train_sequences = all_reduce_sum([p.epoch_loss, p.epoch_sequences], self.device)
        train_per_seq = -train_loss / max(train_sequences, 1)  # what was maximized, per sequence
        bound = make_elbo(c.elbo, particles=c.particles, guide=c.guide) if c.elbo in PARTICLE_BOUNDS else None
        programs = self.model, self.guide, self.vrnn
        metrics = validate(*programs, self.valid_set, c.batch_size, self.device, self.rank, self.world_size, bound)
        score = metrics.get("bound_per_seq", metrics["elbo_per_seq"])  # the objective trained
        improved = score > p.best_valid
        p.epoch, p.batch, p.epoch_loss, p.epoch_sequences = p.epoch + 1, 0, 0.0, 0.0
        # Early stopping counts from the end of KL annealing: until then the model trains on another objective.
        annealing = p.epoch <= c.kl_anneal_epochs and c.model not in EXACT_MODELS
        p.bad_epochs = 0 if improved or annealing else p.bad_epochs + 1
        p.best_valid = max(p.best_valid, score)
        # what training maximized: the ELBO, or a particle bound, or the ELBO with free bits or a KL weight
        trained, weighed = (f"{c.elbo.upper()}(K={c.particles})" if bound is not None else "ELBO"), ""
        if c.model not in EXACT_MODELS:  # which have no KL term
            weighed = (
                " with free bits" if c.free_bits else " with KL weight" if c.kl_anneal_epochs > p.epoch - 1 else ""
            )
        self.log(
            {
                "event": "epoch",
                "epoch": p.epoch,
                "step": p.step,
                "train_elbo_per_seq": train_per_seq,
                "objective": trained + weighed,  # what train_elbo_per_seq is of
                **{f"valid_{k}": v for k, v in metrics.items()},
                "time": time.time() - self.start,
            }
        )
        self.say(
            f"epoch {p.epoch}: train {trained}/seq {train_per_seq:.2f}{weighed}, valid "
            f"ELBO/seq {metrics['elbo_per_seq']:.2f} ({metrics['elbo_per_step']:.3f}/step), KL/seq "
            f"{metrics['kl_per_seq']:.2f}"
            + (f", valid {c.elbo.upper()}(K={c.particles})/seq {score:.2f}" if bound is not None else "")
            + ("  (best)" if improved else "")
        )
        if improved:
            self.checkpoint("best.pt")
        self.checkpoint("last.pt")
        if p.bad_epochs >= c.patience:
            self.say(f"no better validation bound for {c.patience} epochs: stopping early")
            return "early_stopping"
        if c.max_steps is not None and p.step >= c.max_steps:
            return "max_steps"
        if p.epoch < c.epochs and any_rank(self.stop.requested, self.device):
            return "signal"  # a Ctrl-C during validation: last.pt is written
        return None

    def checkpoint(self, name):
        """Write RUN/name (rank 0), with every rank's random state and the epoch's sums over all ranks."""
        rng = [get_rng_state()]
        if self.world_size > 1:
            gathered = [None] * self.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        p = self.progress
        p.elapsed = time.time() - self.start
        epoch_loss, epoch_sequences = all_reduce_sum([p.epoch_loss, p.epoch_sequences], self.device)
        if self.main:
            self.run_dir.save(
                name,
                {
                    "version": CHECKPOINT_VERSION,
                    "config": config_to_dict(self.config),
                    "data": self.data_info,
                    "model": self.vrnn.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "rng": rng,
                    "progress": dataclasses.asdict(
                        dataclasses.replace(p, epoch_loss=epoch_loss, epoch_sequences=epoch_sequences)
                    ),
                },
            )

    # -- the log, the end, and what goes wrong ------------------------------------------------

    def log(self, record):
        if self.main:
            self.run_dir.log(record)

    def start_log(self):
        if self.state is not None:
            self.run_dir.truncate_log(self.progress.step)  # drop what was logged after the checkpoint
        self.run_dir.write_config(config_to_dict(self.config))

    def log_train(self, loss, grad_norm, kl_scale, indices, mask):
        """A train record for the whole batch, over every rank."""
        loss_sum, sequences, steps = all_reduce_sum([loss * len(indices), len(indices), mask.sum().item()], self.device)
        self.log(
            {
                "event": "train",
                "epoch": self.progress.epoch + 1,
                "step": self.progress.step,
                "elbo_per_seq": -loss_sum / sequences,
                "elbo_per_step": -loss_sum / steps,
                "kl_scale": kl_scale,
                "grad_norm": grad_norm,
                "time": time.time() - self.start,
            }
        )

    def finish(self, after_training):
        reason = self.stop_reason or "epochs"
        self.log({"event": "end", "reason": reason, "step": self.progress.step, "time": time.time() - self.start})
        if reason == "nan":
            raise TrainingError(f"training diverged (non-finite loss){self.divergence}. Run: {self.run_dir.path}")
        if reason == "signal":
            raise Interrupted(
                f"stopped at step {self.progress.step}, last.pt written; resume with: "
                f"{resume_command(self.run_dir.path, self.world_size)}",
                EXIT_CODES.get(self.stop.signal_number, 130),
            )
        if self.main and after_training is not None:
            after_training(self.run_dir.path)
        if dist.is_initialized():
            dist.barrier()
        return self.run_dir.path

    def make_missing_figures(self, after_training):
        """A finished run whose end-of-run pictures were never made (killed while drawing) makes them now."""
        if (
            self.main
            and after_training is not None
            and not all(os.path.exists(self.run_dir.file(name)) for name in ("samples.png", "curves.png"))
        ):
            after_training(self.run_dir.path)

    def close(self, abandon=False):
        if self.main:
            self.run_dir.close(abandon)


def train(config, resume=None, quiet=False, after_training=None, overwrite=False, passed=()):
    """Train `config`, or continue the run `resume` (a run directory or its last.pt); returns the run directory.
    `passed`: the config fields given on the command line, each that the model or its data has no use for noted.

    `after_training(run_dir)` runs on rank 0 at the end (the pictures). A run stopped by a signal raises
    `Interrupted` (its exit_code 130 or 143) after writing last.pt; a diverged one raises TrainingError.
    """
    trainer = Trainer(config, resume, quiet, overwrite, passed)
    try:
        return trainer.run(after_training)
    finally:
        trainer.close()
