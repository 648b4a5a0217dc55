"""The networks of the VRNN (Chung et al. 2015, eqs. 1-9), as one `torch.nn.Module`.

    phi_x, phi_z                feature extractors of x_t and z_t (MLPs)
    prior_net  = phi_prior      [mu_0,t, sigma_0,t] = phi_prior(h_{t-1})                 (eq. 5)
    encoder    = phi_enc        [mu_z,t, sigma_z,t] = phi_enc(phi_x(x_t), h_{t-1})        (eq. 9)
    decoder    = phi_dec        theta_t = phi_dec(phi_z(z_t), h_{t-1})                    (eq. 6)
    rnn        = f (an LSTM)    h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1})                  (eq. 7)

The Pyro programs in `models/` and `guides/` thread a `State` (h_{t-1}) through time and call one
method per equation and step: `prior(state)`, `posterior(x_t, state)`, `emission(z_t, state)`,
`step(x_t, z_t, state)`. The module maps tensors to tensors and distributions; the programs own the
sample sites. Every method accepts any number of leading batch dimensions (importance sampling adds
a particle dimension). Scales are softplus plus a floor (PAPER.md: sigma = softplus(.) + 1e-4).

The second half of this file is a speed-up that changes no number (tests/test_reference.py): the model,
replayed on the guide's samples, reuses the recurrence the guide just ran instead of running it again,
and scores all its steps with one batched call each (see "the model reusing the guide's pass").
"""
import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F
import pyro.distributions as dist
from torch.distributions import Distribution, kl_divergence, register_kl

from pyro_vrnn.distributions import DiagNormalMixture, StrokeMixture


def mlp(in_dim, width, layers):
    """`layers` ReLU layers of `width` units (the paper's phi networks)."""
    modules = []
    for _ in range(layers):
        modules += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    return nn.Sequential(*modules)


def broadcast_shape(*shapes):
    """torch.broadcast_shapes for shapes known to broadcast, without its checks (it is called every step)."""
    out = [1] * max(len(s) for s in shapes)
    for s in shapes:
        for i, size in enumerate(s, len(out) - len(s)):
            if size != 1:
                out[i] = size
    return torch.Size(out)


def broadcast_to(tensor, batch_shape):
    """tensor expanded to broadcast against batch_shape (a log-density of a distribution that plates expanded)."""
    if tensor.shape == batch_shape:
        return tensor
    shape = broadcast_shape(tensor.shape, batch_shape)
    return tensor if tensor.shape == shape else tensor.expand(shape)


def cat(*tensors):
    """Concatenate features along the last dim, broadcasting the batch dims (particles x sequences)."""
    if all(t.shape[:-1] == tensors[0].shape[:-1] for t in tensors):
        return torch.cat(tensors, dim=-1)
    batch_shape = broadcast_shape(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(batch_shape + t.shape[-1:]) for t in tensors], dim=-1)


class NormalHead(nn.Module):
    """Features -> a diagonal Normal over `dim` variables: loc linear, scale softplus + floor."""

    def __init__(self, in_dim, dim, min_scale):
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * dim)
        self.min_scale = min_scale

    def forward(self, features):
        loc, raw_scale = self.linear(features).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)


