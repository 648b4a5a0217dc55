"""Table 1 of Chung et al. (2015): train the five models with one budget and several seeds, evaluate them
sequence by sequence, and test the paper's claims with paired differences.

    python run/table1.py                                     # the embedded handwriting set, seeds 0 and 1
    python run/table1.py --dataset prompts --jobs 2          # real recorded speech, two trainings at a time
    python run/table1.py --dataset chorales --seeds 0 1 2 --models rnn-gauss vrnn-gauss
    python run/table1.py --dataset iam --data-dir ~/iam --epochs 20 --hidden 1200   # any flag of run/svi.py

Each (model, seed) is trained as run/svi.py would, into OUT/<model>/seed-<s>/, then evaluated on --split
(default: test, or valid where the data set has none): the ELBO (the paper's ">=" numbers), the
importance-sampled log p(x) ("~"; exact for the RNN baselines), the KL term, the gap log p(x) - ELBO and
the effective sample size. A killed table resumes: finished runs and evaluations are reused.

The claims, tested on the sequences of the split (each sequence's numbers averaged over the seeds, then
the mean difference between two models and its standard error across sequences):
  1. VRNN-Gauss > RNN-Gauss      2. VRNN-Gauss >= VRNN-I-Gauss
  3. VRNN-GMM >= RNN-GMM         4. log p(x) >= ELBO (IS estimate over the bound), for every VRNN
A claim holds when the difference is more than two standard errors in its favour, is a tie within two,
and fails beyond two against it. Each latent model's KL per step is judged too (latent_verdicts): below
COLLAPSED_KL_PER_STEP its latents collapsed; within 5% of its run's --free-bits the clamp holds it there, which is
no evidence that z carries information. Writes OUT/table1.md and OUT/table1.json.

Every figure is also given per time step, the measure of the music literature (STORN, the SRNN, the DMM,
FIVO, Pyro's examples/dmm.py): the sum over the split's sequences divided by their total number of steps
(not the mean of per-sequence averages, which would weigh a short sequence's steps more).

--estimators iwae smc (with --iwae-particles, --smc-particles) adds the IWAE bound and the particle
filter's estimate (FIVO's evaluation) as columns beside the ELBO and IS, which are always computed (the
claims rest on them); pyro_vrnn/infer/evaluate.py defines them.
"""

import argparse
import collections
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import active_children, get_context

from pyro_vrnn.train.interrupts import Terminated, exit_interrupted, exit_status, one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import numpy as np

from pyro_vrnn.data import DATASETS, DataError
from pyro_vrnn.data.tempfiles import temp_path
from pyro_vrnn.infer.evaluate import ESTIMATORS, evaluate_checkpoint
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.config import MODEL_NAMES, TABLE1_MODELS, config_from_dict, make_config
from pyro_vrnn.train.flag_checks import FlagError, check_at_least_one, check_output_dir, check_seed
from pyro_vrnn.train.flags import add_config_flags, overrides as flag_overrides
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.process import Interrupted, TrainingError

