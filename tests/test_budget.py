"""distill.budget: what a trial holds is counted from the data as stored, the logits it receives and its model,
and a sweep that cannot fit this machine is refused in one line that says what to change."""

import types

import pytest
import torch

from distill import budget, experiment, pipeline
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.errors import UserError
from distill.train import TrainConfig

SWEEP = SweepConfig(name="budget", data=DataConfig(name="digits", val_size=200, views=2),
                    teachers=(TeacherConfig(name="t", members=3),), hidden=(100,), bottleneck=(None, 10),
                    targets=("mimic", "labels"), student_teachers=("t",),
                    student=StudentConfig(hidden=100, train=TrainConfig(optimizer="adam", batch_size=50)))


@pytest.fixture(scope="module")
def prepared():
    return experiment.prepare(SWEEP.data)


def test_a_trial_counts_its_data_its_teachers_mean_and_its_model(prepared):
    splits, transfer = prepared
    jobs = {(j.cell.target, j.cell.bottleneck): j for j in pipeline.jobs(SWEEP, None, keys={"t": ""})}
    mimic = budget.trial(jobs["mimic", None].cell, jobs["mimic", None], splits, transfer, itemsize=2)
    # Digits as stored: fp16, 2 bytes per pixel: train, val, test, and the transfer set (train again + 2 views);
    # int64 labels and sources.
    pixels = 2 * 64 * (len(splits.train_y) * 4 + len(splits.val_y) + len(splits.test_y))
    labels = 8 * (len(splits.train_y) + len(splits.val_y) + len(splits.test_y) + len(transfer.source))
    stats = 2 * 4 * 4  # the mean and std, (1, 1, 1, 1) fp32, beside each of train, val, test and transfer
    assert mimic["data"] == pixels + labels + stats
    assert mimic["logits"] == 2 * 10 * (len(transfer.x) + len(splits.test_y))  # its teacher's mean: transfer, test
    params = 64 * 100 + 100 + 100 * 10 + 10
    assert mimic["model"] == params * 4 * 5  # weights, gradients, best copy, Adam's two moments
    labels_trial = budget.trial(jobs["labels", None].cell, jobs["labels", None], splits, transfer, itemsize=2)
    assert labels_trial["logits"] == 2 * 10 * len(splits.test_y)  # compared with the teacher on test only


def test_a_sweep_too_big_for_host_memory_is_refused_with_what_to_change(prepared, monkeypatch):
    splits, transfer = prepared
    monkeypatch.setattr(budget.psutil, "virtual_memory", lambda: types.SimpleNamespace(available=50 * 2**20))
    with pytest.raises(UserError) as e:
        budget.check_fits(SWEEP, splits, transfer, "cpu", on_this_machine=True)
    message = str(e.value)
    assert "\n" not in message and "GiB of host memory" in message and "SearchConfig.concurrency" in message
    budget.check_fits(SWEEP, splits, transfer, "cpu", on_this_machine=False)  # other nodes: not ours to count


def test_a_sweep_that_fits_passes(prepared):
    splits, transfer = prepared
    budget.check_fits(SWEEP, splits, transfer, torch.device("cpu"), on_this_machine=True)
