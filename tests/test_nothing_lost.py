"""Nothing half-written is trusted: writes are atomic, and the file written last (result.json for a member,
the manifest for a logit cache) is what marks the work done, on local disk and in object storage."""

import os

import pytest

from distill import cache, experiment, io, local
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
    path = io.location(storage) / "f.json"
    io.write_json(path, {"v": 1})

    def crash(*args):
        raise OSError("disk full")

    if path.remote:
        path = io.Location(FailingMove(path.fs), path.path, path.query, path.scheme)
    else:
        monkeypatch.setattr(io.os, "fsync", crash)  # dies after writing the temp file, before the rename
    with pytest.raises(OSError):
        io.write_json(path, {"v": 2})
    assert io.read_json(path) == {"v": 1}
    assert [p.name for p in path.parent.glob("*")] == ["f.json"]


def test_locations_name_the_same_place_as_ray(s3_server):
    uri = f"s3://distill-tests/a/b?{s3_server}"
    root = io.location(uri)
    assert str(root / "ray") == f"s3://distill-tests/a/b/ray?{s3_server}"  # options stay at the end
    assert root.name == "b" and str(root.parent) == f"s3://distill-tests/a?{s3_server}"
    (root / "x" / "y.json").write_bytes(b"{}")
    assert (root / "x").is_dir() and (root / "x" / "y.json").exists() and not (root / "z").exists()
    assert io.location("~/r").path == os.path.expanduser("~/r") and io.location("file:///tmp/r").path == "/tmp/r"


def remove(location: io.Location) -> None:
    if location.remote:
        location.fs.delete_file(location.path)
    else:
        os.remove(location)


def test_interrupted_member_and_harvest_are_redone_not_trusted(storage):
    splits, transfer = experiment.prepare(SWEEP.data)
    logs: list[str] = []
    local.train_teachers(SWEEP, storage, splits, transfer, logs.append)
    member = cache.member_dir(storage, "t", 0)
    pt, manifest = cache.cache_paths(storage, "t")

    # A member killed between writing model.pt and result.json: not done, so it is trained again.
    remove(member / "result.json")
    assert cache.member_result(storage, "t", 0) is None
    # A harvest killed before its manifest: the cache does not count, and is harvested again.
    remove(manifest)
    assert not cache.cached(storage, SWEEP.data, TEACHER)
    logs.clear()
    local.train_teachers(SWEEP, storage, splits, transfer, logs.append)
    assert any("test error" in line for line in logs) and any("harvested" in line for line in logs)
    assert cache.load(storage, SWEEP.data, TEACHER)["test"].shape[0] == 1

    # A damaged member file is refused with the fix, not silently used.
    (member / "model.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="damaged"):
        cache.member_result(storage, "t", 0)
