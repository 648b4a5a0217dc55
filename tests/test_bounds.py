"""The K-particle training bounds (objectives.IWAEELBO, FIVOELBO) and the particle filter they rest on
(pyro_vrnn/infer/smc.py), on small random networks:

  - what Pyro's RenyiELBO(alpha=0) computes under the plate over sequences, against per-sequence weights;
  - IWAE and FIVO with one particle are Trace_ELBO's loss and gradients at the same seed;
  - IWAE with K particles is -(plate scale) sum_b log mean_k w_kb of Pyro's own importance weights;
  - the VRNN stepper without resampling draws Pyro's particles and gives its importance weights;
  - each sequence resamples on its own; padding steps add nothing and never resample.
"""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import ROOT, SMALL_SIZES, build, make_data
from pyro.infer import RenyiELBO, Trace_ELBO

from pyro_vrnn import data as datasets
from pyro_vrnn.benchmarks import plain_forms as reference
from pyro_vrnn.infer.objectives import particle_log_weights
from pyro_vrnn.infer.record import Record
from pyro_vrnn.infer.smc import particle_filter
from pyro_vrnn.nn.srnn_networks import SRNNStepper
from pyro_vrnn.nn.vrnn_networks import VRNNStepper
from pyro_vrnn.train.checkpoints import load_checkpoint
from pyro_vrnn.train.config import config_from_dict, make_config
from pyro_vrnn.train.loop import train
from pyro_vrnn.train.svi_step import Program, make_elbo, validate


def loss_and_grads(module, vrnn, x, mask, seed, **kwargs):
    pyro.set_rng_seed(seed)
    loss = module(x, mask, record=Record(), **kwargs)
    grads = torch.autograd.grad(loss, list(vrnn.parameters()), allow_unused=True)
    return loss, grads


def assert_same_numbers(a, b, rtol=1e-5, atol=1e-6):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.allclose(loss_a, loss_b, rtol=rtol), (loss_a, loss_b)
    for g, e in zip(grads_a, grads_b):
        assert (g is None) == (e is None)
        if g is not None:
            assert torch.allclose(g, e, rtol=1e-4, atol=1e-5 + 2e-6 * e.abs().max()), (g, e)


def test_renyi_elbo_keeps_the_sequences_apart_but_puts_the_plate_scale_inside_the_exponent():
    """RenyiELBO(alpha=0, K, vectorized) under our plate: with the whole data set in the batch (scale 1) it is
    sum_b log mean_k w_kb, per sequence, not the pooled log mean_k prod_b w_kb; with the plate scaled to
    N = 40 sequences (s = 10) it is sum_b log mean_k w_kb^s, not s sum_b log mean_k w_kb, which IWAEELBO is.
    It has no differentiable_loss either, so it cannot be the ELBOModule that training wraps."""
    config, model, guide, vrnn = build("vrnn-gauss", "real", 4)
    x, mask = make_data("real", dim=4)
    k, renyi = 5, RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    pyro.set_rng_seed(0)
    log_w = particle_log_weights(model, guide, vrnn, x, mask, k)  # [K, B], Pyro's own weights
    per_sequence = (torch.logsumexp(log_w, 0) - math.log(k)).sum().item()
    pooled = (torch.logsumexp(log_w.sum(1), 0) - math.log(k)).item()
    scale_inside = (torch.logsumexp(10 * log_w, 0) - math.log(k)).sum().item()
    assert per_sequence == pytest.approx(-151.748, abs=1e-3) and pooled == pytest.approx(-184.595, abs=1e-3)
    pyro.set_rng_seed(0)
    assert -renyi.loss(model, guide, vrnn, x, mask, record=Record()) == pytest.approx(per_sequence, rel=1e-6)
    pyro.set_rng_seed(0)
    scaled = -renyi.loss(model, guide, vrnn, x, mask, num_sequences=40, record=Record())
    assert scaled == pytest.approx(scale_inside, rel=1e-6) and scaled == pytest.approx(-1473.771, abs=1e-2)
    pyro.set_rng_seed(0)
    iwae = -make_elbo("iwae", particles=k).loss(model, guide, vrnn, x, mask, num_sequences=40, record=Record())
    assert iwae == pytest.approx(10 * per_sequence, rel=1e-6) and iwae == pytest.approx(-1517.485, abs=1e-2)
    with pytest.raises(AttributeError, match="differentiable_loss"):
        renyi(Program(model, vrnn), Program(guide, vrnn))(x, mask, record=Record())