PAPER_NAMES = {
    "rnn-gauss": "RNN-Gauss",
    "rnn-gmm": "RNN-GMM",
    "vrnn-i-gauss": "VRNN-I-Gauss",
    "vrnn-gauss": "VRNN-Gauss",
    "vrnn-gmm": "VRNN-GMM",
    "srnn": "SRNN",
    "srnn-gmm": "SRNN-GMM",
}
CLAIMS = [("vrnn-gauss", "rnn-gauss", ">"), ("vrnn-gauss", "vrnn-i-gauss", ">="), ("vrnn-gmm", "rnn-gmm", ">=")]
# KL per time step (nats) below which a model's latents count as collapsed onto the prior. The KL term bounds what z
# tells about x (I(x; z) <= E_x KL(q(z | x) || p(z)), Hoffman & Johnson 2016): at 0.01 nats a step, a 100-step sequence
# gets at most 1 nat from z, less than two fair coin flips for the whole sequence. The VRNNs that use z carry about
# 100 times more (0.9-1.3 nats a step on JSB, docs/benchmarks.md); the collapsed ones of docs/results.md 0.003-0.024.
COLLAPSED_KL_PER_STEP = 0.01
# A KL per step within this fraction of the run's --free-bits is held there by the clamp (FreeBitsELBO counts any
# KL below the floor as the floor, so the optimizer is not pushed above it): it says nothing about what z carries.
FREE_BITS_TOLERANCE = 0.05
# What a run of the table may be given anew (more training, another machine); any other flag that differs from the
# run's own config is refused, as run/svi.py --resume refuses it: the table would report the run's old settings.
RESUMABLE = ("epochs", "max_steps", "patience", "device", "threads", "checkpoint_every", "log_every")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="hershey", choices=sorted(DATASETS), help="default: hershey (embedded)")
    p.add_argument("--data-dir", help="where the dataset's files are (licensed sets)")
    p.add_argument(
        "--models",
        nargs="+",
        default=list(TABLE1_MODELS),
        choices=MODEL_NAMES,
        metavar="MODEL",
        help="a subset of the five models (default: all), and the SRNNs (srnn, srnn-gmm) beside them",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="training and evaluation seeds (default 0 1)")
    p.add_argument("--split", choices=("valid", "test"), help="default: test, or valid where the data set has none")
    p.add_argument("--num-samples", "-k", type=int, default=100, help="importance samples K per sequence (default 100)")
    p.add_argument("--eval-batch-size", type=int, help="sequences per evaluation batch (default: the run's)")
    p.add_argument(
        "--estimators",
        nargs="+",
        choices=ESTIMATORS,
        default=["elbo", "is"],
        help="columns of the table: elbo, iwae, smc, is (elbo and is are always computed)",
    )
    p.add_argument("--iwae-particles", type=int, help="K' of the IWAE column (default --num-samples: the IS number)")
    p.add_argument("--smc-particles", type=int, help="particles of the SMC column (default --num-samples)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time, each in its own process (default 1)")
    p.add_argument("--out", help="table directory (default runs/table1-<dataset>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no training progress")
    add_config_flags(p, seed=False)
    return p.parse_args(argv)


def job_config(args, model, seed, run_dir):
    """The run's config: the data set's preset and the flags, or, for a run that exists, its own."""
    last = os.path.join(run_dir, "last.pt")
    if os.path.exists(last):
        config = config_from_dict(load_checkpoint(last)["config"])
        for key, value in flag_overrides(args, exclude=("data_dir", "out")).items():
            if key in RESUMABLE:
                setattr(config, key, value)
            elif value != getattr(config, key):
                raise TrainingError(
                    f"--{key.replace('_', '-')} {value} differs from {getattr(config, key)} of the table's run "
                    f"{run_dir}; drop it to go on with this table, or pass another --out for a new one"
                )
        return config, run_dir
    return make_config(
        args.dataset,
        model=model,
        seed=seed,
        data_dir=args.data_dir,
        out=run_dir,
        **flag_overrides(args, exclude=("dataset", "data_dir", "out")),
    ), None


Job = collections.namedtuple("Job", "model seed run_dir config resume")


def table_jobs(args, table_dir):
    """A Job for each (model, seed): every run's config made, or read from its last.pt (once), and checked before
    any training (config.check_config; a run of this table given other sizes), not in its job after others began."""
    jobs = []
    for model in args.models:
        for seed in args.seeds:
            run_dir = os.path.join(table_dir, model, f"seed-{seed}")
            jobs.append(Job(model, seed, run_dir, *job_config(args, model, seed, run_dir)))
    return jobs


def estimators(args):
    """The estimators to compute: elbo and is (the claims), then those asked for."""
    return tuple(dict.fromkeys(("elbo", "is", *args.estimators)))


def evaluation_name(args):
    """evaluation-<split>-k<K>[-iwae<K'>][-smc<K>].json: a finished evaluation is reused only for the same ones."""
    extra = "".join(
        f"-{name}{getattr(args, name + '_particles') or args.num_samples}"
        for name in ("iwae", "smc")
        if name in args.estimators
    )
    return f"evaluation-{args.split or 'default'}-k{args.num_samples}{extra}.json"


