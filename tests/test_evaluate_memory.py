"""Evaluation in bounded memory (pyro_vrnn/infer/evaluate.py): a pass over K' particles x B sequences x T steps is sized
to a budget, the particles drawn in chunks and a batch of long sequences split into groups, so that MuseData's
4,273 steps evaluate on a small machine; the estimates are the same whatever the budget."""

import numpy as np
import pytest
from conftest import load_script
from test_evaluate import linear_gaussian

from pyro_vrnn.infer import evaluate
from pyro_vrnn.infer.evaluate import PASS_RESERVE_BYTES, Estimators, bytes_per_cell, evaluate_dataset, fitting_groups


class Sequences:
    """A stand-in for SequenceDataset: sequence i is x[i, :length_i]."""

    def __init__(self, x, mask):
        self.x, self.lengths = x, mask.sum(1).tolist()

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return self.x[i, : self.lengths[i]]


def test_a_batch_is_split_into_groups_whose_single_particle_pass_fits():
    model, guide, vrnn, *_ = linear_gaussian()
    cell = bytes_per_cell(vrnn)
    indices = np.arange(10)
    for fits in (1, 3, 4, 10, 50):
        groups = fitting_groups(indices, 800, vrnn, PASS_RESERVE_BYTES + fits * 800 * cell)
        assert [len(g) for g in groups] == [min(fits, 10 - i) for i in range(0, 10, fits)]
        assert np.concatenate(groups).tolist() == indices.tolist()  # every sequence once, in order
    # a budget too small for one sequence still evaluates it, one at a time; twice the steps, half the group
    assert [len(g) for g in fitting_groups(indices, 800, vrnn, PASS_RESERVE_BYTES)] == [1] * 10
    budget = PASS_RESERVE_BYTES + 8 * 800 * cell
    assert len(fitting_groups(indices, 1600, vrnn, budget)[0]) == 4


@pytest.mark.parametrize("guide_name", ["filtering", "smoothing"])
def test_the_smallest_budget_gives_the_estimates_of_one_pass(monkeypatch, guide_name):
    """With the exact posterior as the guide every estimate is deterministic, so the figures of a budget that
    lets each pass hold one particle of one sequence (30 passes for 6 sequences x K = 5) equal those of one pass
    over all: the chunks and groups go back to their sequences, and their weights combine exactly."""
    model, guide, vrnn, x, mask, exact, _ = linear_gaussian(guide=guide_name)
    passes = []
    particle_terms = evaluate.particle_terms

    def counted(model, guide, vrnn, x, mask, num_samples):
        passes.append((num_samples, x.shape[0]))
        return particle_terms(model, guide, vrnn, x, mask, num_samples)

    monkeypatch.setattr(evaluate, "particle_terms", counted)
    data = Sequences(x, mask)

    def run(budget):
        plan = Estimators(
            ("elbo", "iwae", "smc", "is"),
            5,
            5,
            5,
            lambda v, x, m: v.stepper(x, m, guide_name),
            budget,
        )
        passes.clear()
        summary, per_sequence = evaluate_dataset(model, guide, vrnn, data, True, batch_size=6, estimators=plan)
        return summary, per_sequence, list(passes)

    whole, whole_sequences, whole_passes = run(2**30)
    small, small_sequences, small_passes = run(1)
    assert whole_passes == [(5, 6)] and small_passes == [(1, 1)] * 30
    for key in ("elbo", "iwae", "smc", "log_px"):
        np.testing.assert_allclose(small_sequences[key], whole_sequences[key], rtol=1e-6, atol=1e-5)  # float32
        np.testing.assert_allclose(small_sequences[key], exact.numpy(), rtol=1e-5, atol=1e-4)
        assert small[f"{key}_per_step"] == pytest.approx(exact.sum().item() / mask.sum().item(), abs=1e-5)
    assert small["steps"] == int(mask.sum()) == whole["steps"]


def test_the_per_step_figure_is_the_sum_over_sequences_over_the_total_steps():
    """The music literature's normalization (Pyro's examples/dmm.py: the summed loss over the test sequences
    divided by the sum of their lengths): 10 + 30 nats over 1 + 3 steps is 10 a step, not the mean of 10 and 10/1."""
    ratio, _ = evaluate.ratio_and_stderr([-10.0, -30.0], [1, 3])
    assert ratio == -10.0
    ratio, _ = evaluate.ratio_and_stderr([-10.0, -60.0], [1, 3])
    assert ratio == -17.5 and ratio != np.mean([-10.0, -20.0])


def test_a_budget_below_one_is_refused_before_anything_loads(tmp_path):
    with pytest.raises(evaluate.TrainingError, match=r"^--memory-budget is 0; it must be at least 1$"):
        evaluate.evaluate_checkpoint(str(tmp_path / "no-run"), memory_budget_bytes=0)


def test_evaluate_ll_passes_its_budget_in_bytes(tmp_path, monkeypatch):
    script = load_script("evaluate_ll")
    seen = {}

    def evaluate_checkpoint(path, **kwargs):
        seen.update(kwargs)
        raise evaluate.TrainingError("stop here")

    monkeypatch.setattr(script, "evaluate_checkpoint", evaluate_checkpoint)
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="stop here"):
        script.main(["--checkpoint", str(tmp_path / "run"), "--memory-budget", "64", "--device", "cpu"])
    assert seen["memory_budget_bytes"] == 64 * 2**20