@pytest.mark.parametrize(
    "name,kind,scoring,guide_name",
    [
        ("vrnn-gmm", "handwriting", "batched", "filtering"),
        ("vrnn-gauss", "real", "steps", "smoothing"),
        ("vrnn-i-gauss", "binary", "batched", "smoothing"),
        ("srnn", "real", "batched", "smoothing"),
        ("srnn-gmm", "handwriting", "steps", "smoothing"),
    ],
)
def test_iwae_and_fivo_with_one_particle_are_trace_elbo(name, kind, scoring, guide_name):
    """K = 1: IWAE's log mean of one weight is its log; FIVO's filter cannot resample (ESS = 1): both are the
    one-sample ELBO, value and gradient, scaled by the plate as Trace_ELBO's (N = 40 of a batch of 4)."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, scoring, guide=guide_name)
    x, mask = make_data(kind, dim=dim)
    programs = (Program(model, vrnn), Program(guide, vrnn))
    expected = loss_and_grads(Trace_ELBO(max_plate_nesting=1)(*programs), vrnn, x, mask, 5, num_sequences=40)
    iwae = make_elbo("iwae", particles=1)(*programs)
    fivo = make_elbo("fivo", particles=1, guide=guide_name)(*programs)
    assert_same_numbers(loss_and_grads(iwae, vrnn, x, mask, 5, num_sequences=40), expected)
    assert_same_numbers(loss_and_grads(fivo, vrnn, x, mask, 5, num_sequences=40), expected)


def test_iwae_is_the_per_sequence_bound_of_pyros_importance_weights():
    """K = 6 particles drawn as vectorized_importance_weights draws them (the same seed, the same numbers):
    loss = -(N / B) sum_b [log sum_k w_kb - log K]."""
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    x, mask = make_data("handwriting")
    loss, _ = loss_and_grads(
        make_elbo("iwae", particles=6)(Program(model, vrnn), Program(guide, vrnn)), vrnn, x, mask, 2, num_sequences=12
    )
    pyro.set_rng_seed(2)
    log_w = particle_log_weights(model, guide, vrnn, x, mask, 6)
    expected = -3 * (torch.logsumexp(log_w, 0) - math.log(6)).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert (torch.logsumexp(log_w, 0) - math.log(6) > log_w.mean(0)).all()  # tighter than the ELBO estimate


def test_a_kl_weight_is_refused_by_the_particle_bounds():
    config, model, guide, vrnn = build("vrnn-gauss", "real", 4)
    x, mask = make_data("real", dim=4)
    for elbo in (make_elbo("iwae", particles=3), make_elbo("fivo", particles=3)):
        with pytest.raises(ValueError, match="KL weight"):
            elbo(Program(model, vrnn), Program(guide, vrnn))(x, mask, kl_scale=0.5, record=Record())


@pytest.mark.parametrize(
    "name,kind,cell,guide_name",
    [
        ("vrnn-gmm", "handwriting", "lstm", "filtering"),
        ("vrnn-gmm", "handwriting", "lstm", "smoothing"),
        ("vrnn-gauss", "real", "gru", "filtering"),
        ("vrnn-i-gauss", "real", "gru", "smoothing"),
    ],
)
def test_the_stepper_without_resampling_gives_pyros_importance_weights(name, kind, cell, guide_name):
    """Same seed, no resampling (ess_threshold 0): the stepper draws the particles the Pyro guide draws under
    the particle plate, and the filter's final log-weights are Pyro's log w [K, B]; its estimate is IS's."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, cell=cell, guide=guide_name)
    x, mask = make_data(kind, dim=dim, steps=5)
    pyro.set_rng_seed(11)
    expected = particle_log_weights(model, guide, vrnn, x, mask, 3)
    pyro.set_rng_seed(11)
    with torch.no_grad():
        result = particle_filter(vrnn.stepper(x, mask, guide_name), 3, ess_threshold=0.0)
    assert result.log_weights.shape == (3, 4) and result.log_weights.dtype == torch.float64
    assert torch.allclose(result.log_weights, expected, rtol=1e-5, atol=1e-4), (result.log_weights, expected)
    assert torch.allclose(result.log_evidence, torch.logsumexp(expected, 0) - math.log(3), rtol=1e-5, atol=1e-4)
    assert (result.resamples == 0).all() and expected.std(0).min() > 0.1  # the particles differ


