"""Losses as small pure functions of (student output, target), averaged over the T examples of a batch.

`out` is the student's logits (T, C). The target is the teacher's logits (T, C) for the mimic losses
and labels (T,) for `cross_entropy`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mimic_l2(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The paper's loss: 1/(2T) * sum_t ||g(x_t) - z_t||^2 on logits (pre-softmax)."""
    return (out - z).pow(2).sum() / (2 * len(out))


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on hard labels, the baselines' loss."""
    return F.cross_entropy(out, y)


def kd(out: torch.Tensor, z: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al.'s distillation: T^2 * KL(softmax(z/T) || softmax(out/T)), mean over the batch.

    The T^2 factor keeps gradient magnitudes comparable across temperatures.
    """
    log_p = F.log_softmax(out / temperature, dim=1)
    log_q = F.log_softmax(z / temperature, dim=1)
    kl = (log_q.exp() * (log_q - log_p)).sum(1).mean()
    return temperature**2 * kl


def kd_labels(out: torch.Tensor, z: torch.Tensor, y: torch.Tensor, temperature: float = 4.0,
              weight: float = 1.0) -> torch.Tensor:
    """Hinton et al.'s mix: `weight` * kd(out, z, T) + (1 - weight) * cross-entropy with the labels y (T,).
    weight 1 is kd alone (the label term is not computed: it would cost a softmax per batch for nothing)."""
    soft = kd(out, z, temperature)
    return soft if weight == 1 else weight * soft + (1 - weight) * cross_entropy(out, y)


def prob_l2(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """L2 on softmax outputs, 1/(2T) * sum_t ||softmax(g(x_t)) - softmax(z_t)||^2 (the paper found it worse)."""
    return mimic_l2(out.softmax(1), z.softmax(1))
