"""The fair protocol (SearchConfig(per_seed=False)): each cell is searched on the first seed, the setting is chosen
by val error alone and recorded, and every other seed trains once with it. The executor here only writes rows
whose val and test errors disagree about the best setting, so the test sees exactly what chose."""

import dataclasses

from distill import experiment, files, pipeline, results
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig

LRS = [0.1, 0.01, 0.001]
SWEEP = SweepConfig(name="protocol", data=DataConfig(name="digits"), hidden=(16, 32), targets=("labels",),
                    student_teachers=(), seeds=(0, 1, 2), student=StudentConfig(hidden=16, train=TrainConfig()),
                    search=SearchConfig(samples=3, lr=(1e-3, 1e-1), dropout=(0.0, 0.5), per_seed=False))


def val_error(lr: float, hidden: int) -> float:  # val prefers 0.01 for H=16 and 0.001 for H=32
    return abs(lr - (0.01 if hidden == 16 else 0.001))


def scored_test_error(lr: float, hidden: int) -> float:  # test would have chosen 0.1 every time
    return abs(lr - 0.1)


class Scripted:
    """An executor that trains nothing: a searched job gets one row per lr of LRS (dropout 0.25), a fixed one a
    row of its cell's own settings."""

    def __init__(self, root):
        self.root, self.calls = root, []

    def run_students(self, jobs, logits, done, search):
        self.calls.append((search, [j.id for j in jobs]))
        for job in jobs:
            settings = [{"lr": lr, "dropout": 0.25} for lr in LRS] if search else [{}]
            for searched in settings[len(done[job.id]):]:
                cell = pipeline.searched_cell(job, searched)
                row = pipeline.trial_dir(self.root, job, searched or None) / "row.json"
                files.write_json(row, {
                    **experiment.cell_columns(cell), "status": "ok", "trial_dir": "x",
                    "val_error": val_error(cell.train.lr, cell.hidden),
                    "test_error": scored_test_error(cell.train.lr, 0)})
        return []


def test_settings_are_chosen_on_the_first_seed_by_val_only_and_reused(tmp_path):
    record = tmp_path / "protocol" / "runs" / "r.json"
    files.write_json(record, {"command": ["distill"]})
    executor = Scripted(files.location(tmp_path / "protocol"))
    frame = pipeline.students(SWEEP, tmp_path / "protocol", executor, print, keys={}, record_path=record)
    (searched, first), (fixed_search, fixed) = executor.calls
    assert searched and len(first) == 2 and all("-s0-" in j for j in first)  # one search per cell, on seed 0
    assert not fixed_search and len(fixed) == 4 and not any("-s0-" in j for j in fixed)
    choices = files.read_json(record)["choices"]
    assert choices == files.read_json(tmp_path / "protocol" / "choices.json")
    assert {c["hidden"]: c["settings"] for c in choices} == {16: {"lr": 0.01, "dropout": 0.25},
                                                            32: {"lr": 0.001, "dropout": 0.25}}
    rows = frame[frame["seed"] > 0]
    assert len(rows) == 4 and set(zip(rows["hidden"], rows["train.lr"], strict=True)) == {(16, 0.01), (32, 0.001)}
    assert (rows["arch_args.dropout"] == 0.25).all()  # label targets: dropout is searched and reused too
    assert len(results.load(tmp_path / "protocol")) == 2 * 3 + 4  # every search trial and every other seed


def test_a_teacher_target_searches_no_dropout():
    sweep = dataclasses.replace(SWEEP, targets=("mimic", "labels"))
    assert pipeline.space(sweep, "mimic") == ["lr"] and pipeline.space(sweep, "labels") == ["lr", "dropout"]


def test_choice_reads_val_error_only():
    rows = [{"status": "ok", "val_error": 0.2, "test_error": 0.0},
            {"status": "ok", "val_error": 0.1, "test_error": 0.9}, {"status": "failed"}]
    assert pipeline.choose(rows) is rows[1]
    assert pipeline.choose([{"status": "stopped"}]) is None


def test_a_rerun_trains_nothing_again(tmp_path):
    executor = Scripted(files.location(tmp_path / "p"))
    pipeline.students(SWEEP, tmp_path / "p", executor, print, keys={})
    executor.calls.clear()
    pipeline.students(SWEEP, tmp_path / "p", executor, print, keys={})
    assert executor.calls == []


def test_teacher_targets_are_searched_with_the_first_teacher_and_reused_for_the_others(tmp_path, monkeypatch):
    sweep = dataclasses.replace(SWEEP, hidden=(16,), targets=("mimic",), student_teachers=("a", "b"),
                                teachers=(TeacherConfig(name="a"), TeacherConfig(name="b")))
    monkeypatch.setattr(pipeline.cache, "teacher_logits", lambda *args: {})  # the scripted executor reads none
    executor = Scripted(files.location(tmp_path))
    frame = pipeline.students(sweep, tmp_path, executor, print, keys={"a": "ka", "b": "kb"})
    (_, searched), (_, fixed) = executor.calls
    assert [j.split("-")[3] for j in searched] == ["a"]  # mimic-h16-k0-a-s0-...
    assert sorted(j.split("-")[3:5] for j in fixed) == [["a", "s1"], ["a", "s2"], ["b", "s0"], ["b", "s1"],
                                                        ["b", "s2"]]
    assert set(frame[frame["teacher"] == "b"]["train.lr"]) == {0.01}  # a's choice, not searched again
    reused = frame[(frame["teacher"] == "b") | (frame["seed"] > 0)]
    assert reused["arch_args.dropout"].isna().all()  # mimic: dropout is not a searched setting, none is reused


def test_kds_temperature_and_weight_are_searched_for_kd_alone_and_read_back_from_its_row():
    sweep = dataclasses.replace(SWEEP, targets=("kd", "mimic", "labels"), student_teachers=("t",),
                                teachers=(TeacherConfig(name="t"),),
                                search=dataclasses.replace(SWEEP.search, temperature=(1.0, 8.0), kd_weight=(0.0, 1.0)))
    assert pipeline.space(sweep, "kd") == ["lr", "temperature", "kd_weight"]
    assert pipeline.space(sweep, "mimic") == ["lr"] and pipeline.space(sweep, "labels") == ["lr", "dropout"]
    job = next(j for j in pipeline.jobs(sweep, "unused", keys={"t": "kt"}) if j.cell.target == "kd")
    sampled = {"lr": 0.02, "temperature": 3.0, "kd_weight": 0.4}
    cell = pipeline.searched_cell(job, sampled)
    assert (cell.train.lr, cell.temperature, cell.kd_weight) == (0.02, 3.0, 0.4)
    assert pipeline.setting(experiment.cell_columns(cell), pipeline.space(sweep, "kd")) == sampled