@pytest.mark.parametrize(
    "name,kind,cell,guide_name",
    [("vrnn-gmm", "handwriting", "lstm", "filtering"), ("vrnn-gauss", "real", "gru", "smoothing")],
)
def test_the_plain_forms_give_the_bounds_numbers_and_gradients(name, kind, cell, guide_name):
    """plain_forms.py's plain forms (the benchmark's floor), same seed: iwae_loss (both forms; the filtering guide)
    is IWAEELBO's loss and gradients; the inlined filter is particle_filter's estimate and FIVOELBO's loss and
    gradients, with resampling happening (K = 5 on these random networks)."""
    dim = 3 if kind == "handwriting" else 4
    config, model, guide, vrnn = build(name, kind, dim, cell=cell, guide=guide_name)
    x, mask = make_data(kind, dim=dim, steps=8)
    programs, params = (Program(model, vrnn), Program(guide, vrnn)), list(vrnn.parameters())

    def plain(loss_fn, seed):
        pyro.set_rng_seed(seed)
        loss = loss_fn()
        return loss, torch.autograd.grad(loss, params, allow_unused=True)

    iwae = loss_and_grads(make_elbo("iwae", particles=5)(*programs), vrnn, x, mask, 1, num_sequences=40)
    for form in reference.FORMS if guide_name == "filtering" else ():  # the ELBO's plain forms are the paper's guide
        assert_same_numbers(plain(lambda: reference.iwae_loss(vrnn, x, mask, 5, 40, form), 1), iwae)
    fivo = loss_and_grads(
        make_elbo("fivo", particles=5, guide=guide_name)(*programs), vrnn, x, mask, 2, num_sequences=40
    )
    smoothing = guide_name == "smoothing"
    assert_same_numbers(plain(lambda: reference.fivo_loss(vrnn, x, mask, 5, 40, smoothing), 2), fivo)
    with torch.no_grad():
        pyro.set_rng_seed(3)
        filtered = particle_filter(vrnn.stepper(x, mask, guide_name), 5)
        pyro.set_rng_seed(3)
        inlined = reference.smc_log_evidence(vrnn, x, mask, 5, smoothing)
    assert filtered.resamples.sum() >= 4
    assert torch.allclose(filtered.log_evidence, inlined, rtol=1e-6, atol=1e-5), (filtered.log_evidence, inlined)


class ToyStepper:
    """z_t ~ N(0, 1) proposed from the prior, log p(x_t | z_t) = c_b z_t: sequence b's weights spread as c_b
    grows (c = 0: equal weights). The state carries each particle's running sum of z, its whole past."""

    def __init__(self, c, mask):
        self.c, self.mask = c, mask

    def initial_state(self, num_particles):
        return (self.c.new_zeros(num_particles, len(self.c)),)

    def proposal(self, t, state):
        return dist.Normal(state[0].new_zeros(()), 1.0).expand(state[0].shape)

    def transition(self, t, state, z):
        return dist.Normal(0.0, 1.0).log_prob(z), self.c * z, (state[0] + z,)

    def reorder(self, state, ancestors):
        return (state[0].gather(0, ancestors),)


@pytest.mark.parametrize("resampling", ["systematic", "multinomial"])
def test_each_sequence_resamples_on_its_own_and_padding_adds_nothing(resampling):
    """Equal weights (c = 0) never resample and estimate exactly log 1 = 0; spread weights (c = 2) resample;
    a sequence that ends at step 3 has, in a batch of 8 steps, the estimate, resamplings and particles of the
    same filter run for 3 steps only (the same draws): its padding steps add nothing and never resample."""
    c = torch.tensor([0.0, 2.0, 2.0])
    mask = torch.tensor([[True] * 8, [True] * 8, [True] * 3 + [False] * 5])
    torch.manual_seed(0)
    full = particle_filter(ToyStepper(c, mask), 16, resampling)
    torch.manual_seed(0)
    short = particle_filter(ToyStepper(c, mask[:, :3]), 16, resampling)
    assert full.log_evidence[0].item() == pytest.approx(0.0, abs=1e-12) and full.resamples[0] == 0
    assert full.resamples[1] >= 3 and full.log_evidence.dtype == torch.float64
    assert full.log_evidence[2].item() == pytest.approx(short.log_evidence[2].item(), abs=1e-12)
    assert full.resamples[2] == short.resamples[2] <= 2  # before steps 2 and 3 at most
    assert torch.allclose(full.log_weights[:, 2], short.log_weights[:, 2])
    # the estimate of p(x) = prod_t E exp(c z_t) = exp(T c^2 / 2) for c = 2, T = 8: log 16, within Monte Carlo error
    assert abs(full.log_evidence[1].item() - 16.0) < 4.0


