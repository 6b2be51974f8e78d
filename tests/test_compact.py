"""Compact storage (fp16 inputs and logits, uint8 images) against fp32 on the demo smoke's data and nets: the same
teacher member and mimic student, trained and scored from each store, predict the same test labels but for a few.

Stated tolerance: at most 2% of the 360 test digits change their predicted label (teacher member or student), and
test errors move by at most 2 points; measured here: see the numbers each test prints."""

import dataclasses

import torch

from distill import experiment
from distill.config import load_sweep
from distill.train import fit, infer

SMOKE = load_sweep("sweeps/demo.py", "smoke")
TOLERANCE = 0.02


def trained(compact: bool):
    data = dataclasses.replace(SMOKE.data, compact=compact)
    splits, transfer = experiment.prepare(data)
    member, _ = experiment.train_member(SMOKE.teachers[0], 0, splits, transfer)
    logits = experiment.harvest(member, splits, transfer, torch.float16 if compact else torch.float32)
    cell = next(c for c in SMOKE.cells() if c.target == "mimic" and c.bottleneck is None)
    torch.manual_seed(0)
    student = experiment.build_student(cell, splits)  # trained here: its predictions, not only its row
    x, target, loss = experiment.student_task(cell, splits, transfer, logits["transfer"])
    fit(student, x, target, loss, (splits.val_x, splits.val_y), cell.train)
    return splits, logits["test"].float(), infer(student, splits.test_x)


def test_compact_storage_changes_the_smokes_predictions_by_at_most_the_tolerance():
    torch.set_num_threads(1)  # identical kernels in both runs: the difference is the storage alone
    splits, teacher32, student32 = trained(compact=False)
    _, teacher16, student16 = trained(compact=True)
    y = splits.test_y
    for name, a, b in (("teacher member", teacher32, teacher16), ("mimic student", student32, student16)):
        changed = (a.argmax(1) != b.argmax(1)).float().mean().item()
        errors = [(v.argmax(1) != y).float().mean().item() for v in (a, b)]
        print(f"{name}: {changed:.2%} of test predictions changed; test error fp32 {errors[0]:.4f}, "
              f"compact {errors[1]:.4f}")
        assert changed <= TOLERANCE and abs(errors[0] - errors[1]) <= TOLERANCE
