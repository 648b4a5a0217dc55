"""Trace_ELBO with the z_t sites of all steps scored in one call: the same estimator, fewer small calls.

Pyro's Trace_ELBO estimates the ELBO (docs/paper.md, eq. 10 in the form of eq. 3) from one draw z ~ q as

    sum over the model's sample sites  of  scale * mask * log p_site(value)
  - sum over the guide's sample sites  of  scale * mask * log q_site(value)

and scores each site on its own (`Trace.compute_log_prob`, `compute_score_parts`). A VRNN's programs have
one z_t site per time step in each of them, each a diagonal Normal over [batch, z]: at T = 200 that is 400
small log-density calls, with their autograd nodes, per batch, where a hand-written loss makes two calls
over all steps. `StackedTrace_ELBO` traces the two programs exactly as Trace_ELBO does (the guide, then
the model replayed on it), then, before Pyro scores the sites, fills in the log-densities of every group of
`DiagNormal` sites of one shape with one call on the stacked values and parameters (`score_stacked`).
Pyro then scores the remaining sites (the emission factor, the RNNs' x_t) and computes the loss with
Trace_ELBO's own code. Each site's scale (the plate's, poutine.scale's KL weight) and mask are applied as
`pyro.distributions.util.scale_and_mask` does; tests/test_stacked_elbo.py checks loss and gradients
against Trace_ELBO's, and that no z_t site is scored on its own.

With Pyro's validation on (the first step of a run, the tests), it is Trace_ELBO itself, checks included.
`--scoring steps` trains with plain Trace_ELBO and the step-by-step model (run/benchmark.py measures both).
"""

import numbers
from collections import defaultdict

import pyro.poutine as poutine
import torch
from pyro.distributions.score_parts import ScoreParts
from pyro.infer import Trace_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.util import prune_subsample_sites

from pyro_vrnn.diag_normal import DiagNormal


def stackable_groups(items, sites_of=lambda site: [site]):
    """`items` (sites, or pairs of sites with sites_of) in lists that can be scored in one call: those whose sites
    are DiagNormals with a number for scale, grouped by shape, in trace order; every other item alone."""
    groups, alone = defaultdict(list), []
    for item in items:
        sites = sites_of(item)
        if all(type(site["fn"]) is DiagNormal and isinstance(site["scale"], numbers.Number) for site in sites):
            groups[tuple((s["value"].shape, s["fn"].loc.shape, s["fn"].scale.shape) for s in sites)].append(item)
        else:
            alone.append([item])
    return list(groups.values()) + alone


def stacked(tensors, shape):
    """torch.stack of tensors of one shape, each first broadcast to `shape` if it is smaller (an observed x_t
    without the particle dim of its distribution): stacked on a new dim 0, they must broadcast as they did."""
    if tensors[0].shape != shape:
        tensors = [tensor.expand(shape) for tensor in tensors]
    return torch.stack(tensors)


def stacked_normal(sites, shape):
    """One DiagNormal whose batch dim 0 runs over `sites` (DiagNormal sites of one shape): [S, *shape]."""
    return DiagNormal(
        stacked([site["fn"].loc for site in sites], shape), stacked([site["fn"].scale for site in sites], shape)
    )


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
    """The sites' masks (None: all True) as a bool tensor of the shape of `like` [S, *batch]."""
    masks = [True if site["mask"] is None else site["mask"] for site in sites]
    return torch.stack([torch.as_tensor(mask, device=like.device).expand(like.shape[1:]) for mask in masks])


def score_stacked(trace, guide=False):
    """Score the trace's stackable sites (DiagNormal, of one shape: the z_t of all steps) in one call a group,
    writing what Trace.compute_log_prob writes ("unscaled_log_prob", "log_prob", "log_prob_sum") and, for a
    guide, compute_score_parts ("score_parts": a DiagNormal is reparameterized, its score-function term 0)."""
    samples = [site for site in trace.nodes.values() if site["type"] == "sample"]
    for sites in stackable_groups(samples):
        if len(sites) < 2:
            continue  # nothing to gain: Pyro scores it
        shape = torch.broadcast_shapes(sites[0]["value"].shape, sites[0]["fn"].loc.shape)  # as log_prob broadcasts
        values = stacked([site["value"] for site in sites], shape)
        unscaled = stacked_normal(sites, shape).log_prob(values)  # [S, *batch]
        log_prob = stacked_scale_and_mask(sites, unscaled)
        for site, site_unscaled, site_log_prob, site_sum in zip(sites, unscaled, log_prob, log_prob.flatten(1).sum(1)):
            site.update(unscaled_log_prob=site_unscaled, log_prob=site_log_prob, log_prob_sum=site_sum)
            if guide:
                site["score_parts"] = ScoreParts(site_log_prob, 0, site_log_prob)


def stacked_traces(model, guide, args, kwargs):
    """pyro.infer.enum.get_importance_trace (flat, no checks) with score_stacked before Pyro scores the rest."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    guide_trace, model_trace = prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)
    score_stacked(model_trace)
    score_stacked(guide_trace, guide=True)
    model_trace.compute_log_prob()  # the sites not scored yet: the emission, the RNNs' x_t
    guide_trace.compute_score_parts()
    return model_trace, guide_trace


class StackedTrace_ELBO(Trace_ELBO):
    """Trace_ELBO, its DiagNormal sites scored in one call per shape (score_stacked); same loss, same gradients."""

    def _get_trace(self, model, guide, args, kwargs):
        if is_validation_enabled():
            return super()._get_trace(model, guide, args, kwargs)
        return stacked_traces(model, guide, args, kwargs)