STOPPED = None  # in the worker processes of run_all: an Event, set once any job of the table has stopped


def share_stop(stopped):
    """A worker's start: the table's stop Event; a process group of its own, so that a signal to the table's group (a
    Ctrl-C at the terminal, a scheduler's SIGTERM) reaches the table alone, which hands each worker one Ctrl-C
    (run_all); and a Ctrl-C ignored while the worker waits for a job (an idle worker killed by it would break the
    pool, which then kills the others mid-checkpoint)."""
    global STOPPED
    STOPPED = stopped
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_job(args, job):
    """Train (or finish) one run and evaluate it; returns its evaluation (summary and per-sequence lists), or None
    in a worker process after the table has stopped (a job the pool had already handed over does not start)."""
    if STOPPED is None:
        return train_and_evaluate(args, job)
    if STOPPED.is_set():
        return None
    signal.signal(signal.SIGINT, signal.default_int_handler)  # at work: a Ctrl-C stops the training, as in svi.py
    try:
        return train_and_evaluate(args, job)
    except BaseException:  # a Ctrl-C (every worker gets it) or a failure: the other workers start nothing new
        STOPPED.set()
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def train_and_evaluate(args, job):
    """`job`: a Job, its config read by main (from the run's last.pt where there is one) before any training."""
    run_dir, config, seed = job.run_dir, job.config, job.seed
    done = os.path.join(run_dir, evaluation_name(args))
    quiet = args.quiet or args.jobs > 1
    train(config, resume=job.resume, quiet=quiet, overwrite=job.resume is None)  # no last.pt: nothing to keep
    if os.path.exists(done) and os.path.getmtime(done) >= os.path.getmtime(os.path.join(run_dir, "last.pt")):
        with open(done) as f:
            return json.load(f)
    summary, per_sequence = evaluate_checkpoint(
        run_dir,
        split=args.split,
        num_samples=args.num_samples,
        batch_size=args.eval_batch_size,
        data_dir=args.data_dir,
        device=config.device,
        seed=seed,
        progress=not quiet,
        estimators=estimators(args),
        iwae_particles=args.iwae_particles,
        smc_particles=args.smc_particles,
    )
    result = {"summary": summary, "per_sequence": {k: np.asarray(v).tolist() for k, v in per_sequence.items()}}
    with open(temp_path(done), "w") as f:  # a killed writer's is removed when the run is next opened (run_directory.py)
        json.dump(result, f)
    os.replace(temp_path(done), done)
    return result


def run_all(args, jobs, table_dir):
    """{(model, seed): evaluation} of each Job, trained `args.jobs` at a time."""
    results = {}
    if args.jobs == 1:
        for job in jobs:
            print(f"== {PAPER_NAMES[job.model]}, seed {job.seed}: {job.run_dir}", flush=True)
            results[job.model, job.seed] = run_job(args, job)
            say_done(job.model, job.seed, results[job.model, job.seed])
        return results
    context = get_context("spawn")
    stopped = context.Event()
    pool = ProcessPoolExecutor(args.jobs, mp_context=context, initializer=share_stop, initargs=(stopped,))
    try:
        futures = {pool.submit(run_job, args, job): (job.model, job.seed) for job in jobs}
        print(f"training {len(jobs)} runs, {args.jobs} at a time, into {table_dir}", flush=True)
        for future in futures:  # in order; each line as soon as its run and those before it are done
            model, seed = futures[future]
            results[model, seed] = future.result()
            say_done(model, seed, results[model, seed])
    except BaseException as stop:  # a Ctrl-C or SIGTERM (Terminated) to the table, or a run that failed
        stopped.set()  # the queued runs do not start
        if isinstance(stop, KeyboardInterrupt):
            ctrl_c_to_workers()  # the running trainings checkpoint and stop
        while True:
            try:
                pool.shutdown(wait=True, cancel_futures=True)
                break
            except KeyboardInterrupt:  # a second signal: the workers stop at once, their last checkpoints kept
                ctrl_c_to_workers()
        if isinstance(stop, KeyboardInterrupt) and any(stopped_training(future) for future in futures):
            raise Interrupted("a training stopped", exit_status(stop)) from None
        raise
    pool.shutdown()
    return results


