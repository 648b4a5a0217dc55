"""Trace_ELBO's estimator with the z_t sites of all steps scored in one call, on Pyro's public API.

From one draw z ~ q(z | x), Trace_ELBO estimates the ELBO (docs/paper.md, eq. 10 in the form of eq. 3) as

    sum over the model's sample sites  of  scale * mask * log p_site(value)
  - sum over the guide's sample sites  of  scale * mask * log q_site(value)

scoring each site on its own. A VRNN's programs have one z_t site per time step in each of them, each a
diagonal Normal over [batch, z]: at T = 200 that is 400 small log-density calls, with their autograd
nodes, per batch, where a hand-written loss makes two calls over all steps.

`StackedTrace_ELBO` is built as Pyro's custom-objectives tutorial builds a loss: the guide traced with
`poutine.trace(guide).get_trace(...)`, the model replayed on it with
`poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(...)`, and the sum above computed from
the two traces. Sites are grouped (`stackable_groups`): every group of `DiagNormal` sites of one shape is
scored with one log_prob call on the stacked values and parameters, each site's scale (the plate's, a KL
weight) and mask applied as `pyro.distributions.util.scale_and_mask` applies them; any other site is
scored alone. The loss writes nothing into the traces.

With every guide site reparameterized (the VRNN's and SRNN's guides), the gradient of that sum is
Trace_ELBO's: Trace_ELBO adds score-function terms only for sites drawn without reparameterization. Such
a site is an error here that names `--scoring steps`, which trains Pyro's Trace_ELBO itself. With Pyro's
validation on, the traces get Pyro's checks (`check_model_guide_match`, `check_site_shape`); the loss is
computed the same way. A guide that is a GuideMessenger (an AutoNormalMessenger) runs the model itself
and hands both traces over (`get_traces`).

`FreeBitsELBO` (objectives.py) takes the same traces and replaces log q - log p of the latent pairs with
their closed-form KL; `IWAEELBO` scores the sites of its vectorized particles with the same groups.
tests/test_stacked_elbo.py compares loss and gradients with Trace_ELBO's and counts the log-density calls.
"""

import numbers
from collections import defaultdict

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.elbo import ELBOModule
from pyro.infer.util import is_validation_enabled
from pyro.poutine.guide import GuideMessenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, check_site_shape

from pyro_vrnn.distributions.diag_normal import DiagNormal

NOT_REPARAMETERIZED = (
    "site {name!r} of the guide is drawn without reparameterization, which the stacked scoring has no "
    "score-function term for; train with --scoring steps (Pyro's own Trace_ELBO)"
)


def stackable(site):
    """A DiagNormal site, reparameterized, with a number for scale and a mask no bigger than its batch."""
    fn, mask = site["fn"], site["mask"]
    return (
        type(fn) is DiagNormal
        and fn.has_rsample
        and isinstance(site["scale"], numbers.Number)
        and (not isinstance(mask, torch.Tensor) or mask.dim() < max(fn.loc.dim(), site["value"].dim()))
    )


def stackable_groups(items, sites_of=lambda site: (site,)):
    """`items` (sites; or tuples of sites, with sites_of=tuple) in lists that can be scored in one call: the items
    whose sites are all `stackable`, grouped by their shapes and dtypes, in trace order; every other item alone."""
    groups, alone = defaultdict(list), []
    for item in items:
        sites = sites_of(item)
        if all(stackable(site) for site in sites):
            key = tuple((s["value"].shape, s["value"].dtype, s["fn"].loc.shape, s["fn"].loc.dtype) for s in sites)
            groups[key].append(item)
        else:
            alone.append([item])
    return list(groups.values()) + alone


def broadcast_shape(*sites):
    """The shape that the sites' values and parameters broadcast to, as log_prob and the KL broadcast them."""
    return torch.broadcast_shapes(*(tensor.shape for site in sites for tensor in (site["value"], site["fn"].loc)))


def broadcast_stack(tensors, shape):
    """torch.stack of tensors of one shape, each first broadcast to `shape` if it is smaller (an observed x_t
    [B, D] under an emission with a particle dim [K, B, D]): stacked on a new dim 0, they no longer would."""
    if tensors[0].shape != shape:
        tensors = [tensor.expand(shape) for tensor in tensors]
    return torch.stack(tensors)


def stacked_normal(sites, shape):
    """One DiagNormal whose batch dim 0 runs over `sites` (stackable, of one shape): [S, *shape]."""
    locs = broadcast_stack([site["fn"].loc for site in sites], shape)
    return DiagNormal(locs, broadcast_stack([site["fn"].scale for site in sites], shape))


def stacked_scale(sites, like):
    """The sites' scales (numbers: the plate's, times a KL weight) as a tensor [S] of the dtype of `like`."""
    return like.new_tensor([float(site["scale"]) for site in sites])


def stacked_mask(sites, like):
    """The sites' masks (None: all True) as a bool tensor of the shape of `like` [S, *batch]. A Python bool
    becomes a tensor made on the device (no copy from the host at each site)."""
    true, false = like.new_ones((), dtype=torch.bool), like.new_zeros((), dtype=torch.bool)
    masks = [
        site["mask"] if isinstance(site["mask"], torch.Tensor) else (false if site["mask"] is False else true)
        for site in sites
    ]
    return torch.stack([mask.expand(like.shape[1:]) for mask in masks])


