"""The two levers issue 23's item 6 tests: batch normalization in phi_x (`--feature-norm batch`) and experience
replay (`--replay N`). What they do to the scores is in docs/ablations.md; here, that they do what they say."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SMALL_SIZES

from pyro_vrnn import models
from pyro_vrnn.data.dataset import LengthBucketSampler
from pyro_vrnn.nn.normalization import FeatureMLP, MaskedBatchNorm
from pyro_vrnn.nn.vrnn_networks import mlp
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.config import check_config, make_config
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.replay import replayed_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_batch_norm_statistics_are_those_of_the_real_steps_only():
    """In training the features are standardized over the real steps, as torch's BatchNorm1d on those rows alone
    (outputs and running averages), and padding of any length or value changes no real step's feature."""
    torch.manual_seed(0)
    norm = MaskedBatchNorm(5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    reference = torch.nn.BatchNorm1d(5)
    reference.load_state_dict(norm.state_dict())
    h = torch.randn(3, 7, 5) * 3 + 1
    mask = torch.arange(7) < torch.tensor([[7], [4], [2]])  # 13 real steps of 21
    out = norm(h, mask)
    assert torch.allclose(out[mask], reference(h[mask]), atol=1e-5)
    assert torch.allclose(norm.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, reference.running_var, atol=1e-6)
    # the same batch padded 5 steps further, with other values where it was padding before
    longer = torch.cat([h, torch.full((3, 5, 5), 100.0)], 1)
    longer[~torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)] = -50.0
    out_longer = MaskedBatchNorm(5).train()
    out_longer.load_state_dict({**norm.state_dict(), "running_mean": torch.zeros(5), "running_var": torch.ones(5)})
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.bool)], 1)
    assert torch.allclose(out_longer(longer, padded_mask)[padded_mask], out[mask], atol=1e-5)
    # evaluation uses the running averages: a row's feature does not depend on its batch
    norm.eval()
    alone = norm(h[:1, :1], None)
    assert torch.allclose(alone, norm(h, mask)[:1, :1])
    expected = (h[0, 0] - norm.running_mean) / torch.sqrt(norm.running_var + 1e-5) * norm.weight + norm.bias
    assert torch.allclose(alone[0, 0], expected, atol=1e-5)


def test_phi_x_without_normalization_keeps_the_papers_layers_and_checkpoint_keys():
    plain, featured = mlp(3, 8, 2), FeatureMLP(3, 8, 2)
    assert list(plain.state_dict()) == list(featured.state_dict())
    featured.load_state_dict(plain.state_dict())
    x = torch.randn(4, 6, 3)
    assert torch.equal(plain(x), featured(x, torch.ones(4, 6, dtype=torch.bool)))
    normalized = FeatureMLP(3, 8, 2, batch_norm=True)
    assert [type(m).__name__ for m in normalized] == ["Linear", "MaskedBatchNorm", "ReLU"] * 2


def test_a_normalized_vrnn_elbo_ignores_padding():
    """The filtering guide and the batched model pass the mask to phi_x: a batch padded further trains on the
    same ELBO (same loss, same gradients)."""
    from pyro.infer import Trace_ELBO

    from pyro_vrnn.infer.record import Record

    config = make_config("hershey", model="vrnn-gauss", feature_norm="batch", **SMALL_SIZES)
    model, guide, vrnn = models.build(config, "real", 3)
    x = torch.randn(3, 6, 3)
    mask = torch.arange(6) < torch.tensor([[6], [3], [5]])
    x = torch.where(mask[..., None], x, torch.zeros(()))
    losses = []
    for pad in (0, 4):
        xp = torch.cat([x, torch.full((3, pad, 3), 7.0)], 1)
        mp = torch.cat([mask, torch.zeros(3, pad, dtype=torch.bool)], 1)
        torch.manual_seed(1)
        vrnn.zero_grad()
        record = Record()
        loss = Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, vrnn, xp, mp, record=record)
        loss.backward()
        losses.append((loss.item(), vrnn.phi_x[0].weight.grad.clone()))
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-5)
    assert torch.allclose(losses[0][1], losses[1][1], atol=1e-5)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(model="srnn", guide="smoothing"), "Table 1 models"),
        (dict(model="vrnn-gauss", scoring="steps"), "--scoring batched"),
        (dict(model="vrnn-gauss", replay=-1), "--replay is -1"),
    ],
)
def test_the_levers_refuse_what_they_cannot_do(overrides, message):
    feature_norm = "none" if "replay" in overrides else "batch"
    with pytest.raises(ValueError, match=message):
        check_config(make_config("hershey", feature_norm=feature_norm, **overrides))


