"""What a student can learn from, defined once: each target's loss, inputs, whether it needs a teacher, and
how the report names, orders and colours it. Config validation, the experiment step and the report read this
table; adding a target is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distill import losses


@dataclass(frozen=True)
class Target:
    name: str  # as sweeps and results rows spell it
    # (student logits (B, C), target, the student's config.StudentConfig, a layer above this table): the target is
    # the teacher's logits (B, C), the labels (B,), or for a target with `labels` both, as (logits, labels).
    loss: Callable[[torch.Tensor, object, object], torch.Tensor]
    inputs: str  # "train": the labelled train inputs; "transfer": the transfer set (train + augmented views)
    teacher: bool  # learns from a teacher's logits (else from labels)
    title: str  # how the report names it
    order: int  # table order: baselines first, as in the paper
    colour: str  # matplotlib colour of its curves
    labels: bool = False  # a teacher target that also gets the labels of its inputs (KD's label term)
    settings: tuple[str, ...] = ()  # StudentConfig fields its loss reads, which a search may sample


TARGETS = {t.name: t for t in (
    Target("labels", lambda out, y, _: losses.cross_entropy(out, y), "train", False,
           "labels (train inputs)", 0, "C3"),
    Target("labels-aug", lambda out, y, _: losses.cross_entropy(out, y), "transfer", False,
           "labels (transfer inputs)", 1, "C1"),
    Target("kd", lambda out, zy, cell: losses.kd_labels(out, *zy, cell.temperature, cell.kd_weight), "transfer",
           True, "KD (softened probabilities)", 2, "C2", labels=True, settings=("temperature", "kd_weight")),
    Target("prob-l2", lambda out, z, _: losses.prob_l2(out, z), "transfer", True, "L2 on probabilities", 3, "C4"),
    Target("mimic", lambda out, z, _: losses.mimic_l2(out, z), "transfer", True, "mimic (L2 on logits)", 4, "C0"),
)}


def needs_teacher(name: str) -> bool:
    """Whether target `name` learns from a teacher (an unknown name does not: validation refuses it)."""
    target = TARGETS.get(name)
    return target is not None and target.teacher
