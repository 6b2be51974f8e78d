"""Nothing distill loads from storage can run code: a checkpoint or logit cache crafted to run a command on
unpickling is refused with one line, and the command never runs. Credentials never ride in a storage URI."""

import dataclasses
import os

import pytest
import torch

from distill import cache, experiment, files, local, pipeline
from distill.__main__ import main
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.errors import UserError
from distill.train import TrainConfig

SWEEP = SweepConfig(name="trust", data=DataConfig(name="digits", val_size=200, views=0), hidden=(16,),
                    targets=("labels",), student_teachers=(),
                    student=StudentConfig(hidden=16, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=2)))
SWEEP_FILE = """
from distill.config import DataConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig
def get_config(variant):
    return SweepConfig(name="trust", data=DataConfig(name="digits", val_size=200, views=0), hidden=(16,),
                       targets=("labels",), student_teachers=(),
                       student=StudentConfig(hidden=16, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=2)))
"""


class Payload:
    """Unpickling this runs a shell command: what a crafted file in a writable bucket would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(marker) -> bytes:
    return files.torch_bytes({"model": Payload(marker), "epoch": 1})


def test_crafted_student_checkpoint_is_refused_and_nothing_runs(tmp_path, capsys):
    root, marker = tmp_path / "out" / "trust", tmp_path / "ran"
    (job,) = pipeline.jobs(SWEEP, root)
    files.write_bytes(pipeline.trial_dir(root, job) / "state.pt", crafted(marker))  # where a resumed trial looks
    (tmp_path / "sweep.py").write_text(SWEEP_FILE)
    status = main(["sweep", str(tmp_path / "sweep.py"), "--storage", str(tmp_path / "out"), "--local"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "refused to load" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (pipeline.trial_dir(root, job) / "row.json").exists()


def test_crafted_logit_cache_is_refused_even_with_a_matching_hash(tmp_path):
    """Whoever can write the bucket can also rewrite the manifest's sha256: the hash is no defence, the loader is."""
    teacher = TeacherConfig(name="t", arch="cnn", arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                            train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
    sweep = dataclasses.replace(SWEEP, teachers=(teacher,))
    splits, transfer = experiment.prepare(sweep.data)
    pipeline.teachers(sweep, tmp_path, local.Executor(sweep, tmp_path, splits, transfer, print), print)
    folder, manifest_path = cache.cache_paths(tmp_path, "t")
    manifest, payload = files.read_json(manifest_path), crafted(tmp_path / "ran")
    chunk = manifest["chunks"][0]["transfer"]
    (folder / chunk["file"]).write_bytes(payload)
    chunk["sha256"] = files.sha256(payload)
    files.write_json(manifest_path, manifest)
    with pytest.raises(UserError, match="refused to load"):
        cache.mean_logits(tmp_path, sweep.data, teacher, [0], "transfer")
    assert not (tmp_path / "ran").exists()


def test_our_own_checkpoints_load_as_weights_only(tmp_path):
    root = tmp_path / "trust"
    splits, transfer = experiment.prepare(SWEEP.data)
    pipeline.students(SWEEP, root, local.Executor(SWEEP, root, splits, transfer, print), print)
    (job,) = pipeline.jobs(SWEEP, root)
    state = torch.load(pipeline.trial_dir(root, job) / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "scheduler", "generator", "best"}


@pytest.mark.parametrize("uri", ["s3://AKIAEXAMPLE:secret@bucket/dir", "s3://bucket/dir?secret_key=abc&access_key=x",
                                 "gs://bucket/dir?session_token=t"])
def test_credentials_in_a_storage_uri_are_refused(uri):
    with pytest.raises(UserError, match="carries credentials") as e:
        files.location(uri)
    assert "secret" not in str(e.value).replace("secret_key", "") and "abc" not in str(e.value)