def ctrl_c_to_workers():
    """A Ctrl-C to each worker process (in their own process groups, they get signals from the table only): a
    training checkpoints and stops, a worker waiting for a job ignores it."""
    for worker in active_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGINT)


def stopped_training(future):
    """Whether the job of `future` is a training that a signal stopped (its last.pt written)."""
    return future.done() and not future.cancelled() and isinstance(future.exception(), Interrupted)


def say_done(model, seed, result):
    """One line a finished run: each figure per sequence, and per time step in brackets."""
    s = result["summary"]

    def figure(key):
        return f"{s[f'{key}_per_seq']:.1f} ({s[f'{key}_per_step']:.3f}/step)"

    extra = "".join(
        f", {name.upper()} {figure(name)}" for name in ("iwae", "smc") if f"{name}_per_seq" in s and not s["exact"]
    )
    print(
        f"   {PAPER_NAMES[model]} seed {seed} ({s['split']}): ELBO {figure('elbo')}{extra}, log p(x) {figure('log_px')}"
        + (" (exact)" if s["exact"] else f", KL {s['kl_per_seq']:.2f}, ESS {s['ess_mean']:.1f}/{s['num_samples']}"),
        flush=True,
    )


def mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), (float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None)


def per_sequence(results, model, seeds, key):
    """[sequences] of `key`, each sequence's value averaged over the seeds."""
    return np.mean([results[model, seed]["per_sequence"][key] for seed in seeds], axis=0)


def verdict(diff, se, relation):
    if se is None or se == 0:
        return "holds" if diff > 0 else "tie" if diff == 0 else "fails"
    if diff > 2 * se:
        return "holds"
    if diff >= -2 * se:
        return "tie (holds as >=)" if relation == ">=" else "tie: not shown"
    return "fails"


def latent_verdicts(rows):
    """One line for each latent model whose latents collapsed (KL per step below COLLAPSED_KL_PER_STEP) or whose KL
    sits at its run's free-bits floor (within FREE_BITS_TOLERANCE of row["free_bits"]); rows without latents and
    latents in use get no line."""
    lines = []
    for model, row in rows.items():
        if row["exact"]:
            continue
        kl, floor = row["kl_per_step"], row.get("free_bits", 0.0)
        name = PAPER_NAMES[model]
        if kl < COLLAPSED_KL_PER_STEP:
            lines.append(f"{name}: latents collapsed (KL {kl:.4f} nats a step < {COLLAPSED_KL_PER_STEP})")
        if floor > 0 and abs(kl - floor) <= FREE_BITS_TOLERANCE * floor:
            lines.append(
                f"{name}: KL at the free-bits floor ({kl:.4f} nats a step, --free-bits {floor:g}): "
                "not evidence that z carries information"
            )
    return lines


