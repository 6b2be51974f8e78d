"""Every target of distill.targets trains a student through the one experiment step, on what its table entry
says: labels on the train inputs, the others on the transfer set, teacher targets from the teacher's logits."""

import dataclasses

import pytest
import torch

from distill import experiment, losses
from distill.config import DataConfig, StudentConfig
from distill.targets import TARGETS, needs_teacher
from distill.train import TrainConfig

DATA = DataConfig(name="digits", val_size=200, views=1)


@pytest.fixture(scope="module")
def prepared():
    splits, transfer = experiment.prepare(DATA)
    torch.manual_seed(0)
    # A stand-in teacher that is right on every input: its logits are a scaled one-hot of the true label.
    # fp16, as a compact logit cache holds them: fit converts each batch.
    logits = 8.0 * torch.nn.functional.one_hot(splits.train_y[transfer.source], splits.classes).half()
    return splits, transfer, logits


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_learns_from_what_its_entry_says(name, prepared):
    splits, transfer, teacher = prepared
    cell = StudentConfig(hidden=64, target=name, teacher="t" if needs_teacher(name) else "",
                         train=TrainConfig(optimizer="adam", lr=3e-3, epochs=6))
    x, y, loss = experiment.student_task(cell, splits, transfer, teacher if needs_teacher(name) else None)
    assert len(x) == (len(splits.train_x) if TARGETS[name].inputs == "train" else len(transfer.x))
    z, labels = y if TARGETS[name].labels else (y, None) if TARGETS[name].teacher else (None, y)
    assert z is None or (z.dtype == torch.float16 and len(z) == len(x))
    assert labels is None or (labels.dtype == torch.int64 and len(labels) == len(x))
    row = experiment.run_student(cell, splits, transfer, teacher if needs_teacher(name) else None, None)
    assert row["status"] == "ok" and row["test_error"] < 0.3  # 10 classes: chance is 0.9


def test_prob_l2_target_is_the_loss_on_probabilities(prepared):
    splits, transfer, teacher = prepared
    cell = StudentConfig(hidden=8, target="prob-l2", teacher="t")
    _, z, loss = experiment.student_task(cell, splits, transfer, teacher)
    out = torch.randn(5, splits.classes)
    assert loss(out, z[:5].float()).item() == pytest.approx(losses.prob_l2(out, z[:5].float()).item())


def test_a_teacher_target_without_logits_is_one_line():
    from distill.errors import UserError

    splits, transfer = experiment.prepare(DataConfig(name="digits", val_size=200, views=0))
    with pytest.raises(UserError, match="needs teacher logits"):
        experiment.student_task(StudentConfig(hidden=8, target="kd", teacher="t"), splits, transfer, None)


def test_kd_weight_mixes_kd_with_cross_entropy_on_each_views_label(prepared):
    splits, transfer, teacher = prepared
    cell = StudentConfig(hidden=8, target="kd", teacher="t", temperature=2.0, kd_weight=0.25)
    _, (z, y), loss = experiment.student_task(cell, splits, transfer, teacher)
    assert torch.equal(y, splits.train_y[transfer.source])  # a view carries its source image's label
    out, rows = torch.randn(6, splits.classes), torch.tensor([0, 1, len(splits.train_x), len(y) - 1, 5, 7])
    zb, yb = z[rows].float(), y[rows]
    # by hand: 0.25 * T^2 KL(softmax(z/T) || softmax(out/T)) + 0.75 * CE(out, y), T = 2
    q, log_p = (zb / 2).softmax(1), (out / 2).log_softmax(1)
    soft = 4 * (q * (q.log() - log_p)).sum(1).mean()
    hard = -out.log_softmax(1)[torch.arange(6), yb].mean()
    assert loss(out, (zb, yb)).item() == pytest.approx((0.25 * soft + 0.75 * hard).item(), rel=1e-5)
    pure = dataclasses.replace(cell, kd_weight=1.0)
    assert experiment.student_task(pure, splits, transfer, teacher)[2](out, (zb, yb)).item() == pytest.approx(
        losses.kd(out, zb, 2.0).item(), rel=1e-6)