class EmissionHead(nn.Module):
    """Features -> the emission p(x_t | z_t, h_{t-1}) that suits the data's kind.

    kind="handwriting": (pen, dx, dy), Bernoulli pen bit and a mixture of bivariate Gaussians
        with one correlation each (Graves 2013); "gauss" is the one-component case.
    kind="real": a diagonal Gaussian ("gauss") or a mixture of diagonal Gaussians ("gmm").
    kind="binary": independent Bernoulli bits (piano rolls), whatever the model name says.
    """

    def __init__(self, in_dim, kind, x_dim, family, components, min_scale):
        super().__init__()
        if kind not in ("handwriting", "real", "binary"):
            raise ValueError(f"unknown data kind {kind!r}")
        if kind == "handwriting" and x_dim != 3:
            raise ValueError(f"handwriting data must be (pen, dx, dy), got dimension {x_dim}")
        self.kind, self.x_dim, self.min_scale = kind, x_dim, min_scale
        self.components = components if family == "gmm" and kind != "binary" else 1
        self.mixture = family == "gmm"
        k, d = self.components, x_dim
        sizes = {
            "handwriting": [1, k, 2 * k, 2 * k, k],  # pen, mixture logits, loc, scale, corr
            "real": [k, k * d, k * d] if self.mixture else [d, d],
            "binary": [d],
        }[kind]
        self.sizes = sizes
        self.linear = nn.Linear(in_dim, sum(sizes))

    def scale(self, raw):
        return F.softplus(raw) + self.min_scale

    def forward(self, features):
        params = self.linear(features).split(self.sizes, dim=-1)
        batch_shape = features.shape[:-1]
        if self.kind == "binary":
            return dist.Bernoulli(logits=params[0]).to_event(1)
        if self.kind == "real" and not self.mixture:
            loc, raw_scale = params
            return dist.Normal(loc, self.scale(raw_scale)).to_event(1)
        k = self.components
        if self.kind == "real":
            logits, loc, raw_scale = params
            shape = batch_shape + (k, self.x_dim)
            return DiagNormalMixture(logits, loc.reshape(shape), self.scale(raw_scale).reshape(shape))
        pen_logit, logits, loc, raw_scale, raw_corr = params
        shape = batch_shape + (k, 2)
        # tanh keeps each correlation strictly inside (-1, 1); the factor keeps 1 - rho^2 > 0 in float32
        corr = torch.tanh(raw_corr) * (1 - 1e-5)
        return StrokeMixture(pen_logit.squeeze(-1), logits, loc.reshape(shape),
                             self.scale(raw_scale).reshape(shape), corr)


# ---- the model reusing the guide's pass ------------------------------------------------------------
#
# Under Trace_ELBO (and importance sampling) the model is replayed on the guide's trace: its z_t are the
# very tensors the guide sampled, its x is the guide's x, its parameters those of the same forward pass.
# Its recurrence h_t is then the guide's, step for step, and running it again would double the most
# expensive part of the ELBO. So the guide records its pass (`Recurrence`) and the model *follows* it
# while that holds, checked at every step (`z_t is` the recorded z_t, x_t is x[:, t]); anywhere else
# (generation, where x_t is sampled; a model run alone; other parameters) the model computes its own.
# Following also lets every step's prior, emission and log-densities come from one batched call over
# time (`StepOf`), where a step-by-step program would make T small calls.


def step_masks(mask):
    """The masks for poutine.mask at each step t: mask[:, t], or plainly True at steps where every
    sequence is real (most steps of a length-bucketed batch). Same log-densities; Pyro then scales a
    site's log-density instead of also masking it, which is a third of its per-site cost."""
    full = mask.all(0).tolist()  # one look at the mask per batch
    return [True if full[t] else mask[:, t] for t in range(mask.shape[1])]


# Bytes that the emission's parameters and its log-density's temporaries may take in one block. A speech
# frame's mixture has 20 x 200 means and scales per particle, sequence and step: for all T steps at once
# they would bound how many particles one importance-sampling pass can hold. Small blocks also stay clear
# of glibc's heap trimming, which hands back and re-faults the memory of big temporaries at every block
# (seen at 256 MiB blocks: twice the time, most of it in page faults).
EMISSION_BLOCK_BYTES = 2 ** 24