def test_a_model_without_a_stepper_is_one_line():
    """The stepper comes from the network: the VRNN's, the SRNN's; an RNN baseline has no latent to filter."""
    config, model, guide, vrnn = build("rnn-gauss", "real", 4)
    x, mask = make_data("real", dim=4)
    with pytest.raises(ValueError, match="^a model without latent variables has nothing to filter"):
        vrnn.stepper(x, mask, "filtering")
    assert isinstance(build("vrnn-gauss", "real", 4)[3].stepper(x, mask, "filtering"), VRNNStepper)
    assert isinstance(build("srnn", "real", 4)[3].stepper(x, mask), SRNNStepper)


# ---- through the training loop ---------------------------------------------------------------

TINY = dict(SMALL_SIZES, hidden=24, log_every=1)


@pytest.mark.parametrize("elbo,guide_name", [("iwae", "filtering"), ("fivo", "smoothing")])
def test_a_particle_bound_trains_through_the_loop_and_resumes_exactly(tmp_path, hershey_cache, elbo, guide_name):
    """train.py's loop with --elbo iwae / fivo --particles 4: the steps log a finite bound; a run stopped after
    2 steps and resumed to 3 ends with the parameters of a run of 3 (resampling draws included)."""
    common = dict(model="vrnn-gmm", elbo=elbo, particles=4, guide=guide_name, epochs=100, **TINY)
    straight = train(make_config("hershey", out=str(tmp_path / "straight"), max_steps=3, **common), quiet=True)
    stopped = train(make_config("hershey", out=str(tmp_path / "stopped"), max_steps=2, **common), quiet=True)
    config = config_from_dict(load_checkpoint(os.path.join(stopped, "last.pt"))["config"])
    assert (config.elbo, config.particles) == (elbo, 4)
    resumed = train(dataclasses.replace(config, max_steps=3), resume=stopped, quiet=True)
    a, b = (load_checkpoint(os.path.join(run, "last.pt")) for run in (straight, resumed))
    assert a["progress"]["step"] == b["progress"]["step"] == 3
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    with open(os.path.join(straight, "log.jsonl")) as f:
        records = [json.loads(line) for line in f if '"train"' in line]
    assert len(records) == 3 and all(math.isfinite(r["elbo_per_seq"]) and r["elbo_per_seq"] < 0 for r in records)


