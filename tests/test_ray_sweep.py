"""The student sweep through Ray Tune: the smoke job end to end (on local disk and in S3), Optuna within a
cell, diverging trials."""

import dataclasses

from distill import experiment, files, models, pipeline, ray_sweep, report, results
from distill.__main__ import main
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig


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
        k = None if row["bottleneck"] != row["bottleneck"] else int(row["bottleneck"])  # NaN for no bottleneck
        assert row["params"] == models.snn_params(64, 64, 10, k)  # digits: 8x8 inputs, 10 classes
        assert 0 <= row["test_error"] < 0.5 and 0.5 < row["test_agreement"] <= 1
    for path in ("results.csv", "results.json", "cache/ecnn.json", "teachers/ecnn/member-1/model.pt"):
        assert (root / path).exists(), path
    # Each trial's own checkpoint and row sit in its directory in the storage, where a retry on any node finds them.
    trials = [files.location(d) for d in frame["trial_dir"]]
    assert all(str(t).startswith(str(root / "students").split("?")[0]) for t in trials)
    assert all((t / "state.pt").exists() and (t / "row.json").exists() for t in trials)
    assert results.config(root)["name"] == "demo-smoke" and len((root / "runs").glob("*.json")) == 1
    assert report.write(root).exists()  # the report reads the results and writes beside them


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
    assert frame.loc["labels", "status"] == "ok" and frame.loc["labels", "test_error"] < 0.5


def test_optuna_searches_the_learning_rate_within_a_cell(ray_local, tmp_path):
    sweep = dataclasses.replace(LABELS_ONLY, search=SearchConfig(samples=3, lr=(1e-3, 1e-1), grace_epochs=2,
                                                                 concurrency=2))
    splits, transfer = experiment.prepare(sweep.data)
    frame = pipeline.students(sweep, tmp_path, ray_sweep.Executor(sweep, tmp_path, splits, transfer), print)
    assert len(frame) == 3
    assert frame["train.lr"].between(1e-3, 1e-1).all() and frame["train.lr"].nunique() == 3
    assert set(frame["status"]) <= {"ok", "stopped"} and "ok" in set(frame["status"])
