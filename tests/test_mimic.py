"""End to end on real digits: a small CNN teacher on mnist5k, and a shallow student that learns it by
mimic_l2 on its logits over the transfer set.

Thresholds (1,000 test digits, so one error is 0.1 points): teacher below 4%, student below 6% test error
and at least 95% top-1 agreement with the teacher. Measured when written: teacher 2.1-2.3%, student
4.3-5.0%, agreement 96-97%.
"""

import torch

from distill import experiment
from distill.config import DataConfig, StudentConfig, TeacherConfig
from distill.train import TrainConfig, error


def test_shallow_student_mimics_cnn_teacher_on_mnist5k():
    torch.set_num_threads(2)
    splits, transfer = experiment.prepare(DataConfig(name="mnist5k", views=2))
    teacher = TeacherConfig(name="cnn", arch="cnn", arch_args={"channels": (16, 32), "hidden": (128,),
                                                               "kernel": 3},
                            train=TrainConfig(lr=0.05, weight_decay=5e-4, batch_size=128, epochs=3))
    model, _ = experiment.train_member(teacher, 0, splits, transfer)
    logits = experiment.harvest(model, splits, transfer, torch.float16)  # as a compact cache holds them
    teacher_error = error(logits["test"], splits.test_y)

    student = StudentConfig(hidden=512, target="mimic", teacher="cnn",
                            train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, epochs=15))
    row = experiment.run_student(student, splits, transfer, logits["transfer"], logits["test"])
    print(f"teacher {teacher_error:.4f} student {row['test_error']:.4f} agreement {row['test_agreement']:.4f}")
    assert teacher_error < 0.04
    assert row["test_error"] < 0.06
    assert row["test_agreement"] >= 0.95
    # The student regressed the logits themselves, not just the argmax: RMSE well below the logits' spread.
    assert row["test_logit_rmse"] < 0.5 * logits["test"].float().std().item()
