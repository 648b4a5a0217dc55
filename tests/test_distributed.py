"""Scale-out: the training loop under torchrun with DistributedDataParallel (gloo, 2 CPU processes).

Two ranks, each with half of a batch, take the same optimisation step as one process with the
whole batch; a 2-rank run of run/svi.py writes one checkpoint and one log, and resumes.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [*TINY, "--threads", "1"]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")

STEP_SCRIPT = textwrap.dedent("""
    import sys, torch, pyro
    sys.path.insert(0, {root!r})
    from pyro_vrnn import models
    from pyro_vrnn.train.config import make_config
    from pyro_vrnn.train.process import close_process_group, exit_at_once, setup_distributed
    from pyro_vrnn.train.svi_step import make_loss_module, svi_step

    rank, world_size, device = setup_distributed("cpu")
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    config = make_config("test", model={model!r}, hidden=12, z_dim=3, x_features=6, z_features=6,
                         enc_hidden=6, prior_hidden=6, dec_hidden=6, components=2)
    model, guide, vrnn = models.build(config, "handwriting", 3)
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.bernoulli(torch.full((8, 9, 1), 0.2), generator=g), torch.randn(8, 9, 2, generator=g)], -1)
    mask = torch.arange(9)[None, :] < torch.tensor([9, 4, 7, 2, 9, 5, 1, 8])[:, None]
    loss_module = make_loss_module(config, model, guide, vrnn, world_size, device)
    optimizer = torch.optim.Adam(vrnn.parameters(), lr=0.01)
    share = 8 // world_size
    rows = slice(rank * share, (rank + 1) * share)
    grads = None
    for _ in range(2):
        svi_step(loss_module, optimizer, x[rows], mask[rows], num_sequences=100, clip=5.0)
        grads = grads or {{n: p.grad.clone() for n, p in vrnn.named_parameters()}}
    if rank == 0:
        torch.save({{"params": vrnn.state_dict(), "grads": grads}}, {out!r})
    if world_size > 1:  # leave together, and as run/svi.py leaves (process.exit_at_once says why)
        torch.distributed.barrier()
        close_process_group()
        exit_at_once()
""")


def torchrun(nproc, *args, timeout=300):
    # --standalone: a local rendezvous on a free port, as `torchrun --standalone` on one machine
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def test_two_ranks_with_half_batches_step_like_one_process_with_the_whole_batch(tmp_path):
    # The RNN baseline has no sampled latents, so both runs compute exactly the same loss.
    results = {}
    for nproc in (1, 2):
        script = tmp_path / f"step{nproc}.py"
        out = tmp_path / f"params{nproc}.pt"
        script.write_text(STEP_SCRIPT.format(root=ROOT, model="rnn-gmm", out=str(out)))
        run = torchrun(nproc, str(script))
        assert run.returncode == 0, run.stderr[-3000:]
        results[nproc] = torch.load(out)
    # The first step's gradient, averaged over the two ranks by DDP, is the whole batch's gradient.
    for name, one in results[1]["grads"].items():
        assert torch.allclose(one, results[2]["grads"][name], rtol=1e-4, atol=1e-7), name
    # After two Adam steps the parameters agree to float tolerance. Adam's first steps move each
    # weight by about lr * sign(gradient), which magnifies rounding in near-zero gradient entries,
    # hence a tolerance of 1% of one step (lr = 0.01).
    for name, one in results[1]["params"].items():
        assert torch.allclose(one, results[2]["params"][name], rtol=0, atol=1e-4), name
    # ...and the step did something: the parameters moved from their initial values.
    script = tmp_path / "init.py"
    script.write_text(
        STEP_SCRIPT.format(root=ROOT, model="rnn-gmm", out=str(tmp_path / "init.pt")).replace(
            "for _ in range(2):", "for _ in range(0):"
        )
    )
    assert torchrun(1, str(script)).returncode == 0
    init = torch.load(tmp_path / "init.pt")["params"]
    moved = max((init[k] - results[1]["params"][k]).abs().max().item() for k in init)
    assert moved > 0.015  # two steps of lr 0.01: far above the tolerance used above


@pytest.mark.parametrize(
    "stop, status, stderr",
    [
        ("None", 0, ""),
        ("SystemExit(130)", 130, ""),
        ("KeyboardInterrupt()", 130, ""),
        ("SystemExit('error: no data')", 1, "error: no data"),
        ("ValueError('a bug')", 1, "ValueError: a bug"),
    ],
)
def test_a_torchrun_process_leaves_with_the_status_and_words_that_raising_would_give(stop, status, stderr):
    """process.exit_at_once, which run/svi.py's torchrun processes leave by: os._exit, with what was printed flushed."""
    script = f"import sys; sys.path.insert(0, {ROOT!r}); from pyro_vrnn.train.process import exit_at_once; "
    script += f"print('trained', end=''); exit_at_once({stop})"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout) == (status, "trained")
    assert stderr in run.stderr and (stderr or not run.stderr)


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_two_rank_run_writes_one_checkpoint_and_one_log_and_resumes(tmp_path, hershey_cache):
    run_dir = tmp_path / "ddp"
    svi = os.path.join(ROOT, "run", "svi.py")
    first = torchrun(
        2, svi, "--model", "vrnn-gauss", "--out", str(run_dir), "--max-steps", "3", "--log-every", "1", *TINY
    )
    assert first.returncode == 0, first.stderr[-3000:]
    files = sorted(os.listdir(run_dir))
    assert [f for f in files if f.endswith(".pt")] == ["last.pt"], files  # written by rank 0 alone
    assert [f for f in files if f.endswith(".jsonl")] == ["log.jsonl"], files
    assert set(files) <= {".lock", "config.json", "last.pt", "log.jsonl", "samples.png", "curves.png"}, files
    assert first.stdout.count("training vrnn-gauss") == 1  # one rank speaks
    assert "x 2 processes" in first.stdout
    assert [r["step"] for r in read_log(run_dir) if r["event"] == "train"] == [1, 2, 3]

    resumed = torchrun(2, svi, "--resume", str(run_dir), "--max-steps", "5")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = torch.load(run_dir / "last.pt", weights_only=False)
    assert state["progress"]["step"] == 5
    assert len(state["rng"]) == 2  # each rank's random state, so each resumes its own stream
    assert [r["step"] for r in read_log(run_dir) if r["event"] == "train"] == [1, 2, 3, 4, 5]
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


