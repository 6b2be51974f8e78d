"""Each loss against a value computed by hand."""

import math

import pytest
import torch

from distill import losses


def test_mimic_l2_is_half_mean_squared_norm_over_the_batch():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    z = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    # ||(1,2)||^2 = 5, ||(-3,-2)||^2 = 13; 1/(2T) * 18 with T = 2.
    assert losses.mimic_l2(out, z).item() == pytest.approx(18 / 4)


def test_cross_entropy_by_hand():
    out = torch.tensor([[2.0, 0.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert losses.cross_entropy(out, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)


def test_kd_by_hand_with_temperature_squared_factor():
    out, z, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[4.0, 0.0]]), 2.0
    q = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]  # teacher softmax(z / T)
    kl = sum(qi * math.log(qi / 0.5) for qi in q)  # student softmax(0 / T) = (0.5, 0.5)
    assert losses.kd(out, z, temperature=t).item() == pytest.approx(t**2 * kl, rel=1e-6)
    assert losses.kd(z, z, temperature=t).item() == pytest.approx(0.0, abs=1e-7)


def test_prob_l2_by_hand():
    out, z = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # softmax(z) = (0.75, 0.25)
    assert losses.prob_l2(out, z).item() == pytest.approx((0.25**2 + 0.25**2) / 2, rel=1e-6)


def test_mimic_l2_gradient_is_residual_over_batch_size():
    out = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    z = torch.zeros(2, 2)
    losses.mimic_l2(out, z).backward()
    assert torch.equal(out.grad, out.detach() / 2)
