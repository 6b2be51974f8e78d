"""The student sweep through Ray Tune: the smoke job end to end (on local disk and in S3), Optuna within a
cell, diverging trials."""

import dataclasses
import math

import pandas as pd
import pytest
import torch

from distill import experiment, files, models, pipeline, ray_sweep, report, results
from distill.__main__ import main
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, load_sweep, to_dict
from distill.train import TrainConfig

pytestmark = pytest.mark.ray


def test_smoke_job_gives_one_row_per_student(ray_local, storage):
    assert main(["run", "sweeps/demo.py", "--variant", "smoke", "--storage", storage]) == 0
    root = files.location(storage) / "demo-smoke"
    frame = results.load(root)
    # smoke grid: H=64 x k in {None, 16} x targets {mimic, labels} x 1 seed
    assert len(frame) == 4
    assert set(frame["status"]) == {"ok"}
    assert sorted(frame["target"]) == ["labels", "labels", "mimic", "mimic"]
    for col in ("hidden", "bottleneck", "target", "teacher", "seed", "train.lr", "params", "val_error",
                "test_error", "test_agreement", "test_logit_rmse", "epochs", "train_seconds", "trial_dir"):
        assert col in frame, col
    for _, row in frame.iterrows():
        k = plain(row["bottleneck"])  # <NA> for no bottleneck
        assert row["params"] == models.snn_params(64, 64, 10, k)  # digits: 8x8 inputs, 10 classes
        assert 0 <= row["test_error"] < 0.5 and 0.5 < row["test_agreement"] <= 1
    for path in ("results.csv", "results.json", "cache/ecnn.json", "teachers/ecnn/member-1/model.pt"):
        assert (root / path).exists(), path
    # Each trial's own checkpoint and row sit in its directory in the storage, where a retry on any node finds them.
    trials = [files.location(d) for d in frame["trial_dir"]]
    assert all(str(t).startswith(str(root / "students").split("?")[0]) for t in trials)
    assert all((t / "state.pt").exists() and (t / "row.json").exists() for t in trials)
    assert results.config(root)["name"] == "demo-smoke" and len((root / "runs").glob("*.json")) == 1
    assert_facts_match_the_record(root, frame)
    assert report.write(root).exists()  # the report reads the results and writes beside them
    if not root.remote:  # the same sweep in this process: the same columns, the same facts
        assert main(["run", "sweeps/demo.py", "--variant", "smoke", "--storage", f"{storage}/local", "--local"]) == 0
        in_process = results.load(root.parent / "local" / "demo-smoke")
        assert list(in_process.columns) == list(frame.columns)
        assert_facts_match_the_record(root.parent / "local" / "demo-smoke", in_process)


def plain(value):
    """A parquet cell as the config wrote it: <NA> (a nullable int) or NaN -> None, numpy scalars -> Python."""
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def assert_facts_match_the_record(root, frame) -> None:
    """Every row's settings are a cell of the recorded config; its sizes follow from the recorded data."""
    (path,) = (root / "runs").glob("*.json")
    record = files.read_json(path)
    assert record["config"] == results.config(root) and record["versions"]["torch"] == torch.__version__
    sweep = load_sweep("sweeps/demo.py", "smoke")
    assert record["config"] == to_dict(sweep)
    cells = [experiment.cell_columns(c) for c in sweep.cells()]
    rows = [{k: plain(row[k]) for k in cells[0]} for _, row in frame.iterrows()]
    assert sorted(map(str, rows)) == sorted(map(str, cells))  # each cell exactly once, with its settings
    data = record["data"]
    assert data["shape"] == [1, 8, 8] and data["classes"] == 10
    views = record["config"]["data"]["views"]
    for _, row in frame.iterrows():
        k = plain(row["bottleneck"])
        assert row["params"] == models.snn_params(math.prod(data["shape"]), row["hidden"], data["classes"], k)
        assert row["transfer_size"] == data["sizes"]["train"] * (1 + views if row["target"] == "mimic" else 1)
    (teacher,) = record["teachers"]
    member = files.read_json(root / "teachers" / "ecnn" / "member-0" / "result.json")
    assert (teacher["architecture"], teacher["params"]) == (member["architecture"], member["params"])
    assert teacher["architecture"] == "8c3-p-32-10" and teacher["members"] == 2


LABELS_ONLY = SweepConfig(
    name="labels", data=DataConfig(name="digits", val_size=200, views=0), hidden=(32,), targets=("labels",),
    student_teachers=(), student=StudentConfig(hidden=32, train=TrainConfig(lr=0.05, batch_size=64, epochs=4)))


def test_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(ray_local, tmp_path):
    # labels-aug gets an absurd learning rate: only its trial diverges, the labels trial finishes.
    sweep = dataclasses.replace(LABELS_ONLY, targets=("labels", "labels-aug"), target_train={
        "labels-aug": TrainConfig(lr=1e7, momentum=0.0, batch_size=64, epochs=4)})
    splits, transfer = experiment.prepare(sweep.data)
    executor = ray_sweep.Executor(sweep, tmp_path, splits, transfer)
    frame = pipeline.students(sweep, tmp_path, executor, print).set_index("target")
    assert frame.loc["labels-aug", "status"] == "failed"
    assert "lower the lr" in frame.loc["labels-aug", "reason"]
    # No invented scores: a failed trial's row has its settings, status and reason, and nothing measured.
    assert frame.loc[["labels-aug"], ["val_error", "test_error", "params", "epochs"]].isna().all(axis=None)
    assert frame.loc["labels", "status"] == "ok" and frame.loc["labels", "test_error"] < 0.5


def test_optuna_searches_the_learning_rate_within_each_cell_in_one_tuner(ray_local, tmp_path):
    sweep = dataclasses.replace(LABELS_ONLY, hidden=(16, 32), search=SearchConfig(samples=3, lr=(1e-3, 1e-1),
                                                                                  grace_epochs=2, concurrency=2))
    splits, transfer = experiment.prepare(sweep.data)
    frame = pipeline.students(sweep, tmp_path, ray_sweep.Executor(sweep, tmp_path, splits, transfer), print)
    # Each cell (H=16, H=32) got its own 3 samples, all from one Tuner.
    assert sorted(frame["hidden"]) == [16, 16, 16, 32, 32, 32]
    assert len(list((tmp_path / "ray").glob("students-*-search"))) == 1
    assert frame["train.lr"].between(1e-3, 1e-1).all()
    # Three settings per cell; each cell's search is seeded alike, so both cells try the same candidates.
    assert (frame.groupby("hidden")["train.lr"].nunique() == 3).all()
    assert set(frame["status"]) <= {"ok", "stopped"} and "ok" in set(frame["status"])
