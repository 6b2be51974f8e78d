"""A teacher or student is reused only when it was trained exactly as the sweep now asks: a changed
architecture or data split retrains, a moved data directory retrains nothing, a changed student grid trains
its new cells and its results hold only them. Runs the pipeline in-process (no Ray): about 20 s."""

import dataclasses
import shutil

import pytest
from test_data import no_md5, write_cifar  # noqa: F401  (no_md5 is a fixture)

from distill import cache, experiment, local, pipeline, results
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig, validate
from distill.errors import UserError
from distill.train import TrainConfig

TEACHER = TeacherConfig(name="t", arch="cnn", members=2, arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
SWEEP = SweepConfig(name="id", data=DataConfig(name="digits", val_size=200, views=0), teachers=(TEACHER,),
                    hidden=(16,), targets=("mimic", "labels"), student_teachers=("t",),
                    student=StudentConfig(hidden=16, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=2)))


def run(sweep: SweepConfig, root) -> tuple[list[str], object]:
    """`distill run --local`'s two phases; returns the log lines and the results frame."""
    splits, transfer = experiment.prepare(sweep.data)
    logs: list[str] = []
    executor = local.Executor(sweep, root, splits, transfer, logs.append)
    pipeline.teachers(sweep, root, executor, logs.append)
    return logs, pipeline.students(sweep, root, executor, logs.append)


def trained(logs: list[str]) -> list[str]:
    return [line.split(":")[0] for line in logs if ": test error" in line and line.startswith("teacher ")]


def test_changed_teacher_architecture_retrains_its_members(tmp_path):
    run(SWEEP, tmp_path)
    wider = dataclasses.replace(TEACHER, arch_args={**TEACHER.arch_args, "channels": (6,)})
    logs, _ = run(dataclasses.replace(SWEEP, teachers=(wider,)), tmp_path)
    assert trained(logs) == ["teacher t[0]", "teacher t[1]"]
    assert "teacher t[0]: trained with other settings (teacher.arch_args.channels changed): training it again" in logs
    assert any("inputs cached" in line for line in logs)  # harvested again, from the new members
    assert cache.member_result(tmp_path, SWEEP.data, wider, 0)[0] is not None
    assert cache.member_result(tmp_path, SWEEP.data, TEACHER, 0) == (
        None, "trained with other settings (teacher.arch_args.channels changed)")


def test_changed_data_seed_retrains_and_reharvests(tmp_path):
    _, before = run(SWEEP, tmp_path)
    reseeded = dataclasses.replace(SWEEP, data=dataclasses.replace(SWEEP.data, seed=1))  # another val/test split
    logs, after = run(reseeded, tmp_path)
    assert trained(logs) == ["teacher t[0]", "teacher t[1]"]
    assert any("data.seed changed" in line for line in logs)
    assert any("inputs cached" in line for line in logs)
    assert not any("finished before" in line for line in logs)  # the students retrain on the new split too
    assert set(after["trial_dir"]).isdisjoint(before["trial_dir"])


def test_moved_data_directory_retrains_nothing(tmp_path, no_md5):  # noqa: F811
    (tmp_path / "a").mkdir()
    write_cifar(tmp_path / "a")
    data = DataConfig(name="cifar10", root=str(tmp_path / "a"), val_size=10, views=0)
    sweep = dataclasses.replace(SWEEP, data=data)
    run(sweep, tmp_path / "out")
    shutil.move(tmp_path / "a", tmp_path / "b")  # the same files, elsewhere (another mount point on a node)
    logs, frame = run(dataclasses.replace(sweep, data=dataclasses.replace(data, root=str(tmp_path / "b"))),
                      tmp_path / "out")
    assert trained(logs) == []
    assert "teachers: 2 members finished before with these settings, not retrained" in logs
    assert "teacher t: logits cached before, not harvested again" in logs
    assert "students: 2 of 2 cells finished before with these settings, kept" in logs and len(frame) == 2


def test_duplicate_teacher_names_are_refused():
    with pytest.raises(UserError, match="has 't' twice"):
        validate(dataclasses.replace(SWEEP, teachers=(TEACHER, dataclasses.replace(TEACHER, arch="dnn",
                                                                                   arch_args={}))))


def test_changed_student_grid_trains_new_cells_and_results_hold_only_them(tmp_path):
    _, first = run(SWEEP, tmp_path)
    conv = dataclasses.replace(SWEEP, hidden=(24,), bottleneck=(8,),
                               student=dataclasses.replace(SWEEP.student, arch="conv_snn",
                                                           arch_args={"channels": 4, "kernel": 3}))
    logs, frame = run(conv, tmp_path)
    assert not any(line.startswith("students:") and "finished before" in line for line in logs)
    assert len(frame) == 2 and set(frame["arch"]) == {"conv_snn"} and set(frame["hidden"]) == {24}
    assert set(frame["bottleneck"]) == {8}
    # The results on disk hold only this grid's rows, beside the config that produced them.
    assert len(results.load(tmp_path)) == 2 and results.config(tmp_path)["student"]["arch"] == "conv_snn"

    # A grid that keeps the first cells and adds one: the kept cells are not trained again.
    both = dataclasses.replace(SWEEP, hidden=(16, 20))
    logs, frame = run(both, tmp_path)
    assert "students: 2 of 4 cells finished before with these settings, kept" in logs
    kept = frame[frame["hidden"] == 16].set_index("target")["train_seconds"]
    assert kept.to_dict() == first.set_index("target")["train_seconds"].to_dict()
