"""The model reuses the guide's recurrence through the Record, and only where it may (pyro_vrnn/infer/record.py).

Replayed on the guide's draws, the model must take every h_t from the record: its recurrence f runs
zero times, and the loss is the loss of a model given no record (which runs f itself). Anywhere else
(another draw, x_t not the data, a model run alone) it must run f itself. The calls of f are counted
with a forward hook, so that a reuse that silently stopped would fail here.
"""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vrnn import models
from pyro_vrnn.infer.record import Record
from pyro_vrnn.train.config import make_config


def build(name="vrnn-gmm", scoring="steps", cell="lstm"):
    torch.manual_seed(0)
    config = make_config(
        "test",
        model=name,
        hidden=8,
        z_dim=3,
        x_features=5,
        z_features=4,
        enc_hidden=6,
        prior_hidden=6,
        dec_hidden=5,
        components=3,
        scoring=scoring,
        cell=cell,
    )
    model, guide, vrnn = models.build(config, "real", 4)
    return model, guide, vrnn


def data(batch=3, steps=6):
    torch.manual_seed(1)
    x = torch.randn(batch, steps, 4)
    mask = torch.ones(batch, steps, dtype=torch.bool)
    mask[1, 4:] = False
    return x, mask


class CallCounter:
    """Counts the calls of a module through a forward hook."""

    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        self.calls += 1


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("scoring", ["steps", "batched"])
def test_a_replayed_model_runs_no_recurrence_and_gives_the_same_loss(scoring, cell):
    model, guide, vrnn = build(scoring=scoring, cell=cell)
    x, mask = data()
    counter = CallCounter(vrnn.rnn)
    record = Record()
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask, record=record)
    assert counter.calls == x.shape[1] and len(record) == x.shape[1]  # the guide: one step of f per time step
    poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(vrnn, x, mask, record=record)
    assert counter.calls == x.shape[1]  # the model replayed on the guide's draws: none

    elbo = Trace_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(7)
    with_record = elbo.loss(model, guide, vrnn, x, mask, record=Record())
    step_model = models.MODELS["vrnn-gmm"].model
    pyro.set_rng_seed(7)
    counter.calls = 0
    without = elbo.loss(step_model, guide, vrnn, x, mask)  # no record: the model runs f itself
    assert counter.calls == 2 * x.shape[1]
    assert with_record == pytest.approx(without, rel=1e-6)


def test_the_model_runs_its_own_recurrence_wherever_the_record_does_not_hold():
    model, guide, vrnn = build(scoring="steps")
    x, mask = data()
    counter = CallCounter(vrnn.rnn)
    record = Record()
    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(guide).get_trace(vrnn, x, mask, record=record)

    # Another draw of z (the model run alone, with the record of a pass it is not replayed on): no reuse.
    counter.calls = 0
    alone = poutine.trace(model).get_trace(vrnn, x, mask, record=record)
    assert counter.calls == x.shape[1]

    # x sampled instead of observed (uncondition), z replayed: h_t depends on the new x_t, so f runs again.
    counter.calls = 0
    sampled = poutine.trace(poutine.uncondition(poutine.replay(model, trace=guide_trace))).get_trace(
        vrnn, x, mask, record=record
    )
    assert counter.calls == x.shape[1]
    assert not torch.equal(sampled.nodes["x_2"]["value"], x[:, 1])

    # Replayed on z_1..z_3 only: the model follows the record there and runs f from step 4 on.
    partial = guide_trace.copy()
    for t in range(4, x.shape[1] + 1):
        partial.remove_node(f"z_{t}")
    counter.calls = 0
    pyro.set_rng_seed(5)
    mixed = poutine.trace(poutine.replay(model, trace=partial)).get_trace(vrnn, x, mask, record=record)
    assert counter.calls == x.shape[1] - 3
    # ... and its numbers are those of a model that runs everything itself on the same draws
    counter.calls = 0
    replay = {name: mixed.nodes[name]["value"] for name in mixed.nodes if name.startswith("z_")}
    expected = poutine.trace(poutine.condition(model, data=replay)).get_trace(vrnn, x, mask)
    assert counter.calls == x.shape[1]
    mixed.compute_log_prob(), expected.compute_log_prob()
    for t in range(1, x.shape[1] + 1):
        for site in (f"x_{t}", f"z_{t}"):
            assert torch.allclose(mixed.nodes[site]["log_prob"], expected.nodes[site]["log_prob"], atol=1e-6)
    assert alone.nodes["z_1"]["value"] is not guide_trace.nodes["z_1"]["value"]


def test_the_batched_form_refuses_to_run_without_the_guides_record():
    model, guide, vrnn = build(scoring="batched")
    x, mask = data()
    with pytest.raises(ValueError, match="guide's record"):
        poutine.trace(model).get_trace(vrnn, x, mask)
    record = Record()
    poutine.trace(guide).get_trace(vrnn, x, mask, record=record)
    with pytest.raises(ValueError, match="not the guide's draw"):
        poutine.trace(model).get_trace(vrnn, x, mask, record=record)  # its own draws, not the guide's