def masked(sites, log_prob):
    """log_prob [S, *batch] of the sites (one row each) with the padding rows' entries exactly 0."""
    if all(site["mask"] is None or site["mask"] is True for site in sites):
        return log_prob
    return torch.where(stacked_mask(sites, log_prob), log_prob, log_prob.new_zeros(()))


def group_log_prob(sites):
    """Unscaled, unmasked log-densities of a group of `stackable_groups` [S, *batch]: one call for the group."""
    if len(sites) == 1:
        return sites[0]["fn"].log_prob(sites[0]["value"]).unsqueeze(0)
    shape = broadcast_shape(sites[0])
    return stacked_normal(sites, shape).log_prob(broadcast_stack([site["value"] for site in sites], shape))


def scored_sum(sites):
    """sum over the sites of scale * mask * log p_site(value), as Trace_ELBO scores each site (a number if none)."""
    total = 0.0
    for group in stackable_groups(sites):
        log_prob = group_log_prob(group)
        if len(group) == 1:  # its scale may be a tensor
            total = total + scale_and_mask(log_prob[0], group[0]["scale"], group[0]["mask"]).sum()
        else:
            scale = stacked_scale(group, log_prob).reshape((-1,) + (1,) * (log_prob.dim() - 1))
            total = total + masked(group, log_prob * scale).sum()
    return total


def sample_sites(trace):
    """The trace's sample sites, the plates' subsample sites left out."""
    return [site for site in prune_subsample_sites(trace).nodes.values() if site["type"] == "sample"]


def vectorized_particles(num_particles, max_plate_nesting):
    """The plate of K particles drawn in one pass, left of the programs' own plates (as Pyro's ELBOs place it)."""
    return pyro.plate("num_particles_vectorized", num_particles, dim=-(max_plate_nesting + 1))


def model_guide_traces(model, guide, args, kwargs, max_plate_nesting=1):
    """(model trace, guide trace): the guide traced, the model replayed on it; Pyro's checks when validating."""
    if isinstance(poutine.unwrap(guide), GuideMessenger):  # it runs the model itself
        guide(*args, **kwargs)
        model_trace, guide_trace = poutine.unwrap(guide).get_traces()
    else:
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    if is_validation_enabled():  # Pyro's checks, which read the log-densities Trace.compute_log_prob gives each site
        check_model_guide_match(model_trace, guide_trace, max_plate_nesting)
        for trace in (model_trace, guide_trace):
            checked = prune_subsample_sites(trace)
            checked.compute_log_prob()
            for site in checked.nodes.values():
                if site["type"] == "sample":
                    check_site_shape(site, max_plate_nesting)
    return model_trace, guide_trace


class Objective:
    """What Pyro's ELBO classes offer a trainer, for a loss written on the traces: `objective(model, guide)` is a
    `pyro.infer.elbo.ELBOModule` (a torch Module whose call is `differentiable_loss`, which DDP can wrap), and
    `loss`, `loss_and_grads` are what `pyro.infer.SVI` calls. A subclass defines `differentiable_loss`."""

    def __call__(self, model, guide):
        return ELBOModule(model, guide, self)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs):
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


class StackedTrace_ELBO(Objective):
    """Trace_ELBO's loss and gradients for reparameterized guides, its DiagNormal sites scored in one call per
    shape. num_particles > 1 draws the particles in one vectorized pass (vectorize_particles=True, a plate left
    of the max_plate_nesting plates) or one after another."""

    def __init__(self, num_particles=1, max_plate_nesting=1, vectorize_particles=False):
        self.num_particles, self.max_plate_nesting = num_particles, max_plate_nesting
        self.vectorize_particles = vectorize_particles

    def latent_cost(self, pairs):
        """sum over the latent (guide site, model site) pairs of log q - log p at the guide's draws."""
        return scored_sum([q for q, _ in pairs]) - scored_sum([p for _, p in pairs])

    def particle_elbo(self, model, guide, args, kwargs, max_plate_nesting):
        """The ELBO estimate of one trace pair (of K vectorized particles: their sum): the module docstring's sum."""
        model_trace, guide_trace = model_guide_traces(model, guide, args, kwargs, max_plate_nesting)
        model_sites, guide_sites = sample_sites(model_trace), sample_sites(guide_trace)
        for site in guide_sites:
            if not site["fn"].has_rsample:
                raise ValueError(NOT_REPARAMETERIZED.format(name=site["name"]))
        guide_names = {site["name"] for site in guide_sites}
        model_names = {site["name"] for site in model_sites if not site["is_observed"]}
        pairs = [(guide_trace.nodes[s["name"]], s) for s in model_sites if s["name"] in guide_names]
        model_only = [s for s in model_sites if s["name"] not in guide_names]  # observed, or drawn from the prior
        guide_only = [s for s in guide_sites if s["name"] not in model_names]  # auxiliary guide sites
        return scored_sum(model_only) - scored_sum(guide_only) - self.latent_cost(pairs)

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if self.vectorize_particles and self.num_particles > 1:
            particles = vectorized_particles(self.num_particles, self.max_plate_nesting)
            elbo = self.particle_elbo(particles(model), particles(guide), args, kwargs, self.max_plate_nesting + 1)
            return -elbo / self.num_particles
        elbo = sum(
            self.particle_elbo(model, guide, args, kwargs, self.max_plate_nesting) for _ in range(self.num_particles)
        )
        return -elbo / self.num_particles
