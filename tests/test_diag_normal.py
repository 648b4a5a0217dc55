"""DiagNormal (pyro_vrnn/distributions/diag_normal.py) is Normal(loc, scale).to_event(1): values, gradients,
shapes, KL."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_vrnn.distributions.diag_normal import DiagNormal, as_diag_normal, diag_normal_log_prob
from pyro_vrnn.nn.vrnn_networks import unbind_steps


def reference(loc, scale):
    return dist.Normal(loc, scale).to_event(1)


def test_log_prob_equals_normal_to_event_with_broadcast_value():
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) + 0.1
    value = torch.randn(5, 4, 3, generator=g)  # a particle dim in front, as importance sampling has
    ours = DiagNormal(loc, scale).log_prob(value)
    assert ours.shape == (5, 4)
    assert torch.allclose(ours, reference(loc, scale).log_prob(value), atol=1e-5)
    # a hand computation at one point: N(1; 0, 2^2) N(-1; 1, 0.5^2) = -(1/8 + ln 2) - (8 + ln 0.5) - ln 2pi
    point = DiagNormal(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 0.5])).log_prob(torch.tensor([1.0, -1.0]))
    assert point.item() == pytest.approx(-(1 / 8 + 8) - torch.log(torch.tensor(2 * torch.pi)).item(), abs=1e-5)


def test_gradients_are_the_derivatives_of_the_log_density():
    g = torch.Generator().manual_seed(1)
    value = torch.randn(2, 3, 4, dtype=torch.double, generator=g, requires_grad=True)
    loc = torch.randn(3, 4, dtype=torch.double, generator=g, requires_grad=True)  # broadcast over the first dim
    scale = (torch.rand(3, 1, dtype=torch.double, generator=g) + 0.2).requires_grad_()  # and over the last
    assert torch.autograd.gradcheck(diag_normal_log_prob, (value, loc, scale))
    ours = torch.autograd.grad(diag_normal_log_prob(value, loc, scale).sum(), (value, loc, scale))
    theirs = torch.autograd.grad(dist.Normal(loc, scale).log_prob(value).sum(), (value, loc, scale))
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape and torch.allclose(a, b)


def test_second_derivatives_are_refused_not_wrong():
    value = torch.randn(3, requires_grad=True)
    (grad,) = torch.autograd.grad(DiagNormal(torch.zeros(3), torch.ones(3)).log_prob(value), value, create_graph=True)
    with pytest.raises(RuntimeError):
        grad.sum().backward()


def test_expand_is_the_distribution_itself_at_its_own_shape_and_broadcasts_otherwise():
    normal = DiagNormal(torch.zeros(4, 3), torch.ones(4, 3))
    assert normal.expand((4,)) is normal  # what Pyro's plate asks at every site
    wider = normal.expand((6, 4))
    assert wider.batch_shape == (6, 4) and wider.event_shape == (3,)
    assert wider.log_prob(torch.zeros(3)).shape == (6, 4)


def test_rsample_draws_the_noise_torch_normal_draws():
    loc, scale = torch.randn(4, 3), torch.rand(4, 3) + 0.5
    torch.manual_seed(3)
    ours = DiagNormal(loc, scale).rsample((2,))
    torch.manual_seed(3)
    theirs = reference(loc, scale).rsample((2,))
    assert ours.shape == (2, 4, 3) and torch.equal(ours, theirs)


def two_normals(seed):
    """(loc, scale) of q and of p, and KL(q || p) as torch computes it for Normal.to_event(1)."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) + 0.1)
    p = (torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) + 0.1)
    return q, p, kl_divergence(reference(*q), reference(*p))


def test_kl_and_entropy_equal_torch():
    q, p, expected = two_normals(2)
    assert torch.allclose(kl_divergence(DiagNormal(*q), DiagNormal(*p)), expected, atol=1e-5)
    assert torch.allclose(DiagNormal(*q).entropy(), reference(*q).entropy(), atol=1e-6)


def test_validation_rejects_a_nan_value():
    with pyro.validation_enabled(True), pytest.raises(ValueError):
        DiagNormal(torch.zeros(3), torch.ones(3), validate_args=True).log_prob(torch.tensor([0.0, float("nan"), 0.0]))


def test_a_network_of_ones_own_may_return_normal_to_event_and_mix_with_diag_normal():
    q, p, expected = two_normals(4)
    assert torch.allclose(kl_divergence(DiagNormal(*q), reference(*p)), expected, atol=1e-5)
    assert torch.allclose(kl_divergence(reference(*q), DiagNormal(*p)), expected, atol=1e-5)
    steps = unbind_steps(reference(torch.zeros(5, 4, 3), torch.ones(5, 4, 3)))
    assert len(steps) == 5 and isinstance(steps[0], DiagNormal) and steps[0].batch_shape == (4,)
    laplace = dist.Laplace(torch.zeros(5, 4, 3), 1.0).to_event(1)
    with pytest.raises(TypeError, match="diagonal Normal"):  # not silently turned into a Gaussian
        as_diag_normal(laplace)
    with pytest.raises(NotImplementedError):  # no KL, as torch has none: Pyro then samples it
        kl_divergence(DiagNormal(torch.zeros(3), torch.ones(3)), dist.Laplace(torch.zeros(3), 1.0).to_event(1))