def tabulate(results, args, free_bits=None):
    """Rows per model and the claims; `free_bits`: {model: its runs' --free-bits}, for latent_verdicts."""
    seeds, lengths = args.seeds, None
    rows, claims = {}, []
    for model in args.models:
        lengths = np.asarray(results[model, seeds[0]]["per_sequence"]["length"], dtype=np.float64)
        row = {"exact": results[model, seeds[0]]["summary"]["exact"], "free_bits": (free_bits or {}).get(model, 0.0)}
        keys = [key for key in ("iwae", "smc") if key in args.estimators]
        for key in ("elbo", *keys, "log_px", "kl", "gap"):
            values = (
                per_sequence(results, model, seeds, key)
                if key != "gap"
                else (per_sequence(results, model, seeds, "log_px") - per_sequence(results, model, seeds, "elbo"))
            )
            row[f"{key}_per_seq"], row[f"{key}_per_seq_se"] = mean_se(values)
            row[f"{key}_per_step"] = float(values.sum() / lengths.sum())
        row["seed_log_px_per_seq"] = [results[model, s]["summary"]["log_px_per_seq"] for s in seeds]
        row["ess"] = None if row["exact"] else float(np.mean([results[model, s]["summary"]["ess_mean"] for s in seeds]))
        rows[model] = row
    for a, b, relation in CLAIMS:
        if a in rows and b in rows:
            d = per_sequence(results, a, seeds, "log_px") - per_sequence(results, b, seeds, "log_px")
            diff, se = mean_se(d)
            per_seed = [
                float(
                    np.mean(
                        np.asarray(results[a, s]["per_sequence"]["log_px"])
                        - np.asarray(results[b, s]["per_sequence"]["log_px"])
                    )
                )
                for s in seeds
            ]
            claims.append(
                {
                    "claim": f"{PAPER_NAMES[a]} {relation} {PAPER_NAMES[b]}",
                    "diff_per_seq": diff,
                    "se": se,
                    "diff_per_step": float(d.sum() / lengths.sum()),
                    "per_seed": per_seed,
                    "verdict": verdict(diff, se, relation),
                }
            )
    for model, row in rows.items():
        if not row["exact"]:
            claims.append(
                {
                    "claim": f"{PAPER_NAMES[model]}: log p(x) >= ELBO",
                    "diff_per_seq": row["gap_per_seq"],
                    "se": row["gap_per_seq_se"],
                    "diff_per_step": row["gap_per_step"],
                    "verdict": verdict(row["gap_per_seq"], row["gap_per_seq_se"], ">="),
                }
            )
    return rows, claims


def markdown(rows, claims, title, extra=()):
    """The table; `extra`: (key, header) of the columns between the ELBO and IS (IWAE, SMC)."""

    def cell(row, key):
        se = row[f"{key}_per_seq_se"]
        return f"{row[f'{key}_per_seq']:.1f}" + ("" if se is None else f" ± {se:.1f}")

    headers = "".join(f" {header} |" for _, header in extra)
    lines = [
        f"**{title}**",
        "",
        f"| model | ELBO (>=) |{headers} log p(x) (~) | per step | KL / seq | KL / step | IS - ELBO | ESS |",
        "|---|---|" + "---|" * len(extra) + "---|---|---|---|---|---|",
    ]
    for model, row in rows.items():
        if row["exact"]:
            lines.append(
                f"| {PAPER_NAMES[model]} | {cell(row, 'log_px')} |"
                + " = |" * len(extra)
                + f" = (exact) | {row['log_px_per_step']:.4f} | - | - | - | - |"
            )
        else:
            columns = "".join(f" {cell(row, key)} |" for key, _ in extra)
            lines.append(
                f"| {PAPER_NAMES[model]} | >= {cell(row, 'elbo')} |{columns} ~ {cell(row, 'log_px')} | "
                f"{row['log_px_per_step']:.4f} | {cell(row, 'kl')} | {row['kl_per_step']:.4f} | "
                f"{cell(row, 'gap')} | {row['ess']:.1f} |"
            )
    lines += ["", *per_step_table(rows, extra)]
    lines += ["", "| claim | difference / seq (± se) | / step | per seed | verdict |", "|---|---|---|---|---|"]
    for c in claims:
        se = "" if c["se"] is None else f" ± {c['se']:.2f}"
        seeds = ", ".join(f"{v:+.1f}" for v in c.get("per_seed", [])) or "-"
        lines.append(
            f"| {c['claim']} | {c['diff_per_seq']:+.2f}{se} | {c['diff_per_step']:+.4f} | {seeds} | {c['verdict']} |"
        )
    latents = latent_verdicts(rows)
    if latents:
        lines += ["", "Latents (KL per step; seeds averaged per sequence):", "", *(f"- {line}" for line in latents)]
    return "\n".join(lines)