def test_replay_draws_from_the_last_batches_and_is_a_function_of_seed_and_step():
    sampler = LengthBucketSampler(np.arange(40) % 7 + 1, batch_size=4, seed=3)
    first = replayed_batches(sampler, 0, 3, seed=3)
    assert first[0] == []  # the run's first step has nothing behind it
    epoch0, epoch1 = sampler.batches(0), sampler.batches(1)
    for i, draw in enumerate(first[1:], start=1):
        assert draw in epoch0[max(0, i - 3) : i]
    second = replayed_batches(sampler, 1, 3, seed=3)
    for i, draw in enumerate(second):
        assert draw in (epoch0 + epoch1[:i])[-3:]
    assert second == replayed_batches(sampler, 1, 3, seed=3)
    assert len({tuple(d) for d in second}) > 1  # drawn, not always the same one
    assert replayed_batches(sampler, 1, 0, seed=3) == [[]] * len(sampler)
    # a window longer than an epoch (10 batches here) reaches back over several
    before = [b for e in range(3) for b in sampler.batches(e)]
    fourth = replayed_batches(sampler, 3, 25, seed=3)
    for i, draw in enumerate(fourth):
        assert draw in (before + sampler.batches(3)[:i])[-25:]
    assert any(draw in sampler.batches(0)[5:] + sampler.batches(1) for draw in fourth)  # 2 and 3 epochs back


def test_feature_norm_refuses_tokens_and_batches_of_one_real_step_in_one_line(tmp_path):
    """Checked before the network is built: data of the wrong kind, or a batch that has one step to normalize."""
    from pyro_vrnn.data.schema import write_h5

    tokens = tmp_path / "tokens.h5"
    rng = np.random.default_rng(0)
    seqs = {s: [rng.integers(0, 5, size=(12, 1)) for _ in range(8)] for s in ("train", "valid", "test")}
    write_h5(str(tokens), seqs, "tokens", "tokens", [0], [1], "test", vocabulary=list("abcde"))
    ones = tmp_path / "ones.h5"
    one_step = {s: [rng.normal(size=(1, 2)).astype(np.float32) for _ in range(4)] for s in seqs}
    write_h5(str(ones), one_step, "real", "ones", [0, 0], [1, 1], "test")
    for path, flags, message in (
        (tokens, [], "not tokens"),
        (ones, ["--batch-size", "1"], "needs at least two real steps in every batch"),
    ):
        args = ["--dataset", "hdf5", "--data-dir", str(path), "--feature-norm", "batch", "--out", str(tmp_path / "r")]
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "run", "svi.py"), *args, *flags, "--max-steps", "1"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: --feature-norm batch") and message in lines[-1], result.stderr[-1500:]
        assert "Traceback" not in result.stderr


def test_a_run_with_replay_resumes_to_the_same_parameters(tmp_path, small_handwriting):
    """The buffer is read off the sampler, so a run stopped mid-epoch and resumed trains as the unbroken one."""
    common = dict(model="vrnn-gauss", data_dir=small_handwriting, replay=4, epochs=2, patience=5, **SMALL_SIZES)
    straight = train(make_config("hdf5", out=str(tmp_path / "straight"), **common), quiet=True)
    stopped = str(tmp_path / "stopped")
    train(make_config("hdf5", out=stopped, max_steps=9, **common), quiet=True)  # 6 batches an epoch: mid-epoch 2
    assert load_checkpoint(os.path.join(stopped, "last.pt"))["progress"]["step"] == 9
    train(make_config("hdf5", out=stopped, **common), resume=stopped, quiet=True)
    a = load_checkpoint(os.path.join(straight, "last.pt"))["model"]
    b = load_checkpoint(os.path.join(stopped, "last.pt"))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