@pytest.mark.parametrize(
    "flags,message",
    [
        (dict(particles=4), "--particles 4 needs --elbo iwae or fivo; --elbo trace takes one sample"),
        (
            dict(elbo="fivo", particles=4, kl_anneal_epochs=1.0),
            "--kl-anneal-epochs weighs the KL term, which --elbo fivo",
        ),
        (
            dict(elbo="iwae", particles=4, free_bits=0.5),
            "--free-bits weighs the KL term, which --elbo iwae does not have",
        ),
        (dict(elbo="iwae", model="rnn-gmm"), "--elbo iwae needs latent variables; rnn-gmm's log-likelihood is exact"),
        (dict(elbo="fivo", particles=0), "--particles is 0; it must be at least 1"),
    ],
)
def test_settings_a_particle_bound_cannot_use_are_one_line(flags, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make_config("hershey", **flags)


@pytest.mark.parametrize("dataset", ["chorales", "speech-demo", "prompts"])
@pytest.mark.parametrize("elbo", ["iwae", "fivo"])
def test_a_presets_kl_levers_give_way_to_a_particle_bound(dataset, elbo):
    """The presets anneal the KL weight or grant free bits for the ELBO; under --elbo iwae / fivo they are
    dropped (the bound has no KL term), while every other setting of the preset stays."""
    preset = make_config(dataset)
    assert preset.kl_anneal_epochs > 0 or preset.free_bits > 0  # each of these presets sets a lever
    bound = make_config(dataset, elbo=elbo, particles=4)
    assert (bound.kl_anneal_epochs, bound.free_bits) == (0, 0)
    kept = dataclasses.replace(bound, elbo=preset.elbo, particles=preset.particles, kl_anneal_epochs=0, free_bits=0)
    assert kept == dataclasses.replace(preset, kl_anneal_epochs=0, free_bits=0)


DDP_SCRIPT = """
import sys, torch, pyro
sys.path.insert(0, {root!r})
from pyro_vrnn import models
from pyro_vrnn.train.config import make_config
from pyro_vrnn.train.process import close_process_group, exit_at_once, setup_distributed
from pyro_vrnn.train.svi_step import make_loss_module, svi_step

rank, world_size, device = setup_distributed("cpu")
pyro.set_rng_seed(rank)
config = make_config("test", model="vrnn-gmm", hidden=12, z_dim=3, x_features=6, z_features=6, enc_hidden=6,
                     prior_hidden=6, dec_hidden=6, components=2, elbo="fivo", particles=3, guide="smoothing")
model, guide, vrnn = models.build(config, "handwriting", 3)
loss_module = make_loss_module(config, model, guide, vrnn, world_size, device)
assert isinstance(loss_module, torch.nn.parallel.DistributedDataParallel)
optimizer = torch.optim.Adam(vrnn.parameters(), lr=0.01)
x = torch.cat([torch.bernoulli(torch.full((4, 9, 1), 0.2)), torch.randn(4, 9, 2)], -1)
mask = torch.arange(9)[None, :] < torch.tensor([9, 4, 7, 2])[:, None]
loss, grad_norm = svi_step(loss_module, optimizer, x, mask, num_sequences=100)
flat = torch.cat([p.detach().reshape(-1) for p in vrnn.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(world_size)]
torch.distributed.all_gather(gathered, flat)
if rank == 0:
    print("RESULT", loss, grad_norm, max((g - flat).abs().max().item() for g in gathered))
torch.distributed.barrier()
close_process_group()
exit_at_once()  # as run/svi.py leaves (process.exit_at_once says why)
"""


def test_fivo_trains_under_ddp_unchanged(tmp_path):
    """torchrun, 2 ranks with their own sequences and particles: DDP wraps the FIVO ELBOModule as it wraps
    Trace_ELBO's, and after one step both ranks hold the same parameters (the gradients were averaged)."""
    script = tmp_path / "fivo_ddp.py"
    script.write_text(DDP_SCRIPT.format(root=ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    run = subprocess.run(
        command, capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert run.returncode == 0, run.stderr[-3000:]
    loss, grad_norm, spread = map(
        float, next(line for line in run.stdout.splitlines() if line.startswith("RESULT")).split()[1:]
    )
    assert math.isfinite(loss) and loss > 0 and grad_norm > 0 and spread == 0.0


def test_validation_reports_the_trained_bound(small_handwriting):
    """validate(..., bound): the mean IWAE / FIVO bound per sequence and per step beside the ELBO; with K = 8 on
    an untrained network (widely spread weights) both bounds sit well above the one-sample ELBO."""
    valid = datasets.load("hdf5", data_dir=small_handwriting, verbose=False)["valid"]
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    for name in ("iwae", "fivo"):
        pyro.set_rng_seed(0)
        metrics = validate(model, guide, vrnn, valid, 8, torch.device("cpu"), bound=make_elbo(name, particles=8))
        assert metrics["bound_per_seq"] > metrics["elbo_per_seq"] + 1, (name, metrics)
        steps = int(valid.lengths.sum())
        assert metrics["bound_per_step"] == pytest.approx(metrics["bound_per_seq"] * len(valid) / steps)


def test_validation_builds_no_autograd_graph(small_handwriting):
    """validate scores without gradients: a K-particle bound built under autograd would hold every particle's graph
    for nothing (a decorator once slid off validate onto the function above it)."""
    valid = datasets.load("hdf5", data_dir=small_handwriting, verbose=False)["valid"]
    config, model, guide, vrnn = build("vrnn-gmm", "handwriting", 3)
    bound, graphs = make_elbo("iwae", particles=4), []
    per_sequence = bound.per_sequence

    def recording(*args, **kwargs):
        result = per_sequence(*args, **kwargs)
        graphs.append((torch.is_grad_enabled(), result[0].requires_grad))
        return result

    bound.per_sequence = recording
    validate(model, guide, vrnn, valid, 8, torch.device("cpu"), bound=bound)
    assert graphs and all(state == (False, False) for state in graphs)
    assert torch.is_grad_enabled()  # and the caller's state is restored