def per_step_table(rows, extra=()):
    """The same figures in the music literature's measure (STORN, SRNN, DMM, FIVO; Pyro's examples/dmm.py):
    nats per time step, the sum over the split's sequences divided by their total number of steps."""
    headers = "".join(f" {header} |" for _, header in extra)
    lines = [
        "Per time step (the sum over the sequences / the total number of steps; seeds averaged per sequence):",
        "",
        f"| model | ELBO (>=) |{headers} log p(x) (~) | KL |",
        "|---|---|" + "---|" * len(extra) + "---|---|",
    ]
    for model, row in rows.items():
        if row["exact"]:
            figure = f" {row['log_px_per_step']:.4f} |"
            lines.append(f"| {PAPER_NAMES[model]} |{figure * (len(extra) + 2)} - |")
        else:
            columns = "".join(f" {row[f'{key}_per_step']:.4f} |" for key in ("elbo", *(k for k, _ in extra), "log_px"))
            lines.append(f"| {PAPER_NAMES[model]} |{columns} {row['kl_per_step']:.4f} |")
    return lines


def again(argv, args, table_dir):
    """This command once more, which takes the table up where it stopped: its --out added if it had none (the
    default is a new directory each time)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "run/table1.py", *argv, *(["--out", table_dir] if args.out is None else [])])


# A SIGTERM (a scheduler's) stops the table as a Ctrl-C does: a training in this process takes it itself
# (StopRequest: it checkpoints and stops); elsewhere it is Terminated, and with --jobs run_all hands the workers a
# Ctrl-C each and waits for them.
@one_line_ctrl_c("finished runs and evaluations stand; run the same command again to go on")
def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    table_dir = args.out or os.path.join("runs", f"table1-{args.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        for seed in args.seeds:
            check_seed(seed, "--seeds")
        if args.jobs < 1 or args.num_samples < 1 or min(args.iwae_particles or 1, args.smc_particles or 1) < 1:
            raise FlagError("--jobs, --num-samples, --iwae-particles and --smc-particles must be at least 1")
        if args.eval_batch_size is not None:  # before the trainings, not after
            check_at_least_one(args.eval_batch_size, "--eval-batch-size")
        check_output_dir(table_dir, "--out")
        jobs = table_jobs(args, table_dir)
        results = run_all(args, jobs, table_dir)
    except Interrupted as stop:  # a training stopped by SIGINT / SIGTERM (a TrainingError, so caught first)
        exit_interrupted(
            f"stopped, last.pt written; resume the table with: {again(argv, args, table_dir)}", stop.exit_code
        )
    except KeyboardInterrupt as stop:  # a second Ctrl-C, or one (or a SIGTERM) while evaluating
        exit_interrupted(
            f"{'terminated' if isinstance(stop, Terminated) else 'interrupted'}; finished runs and evaluations "
            f"stand; resume the table with: {again(argv, args, table_dir)}",
            exit_status(stop),
        )
    except (DataError, TrainingError, FlagError, ValueError) as error:
        sys.exit(f"error: {error}")
    rows, claims = tabulate(results, args, {job.model: job.config.free_bits for job in jobs})
    first = results[args.models[0], args.seeds[0]]["summary"]
    split, units = first["split"], first.get("units", "nats")
    title = (
        f"Table 1 on {args.dataset} {split}: average log-likelihood per sequence ({units}, ± one "
        f"standard error across sequences; seeds {', '.join(map(str, args.seeds))}; K = {args.num_samples}; "
        f"{(time.time() - start) / 60:.0f} min)"
    )
    extra = [
        (name, f"{name.upper()} K={getattr(args, name + '_particles') or args.num_samples}")
        for name in dict.fromkeys(args.estimators)
        if name in ("iwae", "smc")
    ]
    table = markdown(rows, claims, title, extra)
    print("\n" + table)
    with open(os.path.join(table_dir, "table1.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(table_dir, "table1.json"), "w") as f:
        json.dump(
            {
                "dataset": args.dataset,
                "split": split,
                "seeds": args.seeds,
                "num_samples": args.num_samples,
                "estimators": list(estimators(args)),
                "iwae_particles": args.iwae_particles,
                "smc_particles": args.smc_particles,
                "flags": flag_overrides(args),
                "models": rows,
                "claims": claims,
                "latents": latent_verdicts(rows),
            },
            f,
            indent=2,
        )
    print(f"wrote {os.path.join(table_dir, 'table1.md')} and table1.json")
    return rows, claims


if __name__ == "__main__":
    main()
