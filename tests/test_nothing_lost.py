"""Nothing half-written is trusted: writes are atomic, and the file written last (result.json for a member,
the manifest for a logit cache) is what marks the work done, on local disk and in object storage."""

import dataclasses
import errno
import os
import subprocess
import sys
import time

import pytest
import torch

from distill import cache, experiment, files, local, pipeline, results
from distill.__main__ import main
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.errors import UserError
from distill.train import TrainConfig

TEACHER = TeacherConfig(name="t", arch="cnn", members=1, arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
SWEEP = SweepConfig(name="lost", data=DataConfig(name="digits", val_size=200, views=0), teachers=(TEACHER,))


class FailingMove:
    """An object store whose final copy fails (the connection drops after the temp object is written)."""

    def __init__(self, fs):
        self.fs = fs

    def __getattr__(self, name):
        return getattr(self.fs, name)

    def move(self, *args):
        raise OSError("connection reset")


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(storage, monkeypatch):
    path = files.location(storage) / "f.json"
    files.write_json(path, {"v": 1})

    def crash(*args):
        raise OSError("disk full")

    if path.remote:
        path = files.Location(FailingMove(path.fs), path.path, path.query, path.scheme)
    else:
        monkeypatch.setattr(files.os, "fsync", crash)  # dies after writing the temp file, before the rename
    with pytest.raises(OSError):
        files.write_json(path, {"v": 2})
    assert files.read_json(path) == {"v": 1}
    assert [p.name for p in path.parent.glob("*")] == ["f.json"]


def test_locations_name_the_same_place_as_ray(s3_server):
    uri = f"s3://distill-tests/a/b?{s3_server}"
    root = files.location(uri)
    assert str(root / "ray") == f"s3://distill-tests/a/b/ray?{s3_server}"  # options stay at the end
    assert root.name == "b" and str(root.parent) == f"s3://distill-tests/a?{s3_server}"
    (root / "x" / "y.json").write_bytes(b"{}")
    assert (root / "x").is_dir() and (root / "x" / "y.json").exists() and not (root / "z").exists()
    assert files.location("~/r").path == os.path.expanduser("~/r") and files.location("file:///tmp/r").path == "/tmp/r"


def remove(location: files.Location) -> None:
    if location.remote:
        location.fs.delete_file(location.path)
    else:
        os.remove(location)


def test_interrupted_member_and_harvest_are_redone_not_trusted(storage):
    splits, transfer = experiment.prepare(SWEEP.data)
    logs: list[str] = []
    executor = local.Executor(SWEEP, storage, splits, transfer, logs.append)
    pipeline.teachers(SWEEP, storage, executor, logs.append)
    member = cache.member_dir(storage, "t", 0)
    pt, manifest = cache.cache_paths(storage, "t")

    # A member killed between writing model.pt and result.json: not done, so it is trained again.
    remove(member / "result.json")
    assert cache.member_result(storage, SWEEP.data, TEACHER, 0) == (None, "not trained yet")
    # A harvest killed before its manifest: the cache does not count, and is harvested again.
    remove(manifest)
    assert not cache.cached(storage, SWEEP.data, TEACHER)
    logs.clear()
    pipeline.teachers(SWEEP, storage, executor, logs.append)
    assert any("t[0]: test error" in line for line in logs) and any("inputs cached" in line for line in logs)
    assert cache.mean_logits(storage, SWEEP.data, TEACHER, [0], "test").shape == (len(splits.test_y), 10)

    # A damaged member file is refused with the fix, not silently used.
    (member / "model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        cache.member_result(storage, SWEEP.data, TEACHER, 0)


def test_chunked_cache_killed_mid_write_keeps_the_old_cache_or_none(storage, monkeypatch):
    two = dataclasses.replace(TEACHER, members=2)
    sweep = dataclasses.replace(SWEEP, teachers=(two,))
    splits, transfer = experiment.prepare(sweep.data)
    pipeline.teachers(sweep, storage, local.Executor(sweep, storage, splits, transfer, print), print)
    old = cache.expected_key(storage, sweep.data, two)
    before = cache.mean_logits(storage, sweep.data, two, [0, 1], "test", old)
    # Retrained members (another epoch count) make a new key; the first one's harvest dies after its 3 chunks,
    # before the record of them.
    again = dataclasses.replace(two, train=dataclasses.replace(two.train, epochs=2))
    sweep = dataclasses.replace(sweep, teachers=(again,))
    executor = local.Executor(sweep, storage, splits, transfer, print)
    real, written = files.write_bytes, []

    def dies(path, payload):
        if "/cache/t/" in str(path):
            if len(written) == 3:
                raise KeyboardInterrupt  # a kill: nothing after this runs
            written.append(str(path))
        real(path, payload)

    monkeypatch.setattr(files, "write_bytes", dies)
    with pytest.raises(KeyboardInterrupt):
        pipeline.teachers(sweep, storage, executor, print)
    monkeypatch.setattr(files, "write_bytes", real)
    # The old cache is whole: its manifest and every chunk it names, verified.
    assert files.read_json(cache.cache_paths(storage, "t")[1])["key"] == old
    assert torch.equal(cache.mean_logits(storage, sweep.data, two, [0, 1], "test", old), before)
    pipeline.teachers(sweep, storage, executor, print)  # redone: member 1 trains, member 0 is harvested again
    new = cache.expected_key(storage, sweep.data, again)
    assert new != old and cache.cached(storage, sweep.data, again, new)
    assert not torch.equal(cache.mean_logits(storage, sweep.data, again, [0, 1], "test", new), before)
    folder, manifest = cache.cache_paths(storage, "t")
    named = {c[s]["file"] for c in files.read_json(manifest)["chunks"] for s in ("transfer", "val", "test")}
    records = {cache.chunk_name(i, cache.member_result(storage, sweep.data, again, i)[0]["sha256"]) for i in (0, 1)}
    assert {p.name for p in folder.glob("*")} == named | records  # the old members' chunks are gone


LOCAL_SWEEP = """
from distill.config import DataConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig


def get_config(variant):
    return SweepConfig(name="local", data=DataConfig(name="digits", val_size=200, views=0), hidden=(16, 24, 32),
                       targets=("labels",), student_teachers=(), seeds=(0, 1),
                       student=StudentConfig(hidden=16, train=TrainConfig(lr=0.05, batch_size=16, epochs={epochs})))
"""


def rows_on_disk(root) -> dict[str, float]:
    """Trial directory -> training seconds of every student that wrote its row."""
    return {p.parent.name: files.read_json(p)["train_seconds"] for p in (root / "students").glob("*/row.json")}


def test_full_disk_during_a_local_sweep_keeps_finished_students(tmp_path, capsys, monkeypatch):
    sweep_file = tmp_path / "local.py"
    sweep_file.write_text(LOCAL_SWEEP.replace("{epochs}", "2"))
    command = ["sweep", str(sweep_file), "--storage", str(tmp_path), "--local"]
    calls, real_fsync, real_run = [], files.os.fsync, experiment.run_student

    def run_student(*args, **kwargs):  # the disk fills up as the third student starts
        calls.append(1)
        return real_run(*args, **kwargs)

    def fsync(fd):
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(experiment, "run_student", run_student)
    monkeypatch.setattr(files.os, "fsync", fsync)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("distill: error: no space left in ") and err.count("\n") == 1 and "MiB free" in err
    before = rows_on_disk(tmp_path / "local")
    assert len(before) == 2 and not (tmp_path / "local" / "results.parquet").exists()

    monkeypatch.setattr(files.os, "fsync", real_fsync)  # space freed: the same command finishes the sweep
    assert main(command) == 0
    assert "students: 2 of 6 cells finished before with these settings, kept" in capsys.readouterr().out
    frame = results.load(tmp_path / "local")
    assert len(frame) == 6 and frame["trial_dir"].nunique() == 6 and set(frame["status"]) == {"ok"}
    after = rows_on_disk(tmp_path / "local")
    assert all(after[trial] == seconds for trial, seconds in before.items())  # not trained again


def test_second_driver_is_refused_and_a_killed_ones_sweep_is_taken_over(tmp_path):
    sweep_file = tmp_path / "local.py"
    sweep_file.write_text(LOCAL_SWEEP.replace("{epochs}", "60"))  # about 2 s a student
    command = [sys.executable, "-m", "distill", "sweep", str(sweep_file), "--storage", str(tmp_path), "--local"]
    root = tmp_path / "local"
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not rows_on_disk(root) and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, "the first driver must still be running"
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and second.stderr.count("\n") == 1
    assert "another driver runs the sweep" in second.stderr and f"pid {first.pid}" in second.stderr
    first.kill()
    first.wait()
    before = rows_on_disk(root)
    assert 1 <= len(before) < 6, "the first driver must be killed mid-sweep"

    third = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert f"its process {first.pid} is gone" in third.stdout
    frame = results.load(root)
    assert len(frame) == 6 and frame["trial_dir"].nunique() == 6 and set(frame["status"]) == {"ok"}
    after = rows_on_disk(root)
    assert all(after[trial] == seconds for trial, seconds in before.items())  # every trial exactly once


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("bad", ["--device=bogus", "hidden=(10**10,)", "teacher never trained"])
def test_a_command_that_fails_its_checks_leaves_results_and_record_untouched(bad, tmp_path, capsys):
    sweep_file = tmp_path / "local.py"
    sweep_file.write_text(LOCAL_SWEEP.replace("{epochs}", "1"))
    command = ["sweep", str(sweep_file), "--storage", str(tmp_path / "out"), "--local"]
    assert main(command) == 0
    before = snapshot(tmp_path / "out")
    assert "local/results.json" in before and len([p for p in before if p.startswith("local/runs/")]) == 1
    if bad.startswith("--"):
        command.append(bad)
    elif bad.startswith("hidden"):  # too large for this machine: check_fits refuses it
        sweep_file.write_text(LOCAL_SWEEP.replace("{epochs}", "1").replace("hidden=(16, 24, 32)", bad))
    else:  # the same sweep, now with a mimic student whose teacher was never trained
        sweep_file.write_text(LOCAL_SWEEP.replace("{epochs}", "1").replace(
            "from distill.train import TrainConfig", "from distill.train import TrainConfig\n"
            "from distill.config import TeacherConfig").replace(
            'student_teachers=()', 'student_teachers=("t",), teachers=(TeacherConfig(name="t"),)').replace(
            'targets=("labels",)', 'targets=("labels", "mimic")'))
    capsys.readouterr()
    assert main(command) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert snapshot(tmp_path / "out") == before
