"""Trace_ELBO with the z_t sites of all steps scored in one call: the same estimator, fewer small calls.

Pyro's Trace_ELBO estimates the ELBO (docs/paper.md, eq. 10 in the form of eq. 3) from one draw z ~ q as

    sum over the model's sample sites  of  scale * mask * log p_site(value)
  - sum over the guide's sample sites  of  scale * mask * log q_site(value)

and scores each site on its own. A VRNN's programs have one z_t site per time step in each of them, each a
diagonal Normal over [batch, z]: at T = 200 that is 400 small log-density calls, with their autograd
nodes, per batch, where a hand-written loss makes two calls over all steps.

How. `stacked_traces` traces the two programs as Trace_ELBO does (the guide, then the model replayed on
it). Before Pyro scores the sites, `score_stacked` fills in the log-densities of every group of
`DiagNormal` sites of one shape with one call on the stacked values and parameters, each site's scale
(the plate's, a KL weight) and mask applied as `pyro.distributions.util.scale_and_mask` applies them.
Pyro's `Trace.compute_log_prob` and `compute_score_parts` then score the other sites (the emission
factor, a site alone of its shape, one with a tensor for scale) and skip those already scored: they
memoize. `StackedTrace_ELBO` overrides only Trace_ELBO's `_get_trace`, and computes the loss with
Trace_ELBO's own code. pyproject.toml pins pyro-ppl below 1.10, and tests/test_stacked_elbo.py compares
loss and gradients with Trace_ELBO's and counts the calls: a change in Pyro that broke either fails there.

Who uses it. `--elbo trace --scoring batched` (the default) trains StackedTrace_ELBO; FreeBitsELBO and
IWAEELBO (objectives.py) take the same traces. With Pyro's validation on (a run's first step), or a guide
that is a GuideMessenger (an AutoNormalMessenger traces both programs itself), the traces are Pyro's own,
from `pyro.infer.enum.get_importance_trace`. `--scoring steps --elbo trace` trains with Trace_ELBO itself
(run/benchmark.py measures both).
"""

import numbers
from collections import defaultdict

import pyro.poutine as poutine
import torch
from pyro.distributions.score_parts import ScoreParts
from pyro.infer import Trace_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from pyro_vrnn.diag_normal import DiagNormal


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


def stacked_scale_and_mask(sites, log_prob):
    """pyro.distributions.util.scale_and_mask of each site's row of log_prob [S, *batch] (padding: exactly 0)."""
    log_prob = log_prob * stacked_scale(sites, log_prob).reshape((-1,) + (1,) * (log_prob.dim() - 1))
    if all(site["mask"] is None or site["mask"] is True for site in sites):
        return log_prob
    return torch.where(stacked_mask(sites, log_prob), log_prob, log_prob.new_zeros(()))


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


def score_stacked(trace, guide=False):
    """Score the trace's stackable sites (DiagNormal, of one shape: the z_t of all steps) in one call a group,
    writing what Trace.compute_log_prob writes ("unscaled_log_prob", "log_prob", "log_prob_sum") and, for a
    guide, compute_score_parts ("score_parts"; a stackable site is reparameterized, its score-function term 0)."""
    samples = [site for site in trace.nodes.values() if site["type"] == "sample"]
    for sites in stackable_groups(samples):
        if len(sites) < 2:
            continue  # nothing to gain: Pyro scores it
        shape = broadcast_shape(sites[0])
        unscaled = stacked_normal(sites, shape).log_prob(broadcast_stack([site["value"] for site in sites], shape))
        log_prob = stacked_scale_and_mask(sites, unscaled)  # [S, *batch]
        for site, site_unscaled, site_log_prob, site_sum in zip(sites, unscaled, log_prob, log_prob.flatten(1).sum(1)):
            site.update(unscaled_log_prob=site_unscaled, log_prob=site_log_prob, log_prob_sum=site_sum)
            if guide:
                site["score_parts"] = ScoreParts(site_log_prob, 0, site_log_prob)


def stacked_traces(model, guide, args, kwargs, max_plate_nesting):
    """(model trace, guide trace) as pyro.infer.enum.get_importance_trace makes them ("flat"), with score_stacked
    before Pyro scores the rest; Pyro's own with validation on (its checks) or a GuideMessenger guide."""
    if is_validation_enabled() or isinstance(poutine.unwrap(guide), Messenger):
        return get_importance_trace("flat", max_plate_nesting, model, guide, args, kwargs)
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    score_stacked(model_trace)
    score_stacked(guide_trace, guide=True)
    model_trace.compute_log_prob()  # every site not scored yet
    guide_trace.compute_score_parts()
    return model_trace, guide_trace


class StackedTrace_ELBO(Trace_ELBO):
    """Trace_ELBO, its DiagNormal sites scored in one call per shape (score_stacked); same loss, same gradients."""

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)  # Trace_ELBO's, with its checks
        return stacked_traces(model, guide, args, kwargs, self.max_plate_nesting)
