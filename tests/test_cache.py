"""The logit cache: one verified chunk per member and split, the manifest's errors of every member and first-n
sub-ensemble computed from them, and students given only their teacher's mean."""

import dataclasses

import pytest
import torch

from distill import cache, experiment, files, local, pipeline
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig

TEACHER = TeacherConfig(name="t", arch="cnn", members=3, arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
SWEEP = SweepConfig(name="cache", data=DataConfig(name="digits", val_size=200, views=1), teachers=(TEACHER,),
                    hidden=(16,), targets=("mimic", "labels"), student_teachers=("t[:2]",),
                    student=StudentConfig(hidden=16, train=TrainConfig(epochs=1)))


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    splits, transfer = experiment.prepare(SWEEP.data)
    pipeline.teachers(SWEEP, root, local.Executor(SWEEP, root, splits, transfer, print), print)
    return root, splits, transfer


def chunk(root, index: int, split: str) -> torch.Tensor:
    """A member's logits read straight from its chunk file, as the manifest names it."""
    entry = files.read_json(root / "cache" / "t.json")["chunks"][index][split]
    return files.torch_load(root / "cache" / "t" / entry["file"])["logits"]


def test_sub_ensemble_errors_match_the_per_member_logits_by_hand(harvested):
    root, splits, _ = harvested
    manifest = files.read_json(root / "cache" / "t.json")
    for split in ("val", "test"):
        y = splits.split(split)[1]
        members = torch.stack([chunk(root, i, split).float() for i in range(3)])  # (3, N, 10)
        by_hand = {n: (members[:n].mean(0).argmax(1) != y).float().mean().item() for n in (1, 2, 3)}
        assert manifest["members"][0][f"{split}_error"] == pytest.approx(by_hand[1])
        assert manifest["subsets"]["t[:2]"][f"{split}_error"] == pytest.approx(by_hand[2])
        assert manifest["ensemble"][f"{split}_error"] == pytest.approx(by_hand[3])
    assert set(manifest["subsets"]) == {"t[:2]"}  # t[:1] is member 0, t[:3] the ensemble


def test_chunks_are_compact_and_below_any_single_object_limit(harvested):
    root, splits, transfer = harvested
    manifest = files.read_json(root / "cache" / "t.json")
    assert manifest["dtype"] == "torch.float16" and chunk(root, 2, "transfer").dtype == torch.float16
    assert [len(m) for m in manifest["chunks"]] == [3, 3, 3]  # one per member and split
    assert manifest["shapes"]["transfer"] == [3, len(transfer.x), 10]
    assert chunk(root, 1, "transfer").shape == (len(transfer.x), 10)


def test_students_receive_only_their_teachers_mean(harvested):
    root, splits, transfer = harvested
    jobs = pipeline.jobs(SWEEP, root)
    uses = pipeline.uses(jobs)
    # mimic learns from t[:2] on the transfer set; both compare with t[:2] on test: nothing else is formed.
    assert uses == {"t[:2]": {"transfer", "test"}}
    logits = cache.teacher_logits(root, SWEEP.data, SWEEP.teachers, uses)
    assert set(logits) == {("t[:2]", "transfer"), ("t[:2]", "test")}
    want = (chunk(root, 0, "transfer").float() + chunk(root, 1, "transfer").float()) / 2
    torch.testing.assert_close(logits["t[:2]", "transfer"].float(), want, atol=2e-3, rtol=1e-3)  # fp16 rounding
    mimic = next(j for j in jobs if j.cell.target == "mimic")
    labels = next(j for j in jobs if j.cell.target == "labels")
    teacher, reference = pipeline.given(mimic, logits)
    assert teacher is logits["t[:2]", "transfer"] and reference is logits["t[:2]", "test"]
    assert pipeline.given(labels, logits) == (None, logits["t[:2]", "test"])


def test_fp32_store_keeps_fp32_logits(tmp_path):
    sweep = dataclasses.replace(SWEEP, data=dataclasses.replace(SWEEP.data, compact=False),
                                teachers=(dataclasses.replace(TEACHER, members=1),), student_teachers=("t",))
    splits, transfer = experiment.prepare(sweep.data)
    pipeline.teachers(sweep, tmp_path, local.Executor(sweep, tmp_path, splits, transfer, print), print)
    assert cache.mean_logits(tmp_path, sweep.data, sweep.teachers[0], [0], "test").dtype == torch.float32
