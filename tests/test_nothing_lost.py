"""Nothing half-written is trusted: writes are atomic, and the file written last (result.json for a member,
the manifest for a logit cache) is what marks the work done."""

import pytest

from distill import cache, experiment, io, local
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.errors import UserError
from distill.train import TrainConfig

TEACHER = TeacherConfig(name="t", arch="cnn", members=1, arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
SWEEP = SweepConfig(name="lost", data=DataConfig(name="digits", val_size=200, views=0), teachers=(TEACHER,))


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    io.write_json(path, {"v": 1})

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", crash)  # dies after writing the temp file, before the rename
    with pytest.raises(OSError):
        io.write_json(path, {"v": 2})
    assert io.read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_interrupted_member_and_harvest_are_redone_not_trusted(tmp_path):
    splits, transfer = experiment.prepare(SWEEP.data)
    logs: list[str] = []
    local.train_teachers(SWEEP, tmp_path, splits, transfer, logs.append)
    member = cache.member_dir(tmp_path, "t", 0)
    pt, manifest = cache.cache_paths(tmp_path, "t")

    # A member killed between writing model.pt and result.json: not done, so it is trained again.
    (member / "result.json").unlink()
    assert cache.member_result(tmp_path, "t", 0) is None
    # A harvest killed before its manifest: the cache does not count, and is harvested again.
    manifest.unlink()
    assert not cache.cached(tmp_path, SWEEP.data, TEACHER)
    logs.clear()
    local.train_teachers(SWEEP, tmp_path, splits, transfer, logs.append)
    assert any("test error" in line for line in logs) and any("harvested" in line for line in logs)
    assert cache.load(tmp_path, SWEEP.data, TEACHER)["test"].shape[0] == 1

    # A damaged member file is refused with the fix, not silently used.
    (member / "model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        cache.member_result(tmp_path, "t", 0)