def test_a_two_rank_run_stopped_mid_epoch_resumes_to_the_same_log_and_only_with_two_ranks(tmp_path, small_handwriting):
    """96 training lines, 8 per rank: 6 steps an epoch. Stopped at step 3 and resumed, the run logs what an
    uninterrupted one logs (every record summed over both ranks); one process may not take over mid-epoch."""
    svi = os.path.join(ROOT, "run", "svi.py")
    common = [
        "--dataset",
        "hdf5",
        "--data-dir",
        small_handwriting,
        "--model",
        "vrnn-gauss",
        "--epochs",
        "1",
        "--log-every",
        "1",
        *TINY,
    ]
    straight = torchrun(2, svi, "--out", str(tmp_path / "straight"), *common)
    assert straight.returncode == 0, straight.stderr[-3000:]
    part = torchrun(2, svi, "--out", str(tmp_path / "part"), "--max-steps", "3", *common)
    assert part.returncode == 0, part.stderr[-3000:]
    alone = subprocess.run(
        [sys.executable, svi, "--resume", str(tmp_path / "part"), "--max-steps", "100"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    lines = alone.stderr.strip().splitlines()
    assert alone.returncode != 0 and len(lines) == 1 and "stopped mid-epoch with 2 process(es)" in lines[0]
    rest = torchrun(2, svi, "--resume", str(tmp_path / "part"), "--max-steps", "100")
    assert rest.returncode == 0, rest.stderr[-3000:]

    def records(name):
        return [{k: v for k, v in r.items() if k != "time"} for r in read_log(tmp_path / name) if r["event"] != "end"]

    assert len(records("straight")) == 7  # 6 steps and the epoch
    for a, b in zip(records("straight"), records("part"), strict=True):
        assert a.keys() == b.keys() and a["event"] == b["event"] and a.get("objective") == b.get("objective"), (a, b)
        assert all(a[k] == pytest.approx(b[k], rel=1e-6) for k in a if k not in ("event", "objective")), (a, b)
    # The epoch's training ELBO (summed over both ranks) is the mean of the steps' whole-batch ELBOs.
    train = [r["elbo_per_seq"] for r in records("straight")[:6]]
    assert records("straight")[6]["train_elbo_per_seq"] == pytest.approx(sum(train) / 6, rel=1e-6)