def emission_blocks(vrnn, shape):
    """(steps, rows) index pairs that cover a [T, *S] batch (rows: the first dim of S, particles if any): the
    blocks in which the emission is scored without gradients, each within EMISSION_BLOCK_BYTES. With gradients,
    one block (the graph keeps every block's intermediates anyway, so blocks would save no memory)."""
    if torch.is_grad_enabled() or len(shape) < 2:
        return [(slice(None), slice(None))]
    try:
        width = vrnn.decoder[-1].linear.out_features  # the emission's parameters per row
    except (AttributeError, TypeError, IndexError):  # a decoder of another shape
        width = 2 * vrnn.x_dim
    row_bytes = 4 * 8 * width * shape[2:].numel()  # one row of one step: float32, ~8 copies in flight
    steps, rows = shape[0], shape[1]
    if row_bytes * rows <= EMISSION_BLOCK_BYTES:  # whole steps
        block = EMISSION_BLOCK_BYTES // (row_bytes * rows)
        return [(slice(t, t + block), slice(None)) for t in range(0, steps, block)]
    block = max(1, EMISSION_BLOCK_BYTES // row_bytes)  # a step at a time, in groups of rows
    return [(slice(t, t + 1), slice(r, r + block)) for t in range(steps) for r in range(0, rows, block)]


def stack_steps(tensors):
    """[T, ...] from T tensors whose batch dims broadcast (h_0 has no particle dim, h_1 on may have one)."""
    if any(t.shape != tensors[0].shape for t in tensors):
        tensors = torch.broadcast_tensors(*tensors)
    return torch.stack(tensors)


def per_step(d):
    """[the distribution of step t for t < T] from a distribution d of batch shape [T, ...], or None for a
    family not listed here. The parameters are split with one `unbind`, whose backward is one `stack`
    (indexing step by step would add T full-size zero tensors to the backward pass)."""
    if isinstance(d, dist.Independent):
        steps = per_step(d.base_dist)
        return None if steps is None else [s.to_event(d.reinterpreted_batch_ndims) for s in steps]
    if type(d) is dist.Normal:
        return [dist.Normal(*p) for p in zip(d.loc.unbind(0), d.scale.unbind(0))]
    if type(d) is dist.Bernoulli:
        return [dist.Bernoulli(logits=logits) for logits in d.logits.unbind(0)]
    if type(d) is DiagNormalMixture:
        return [DiagNormalMixture(*p) for p in zip(d.logits.unbind(0), d.loc.unbind(0), d.scale.unbind(0))]
    if type(d) is StrokeMixture:
        return [StrokeMixture(*p) for p in zip(d.pen_logits.unbind(0), d.logits.unbind(0), d.loc.unbind(0),
                                               d.scale.unbind(0), d.corr.unbind(0))]
    return None


def stack_normals(steps):
    """The guide's diagonal Normals of all steps as one of batch shape [T, ...], or None for another family."""
    if not all(isinstance(d, dist.Independent) and type(d.base_dist) is dist.Normal
               and d.reinterpreted_batch_ndims == 1 for d in steps):
        return None
    return dist.Normal(stack_steps([d.base_dist.loc for d in steps]),
                       stack_steps([d.base_dist.scale for d in steps])).to_event(1)


class Recurrence:
    """One pass of the recurrence h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}) over a batch x [B, T, D].

    It computes phi_x(x) for all steps at once (on first use). A recording pass (the guide's) keeps
    h_t, z_t and q(z_t | x_t, h_{t-1}) of every step; once complete (the model took it over) it is only
    read, and gives the distributions of the three sites of every step, batched over time: "posterior"
    q(z_t | ...), "prior" p(z_t | h_{t-1}), "emission" p(x_t | z_t, h_{t-1}), and their log-densities at
    the recorded z's and at x. (The LSTM cells c_t are not kept: a model that stops following
    mid-sequence, which only tests do, recomputes the one it needs.)

    The RNN baselines have no z: once x_1 is the data (it is not when generating), their whole
    recurrence is fixed by x, so the model runs it to the end at once (`run_ahead`) and follows it.
    """

    def __init__(self, vrnn, x, record):
        self.vrnn, self.x, self.recording = vrnn, x, record
        self.key = vrnn.pass_key(x)
        self._x_step = (x.data_ptr(), x.stride(1) * x.element_size(), x.dtype, x.shape[:1] + x.shape[2:],
                        x.stride()[:1] + x.stride()[2:])
        self.zeros = x.new_zeros(x.shape[0], vrnn.hidden)
        self.h = [self.zeros]  # h[t] = h_t, t = 0 .. steps recorded
        self.z, self.q = [], []  # z[t] = z_{t+1}, sampled from q[t]
        self._phi_x = None
        self._stacked, self._batched, self._steps, self._log_probs, self._templates, self._shapes = {}, {}, {}, {}, {}, {}

    def is_data(self, x_t, t):
        """Whether x_t is x[:, t] itself: the same memory, not merely equal values. An observed site returns
        the very tensor it was given, unless a handler (poutine.uncondition, condition) put another there."""
        ptr, step, dtype, shape, stride = self._x_step
        return x_t.data_ptr() == ptr + t * step and x_t.shape == shape and x_t.stride() == stride and x_t.dtype == dtype

    def phi_x(self, x_t, t):
        """phi_x(x_t), taken from phi_x(x) computed for all steps at once when x_t is x[:, t]."""
        if not self.is_data(x_t, t):
            return self.vrnn.phi_x(x_t)
        if self._phi_x is None:  # time-major, so that each step's features are contiguous
            self._phi_x = self.vrnn.phi_x(self.x.transpose(0, 1)).unbind(0)
        return self._phi_x[t]

    def record(self, h, z_t):
        self.h.append(h), self.z.append(z_t)

    def run_ahead(self, c):
        """Record the rest of the recurrence, driven by the data alone (RNN baselines); c = c_t now."""
        for t in range(len(self.z), self.x.shape[1]):
            h, c = self.vrnn.lstm(self.phi_x(self.x[:, t], t), self.h[t], c)
            self.record(h, None)

    def cell(self, t):
        """c_t, recomputed along the recorded steps."""
        h = c = self.zeros
        for s in range(t):
            inputs = self.phi_x(self.x[:, s], s)
            if self.z[s] is not None:
                inputs = cat(inputs, self.vrnn.phi_z(self.z[s]))
            h, c = self.vrnn.lstm(inputs, h, c)
        return c

    def can_follow(self, t):
        """Whether step t may come from the batched calls: the pass is complete and got that far."""
        return not self.recording and t < len(self.z)

    def stacked(self, name):
        """h_0 .. h_{T-1} ("h") or z_1 .. z_T ("z") as one [T, ...] tensor, stacked once."""
        if name not in self._stacked:
            steps = len(self.z)
            self._stacked[name] = stacked = stack_steps(self.h[:steps] if name == "h" else self.z)
            if name == "h" and not torch.is_grad_enabled():  # keep each h_t once (importance sampling at large T):
                # the recorded tensors give way to views of the stack (under grad, autograd holds them anyway)
                self.h[:steps] = [new if new.shape == old.shape else old for new, old in zip(stacked.unbind(0), self.h)]
        return self._stacked[name]

    def batched(self, site):
        """The distribution of a site at every recorded step, batch shape [T, ...] (None: not stackable)."""
        if site not in self._batched:
            if site == "posterior":
                d = stack_normals(self.q) if len(self.q) == len(self.z) else None
            elif site == "prior":
                d = self.vrnn.prior_given(self.stacked("h"))
            elif self.vrnn.latent:
                d = self.vrnn.decoder(cat(self.vrnn.phi_z(self.stacked("z")), self.stacked("h")))
            else:
                d = self.vrnn.decoder(self.stacked("h"))
            self._batched[site] = d
        return self._batched[site]

    def is_recorded_value(self, site, t, value):
        if t >= len(self.z) or self.recording:
            return False
        return value is self.z[t] if site != "emission" else self.is_data(value, t)

    def log_probs(self, site):
        """log q(z_t | ...) or log p(z_t | h_{t-1}) at the recorded z's, or log p(x_t | z_t, h_{t-1}) at x, for
        every step in one call (the emission: a block of steps per call), then split (None: not stackable)."""
        if site not in self._log_probs:
            if site == "emission":
                self._log_probs[site] = self.emission_log_probs()
                return self._log_probs[site]
            batched = self.batched(site)
            self._log_probs[site] = None if batched is None else batched.log_prob(self.stacked("z")).unbind(0)
        return self._log_probs[site]

    def emission_log_probs(self):
        """log p(x_t | z_t, h_{t-1}) at x for every recorded step, in blocks (VRNN.emission_log_prob)."""
        z = self.stacked("z") if self.vrnn.latent else None
        values = self.x.transpose(0, 1)[:len(self.z)]  # [T, B, D]
        return self.vrnn.emission_log_prob(self.stacked("h"), z, values).unbind(0)

    def step_batch_shape(self, site):
        """The batch shape of every step of a site: (particles,) sequences (worked out once per site)."""
        if site not in self._shapes:
            if site != "emission":
                shape = self.batched(site).batch_shape[1:]
            else:
                shape = self.stacked("h").shape[1:-1]
                if self.vrnn.latent:
                    shape = broadcast_shape(shape, self.stacked("z").shape[1:-1])
            self._shapes[site] = shape
        return self._shapes[site]

    def template(self, site):
        """A distribution with the event shape and support of every step of a site: the batched one for the
        guide and the prior; for the emission, whose batched parameters can be large (EMISSION_BLOCK_BYTES),
        that of step 1 alone."""
        if site != "emission":
            return self.batched(site)
        if "emission" not in self._templates:
            self._templates["emission"] = self.vrnn.decoder(
                self.h[0] if self.z[0] is None else cat(self.vrnn.phi_z(self.z[0]), self.h[0]))
        return self._templates["emission"]

    def kl(self):
        """KL(q(z_t | ...) || p(z_t | h_{t-1})) of every step in one call, then split (None: not stackable)."""
        if "kl" not in self._log_probs:
            q, p = self.batched("posterior"), self.batched("prior")
            self._log_probs["kl"] = None if q is None else kl_divergence(q, p).unbind(0)
        return self._log_probs["kl"]

    def step_distribution(self, site, t):
        """The distribution of step t alone (to sample, or to score another value)."""
        if site == "posterior":
            return self.q[t]
        if site not in self._steps:
            self._steps[site] = per_step(self.batched(site))
        if self._steps[site] is not None:
            return self._steps[site][t]
        if site == "prior":
            return self.vrnn.prior_given(self.h[t])
        if self.z[t] is None:
            return self.vrnn.decoder(self.h[t])
        return self.vrnn.decoder(cat(self.vrnn.phi_z(self.z[t]), self.h[t]))


class StepOf(dist.TorchDistribution):
    """The distribution at step t of a site of a recorded pass (`Recurrence`): the guide's q(z_t | x_t,
    h_{t-1}) ("posterior"), the model's p(z_t | h_{t-1}) ("prior") or p(x_t | z_t, h_{t-1}) ("emission").

    It samples, expands and scores other values exactly as the step's own distribution (`step`) does.
    At the value recorded for its step, its log-density (and its KL to the prior of the same step) is
    read from one call made for all steps: Pyro scores the sites of a trace after the programs ran,
    when the whole pass is known, so T small log-density calls become one.
    """

    arg_constraints = {}

    def __init__(self, path, site, t, step=None, batch_shape=None):
        self.path, self.site, self.t, self._step = path, site, t, step
        template = step if step is not None else path.template(site)
        if batch_shape is None:
            batch_shape = template.batch_shape if step is not None else path.step_batch_shape(site)
        super().__init__(torch.Size(batch_shape), template.event_shape, validate_args=False)

    @property
    def step(self):
        if self._step is None:
            self._step = self.path.step_distribution(self.site, self.t)
        d = self._step
        return d if d.batch_shape == self.batch_shape else d.expand(self.batch_shape)

    @property
    def _template(self):  # what the step shares with the batched distribution, without building the step
        return self._step if self._step is not None else self.path.template(self.site)

    @property
    def has_rsample(self):  # Pyro's plates read this at every site
        return self._template.has_rsample

    @property
    def support(self):
        return self._template.support

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:  # what Pyro's plates ask for at every site
            return self
        return StepOf(self.path, self.site, self.t, self._step, batch_shape)

    def log_prob(self, value):
        if self.path.is_recorded_value(self.site, self.t, value):
            log_probs = self.path.log_probs(self.site)
            if log_probs is not None:
                return broadcast_to(log_probs[self.t], self.batch_shape)
        return self.step.log_prob(value)

    def sample(self, sample_shape=torch.Size()):
        return self.step.sample(sample_shape)

    def rsample(self, sample_shape=torch.Size()):
        return self.step.rsample(sample_shape)

    @property
    def mean(self):
        return self.step.mean

    @property
    def variance(self):
        return self.step.variance


@register_kl(StepOf, StepOf)
def _kl_steps(q, p):
    """TraceMeanField_ELBO's KL(q(z_t | ...) || p(z_t | h_{t-1})): from the batched KL of the pass they share."""
    if (q.path is p.path and q.t == p.t and (q.site, p.site) == ("posterior", "prior")
            and not q.path.recording and q.t < len(q.path.z)):
        kl = q.path.kl()
        if kl is not None:
            return broadcast_to(kl[q.t], q.batch_shape)
    return kl_divergence(q.step, p.step)


@register_kl(StepOf, Distribution)
def _kl_step_any(q, p):
    return kl_divergence(q.step, p)


@register_kl(Distribution, StepOf)
def _kl_any_step(q, p):
    return kl_divergence(q, p.step)


class State:
    """The recurrence before step t + 1: h_t and c_t (the LSTM's output and cell; None: not kept, see
    Recurrence.cell) of a Recurrence pass. shared: h is the pass's recorded h_t, so its step t + 1 may apply."""

    __slots__ = ("h", "c", "t", "path", "shared", "phi_z")

    def __init__(self, h, c, t, path, shared):
        self.h, self.c, self.t, self.path, self.shared, self.phi_z = h, c, t, path, shared, None


class VRNN(nn.Module):
    """All networks of one Table 1 model.

    latent=False gives the RNN baselines (x_t ~ emission(phi_dec(h_{t-1})), h_t = f(phi_x(x_t), h_{t-1}));
    conditional_prior=False gives VRNN-I (z_t ~ N(0, I), independent across time).

    The programs thread a `State` through time: `initial_state(x)`, then per step `prior(state)`,
    `posterior(x_t, state)`, `emission(z_t, state)` and `state = step(x_t, z_t, state)`, each one of
    the paper's equations. The state carries h_{t-1} and lets the model reuse the recurrence that the
    guide just ran on the same sample (`Recurrence`); the results are the same either way.
    """

    def __init__(self, config, kind, x_dim, latent, conditional_prior, emission):
        super().__init__()
        c = config
        self.kind, self.x_dim, self.z_dim, self.hidden = kind, x_dim, c.z_dim, c.hidden
        self.latent, self.conditional_prior = latent, conditional_prior
        self.phi_x = mlp(x_dim, c.x_features, c.mlp_layers)
        rnn_input = c.x_features
        dec_input = c.hidden
        if latent:
            self.phi_z = mlp(c.z_dim, c.z_features, c.mlp_layers)
            self.encoder = nn.Sequential(mlp(c.x_features + c.hidden, c.enc_hidden, c.mlp_layers),
                                         NormalHead(c.enc_hidden, c.z_dim, c.min_scale))
            if conditional_prior:
                self.prior_net = nn.Sequential(mlp(c.hidden, c.prior_hidden, c.mlp_layers),
                                               NormalHead(c.prior_hidden, c.z_dim, c.min_scale))
            rnn_input += c.z_features
            dec_input += c.z_features
        self.decoder = nn.Sequential(mlp(dec_input, c.dec_hidden, c.mlp_layers),
                                     EmissionHead(c.dec_hidden, kind, x_dim, emission,
                                                  c.components, c.min_scale))
        self.rnn = nn.LSTMCell(rnn_input, c.hidden)

    def initial_state(self, x, share=False):
        """The state before step 1 (h_0 = c_0 = 0) of a pass over the batch x [B, T, D].

        share=True (the guide): record this pass for the model. Otherwise, follow the pass just recorded
        on this very x with these parameters, if there is one (each recorded pass is followed once).
        """
        if share and not torch.is_inference_mode_enabled():  # (inference tensors have no version to check)
            path = Recurrence(self, x, record=True)
            # A weak reference: the guide's trace holds the pass (its sites do) for as long as a replay of
            # the model on it is possible; a guide run alone leaves nothing behind on the module.
            self.__dict__["_shared_pass"] = weakref.ref(path)
            return State(path.zeros, path.zeros, 0, path, shared=True)
        recorded = self.__dict__.pop("_shared_pass", None)
        path = recorded() if recorded is not None else None
        if path is not None and path.x is x and not torch.is_inference_mode_enabled() and path.key == self.pass_key(x):
            path.recording = False  # complete: from now on it is only read
            return State(path.zeros, path.zeros, 0, path, shared=True)
        path = Recurrence(self, x, record=False)
        return State(path.zeros, path.zeros, 0, path, shared=False)

    def pass_key(self, x):
        """What a recorded pass depends on besides its z's: the data, every parameter and the grad mode.
        In-place updates such as an optimizer step bump a tensor's version. Writes through `p.data`
        do not: whoever edits parameters that way between running the guide and replaying the model
        on its trace must run the model on a copy of x (then nothing is reused)."""
        if torch.is_inference_mode_enabled() or x.is_inference():
            return None
        return (x._version, torch.is_grad_enabled(), tuple((id(p), p._version) for p in self.parameters()))

    def __getstate__(self):  # copies and pickles leave the recorded pass behind
        return {k: v for k, v in self.__dict__.items() if k != "_shared_pass"}

    def prior(self, state):
        """p(z_t | h_{t-1}): N(mu_0,t, sigma_0,t^2), or N(0, I) for VRNN-I."""
        if state.shared and state.path.can_follow(state.t):
            return StepOf(state.path, "prior", state.t)
        return self.prior_given(state.h)

    def prior_given(self, h):
        """p(z_t | h_{t-1}) from h_{t-1} itself (any leading dims, time included)."""
        if not self.conditional_prior:
            return dist.Normal(h.new_zeros(h.shape[:-1] + (self.z_dim,)), 1.0).to_event(1)
        return self.prior_net(h)

    def posterior(self, x_t, state):
        """q(z_t | x_t, h_{t-1}) = N(mu_z,t, sigma_z,t^2), [mu, sigma] = phi_enc(phi_x(x_t), h_{t-1})."""
        path, t = state.path, state.t
        q = self.encoder(cat(path.phi_x(x_t, t), state.h))
        if state.shared and path.recording and len(path.q) == t == len(path.z):
            path.q.append(q)  # scored later with all steps at once
            return StepOf(path, "posterior", t, step=q)
        return q

    def emission(self, z_t, state):
        """p(x_t | z_t, h_{t-1}) with theta_t = phi_dec(phi_z(z_t), h_{t-1}) (phi_dec(h_{t-1}) for RNNs)."""
        path, t = state.path, state.t
        if state.shared and path.can_follow(t) and path.z[t] is z_t:
            return StepOf(path, "emission", t)
        return self.decoder(state.h if z_t is None else cat(self._phi_z(z_t, state), state.h))

    def emission_log_prob(self, h_prev, z, x):
        """log p(x_t | z_t, h_{t-1}) [T, *S] of every step: h_prev [T, *S, H], z [T, *S, Z] (None for RNNs) and
        x [T, B, D] broadcast against each other (S: (particles,) sequences). One call with gradients; without,
        the blocks of `emission_blocks`, so that the emission's parameters never exist for all steps at once."""
        tensors = [h_prev, x] if z is None else [h_prev, z, x]
        shape = h_prev.shape[:1] + broadcast_shape(*(t.shape[1:-1] for t in tensors))
        full = [t.reshape(t.shape[:1] + (1,) * (len(shape) - t.dim() + 1) + t.shape[1:]).expand(shape + t.shape[-1:])
                for t in tensors]  # views, [T, *S, ...]: every block is an index into all of them
        h_prev, z, x = (full[0], None, full[1]) if z is None else full

        def log_prob(index):
            features = h_prev[index] if z is None else cat(self.phi_z(z[index]), h_prev[index])
            return self.decoder(features).log_prob(x[index])

        blocks = emission_blocks(self, shape)
        if len(blocks) == 1:
            return log_prob(blocks[0])
        out = h_prev.new_empty(shape)
        for index in blocks:
            out[index] = log_prob(index)
        return out

    def step(self, x_t, z_t, state):
        """The state after step t: h_t = f(phi_x(x_t), phi_z(z_t), h_{t-1}) (z_t = None for RNNs)."""
        path, t = state.path, state.t
        if not self.latent and t == 0 and len(path.h) == 1 and not path.recording and path.is_data(x_t, 0):
            path.run_ahead(state.c)  # an RNN's recurrence is fixed by the data from here on (see Recurrence)
            state = State(state.h, None, 0, path, shared=True)
        if state.shared and t + 1 < len(path.h) and path.z[t] is z_t and path.is_data(x_t, t):
            return State(path.h[t + 1], None, t + 1, path, shared=True)  # the recorded step
        phi_x_t = path.phi_x(x_t, t)
        phi_z_t = None if z_t is None else self._phi_z(z_t, state)
        c = state.c if state.c is not None else path.cell(t)
        h, c = self.lstm(phi_x_t if phi_z_t is None else cat(phi_x_t, phi_z_t), state.h, c)
        if state.shared and path.recording and len(path.h) == t + 1 and path.is_data(x_t, t):
            path.record(h, z_t)
            return State(h, c, t + 1, path, shared=True)
        return State(h, c, t + 1, path, shared=False)

    def _phi_z(self, z_t, state):
        """phi_z(z_t), computed once per step (the emission and the recurrence both need it)."""
        if state.phi_z is None or state.phi_z[0] is not z_t:
            state.phi_z = (z_t, self.phi_z(z_t))
        return state.phi_z[1]

    def lstm(self, inputs, h, c):
        """One LSTM step; the cell wants one flat batch dim, the programs may have (particles, sequences)."""
        batch_shape = inputs.shape[:-1]
        if h.shape[:-1] != batch_shape:
            batch_shape = broadcast_shape(batch_shape, h.shape[:-1])
            inputs = inputs.expand(batch_shape + inputs.shape[-1:])
            h, c = h.expand(batch_shape + h.shape[-1:]), c.expand(batch_shape + c.shape[-1:])
        if len(batch_shape) == 1:
            return self.rnn(inputs, (h, c))
        h, c = self.rnn(inputs.reshape(-1, inputs.shape[-1]), (h.reshape(-1, self.hidden), c.reshape(-1, self.hidden)))
        return h.reshape(batch_shape + (self.hidden,)), c.reshape(batch_shape + (self.hidden,))
