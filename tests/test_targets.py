"""Every target of distill.targets trains a student through the one experiment step, on what its table entry
says: labels on the train inputs, the others on the transfer set, teacher targets from the teacher's logits."""

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
    assert y.dtype == (torch.float16 if TARGETS[name].teacher else torch.int64)
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
