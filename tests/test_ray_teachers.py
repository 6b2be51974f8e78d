"""Ray Train teachers: members share slots (one worker group trains several), a killed worker resumes from
its member's checkpoint, a re-run retrains and re-harvests nothing, and a corrupt or mismatched logit cache is
refused."""

import dataclasses
import threading
import time

import pytest
from conftest import session_processes

from distill import cache, experiment, pipeline, ray_sweep
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.errors import UserError
from distill.train import TrainConfig

pytestmark = pytest.mark.ray
EPOCHS = 30  # about 0.3 s each: long enough to kill the workers mid-training
# One CPU per worker: on the 2-CPU instance two slots' workers fit only if nothing else holds a CPU; the
# third member waits for a slot.
TEACHER = TeacherConfig(name="ecnn", arch="cnn", members=3, arch_args={"channels": (8,), "hidden": (32,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=32, epochs=EPOCHS), cpus_per_worker=1)
SWEEP = SweepConfig(name="teachers-test", data=DataConfig(name="digits", val_size=200, views=3), teachers=(TEACHER,))


@pytest.fixture(scope="module")
def trained(ray_local, tmp_path_factory):
    """Train the 3-member ensemble through Ray Train, killing the first two members' workers once mid-training."""
    root = tmp_path_factory.mktemp("teachers")
    splits, transfer = experiment.prepare(SWEEP.data)
    logs: list[str] = []
    executor = ray_sweep.Executor(SWEEP, root, splits, transfer, logs.append)
    run = threading.Thread(target=pipeline.teachers, args=(SWEEP, root, executor, logs.append))
    run.start()
    killed: list[int] = []
    deadline = time.time() + 300
    while not killed and run.is_alive() and time.time() < deadline:
        # Kill once both members have a checkpoint: from then on a restart must resume, not start over.
        if all(cache.member_state(root, SWEEP.data, TEACHER, i).exists() for i in range(2)):
            for worker in session_processes(ray_local, "RayTrainWorker"):
                killed.append(worker.pid)
                worker.kill()
        time.sleep(0.2)
    run.join(timeout=600)
    return root, splits, transfer, killed, logs


def test_ensemble_finishes_after_a_worker_is_killed(trained):
    root, _, _, killed, logs = trained
    assert len(killed) == 2, f"expected one Ray Train worker per slot to kill, found {killed}"
    results = [cache.member_result(root, SWEEP.data, TEACHER, i)[0] for i in range(3)]
    assert all(r is not None and r["epochs"] == EPOCHS for r in results), logs
    # The killed members resumed from their checkpoints (epoch >= 1): neither started over. Their checkpoint
    # files are gone once they are saved.
    assert all(r["resumed_from"] >= 1 for r in results[:2]), results
    assert not list(root.glob("teachers/ecnn/member-*/state-*.pt"))
    manifest = cache.files.read_json(root / "cache" / "ecnn.json")
    assert manifest["ensemble"]["test_error"] < 0.2
    assert len(manifest["members"]) == 3


def test_members_share_slots(trained):
    # Two slots (one Ray Train run each) trained the three members: the third did not start a worker group.
    root = trained[0]
    assert len(list((root / "ray").glob("members-*-slot-*"))) == 2


def test_two_members_train_at_once_on_two_cpus(trained):
    root = trained[0]
    (a, b) = [cache.member_result(root, SWEEP.data, TEACHER, i)[0] for i in range(2)]  # one in each slot
    # Each member's (last) run of fit, from its start to its result: the two intervals overlap.
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"], (a, b)


def test_second_run_retrains_and_reharvests_nothing(trained):
    root, splits, transfer, _, _ = trained
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "ray" not in p.parts}
    logs: list[str] = []
    pipeline.teachers(SWEEP, root, ray_sweep.Executor(SWEEP, root, splits, transfer, logs.append), logs.append)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "ray" not in p.parts}
    assert before == after
    assert any("3 members finished before with these settings, not retrained" in line for line in logs)
    assert any("not harvested again" in line for line in logs)


def test_corrupt_cache_is_refused(trained):
    root = trained[0]
    manifest = cache.files.read_json(root / "cache" / "ecnn.json")
    chunk = root / "cache" / "ecnn" / manifest["chunks"][1]["transfer"]["file"]  # harvested by its own worker
    original = chunk.read_bytes()
    try:
        chunk.write_bytes(original[:-10] + bytes(10))
        with pytest.raises(UserError, match="corrupt") as e:
            cache.mean_logits(root, SWEEP.data, TEACHER, [0, 1], "transfer")
        assert "\n" not in str(e.value)
    finally:
        chunk.write_bytes(original)
    mean = cache.mean_logits(root, SWEEP.data, TEACHER, [0, 1], "transfer")
    assert mean.shape == (manifest["shapes"]["transfer"][1], 10)


def test_mismatched_cache_is_refused(trained):
    root = trained[0]
    other = dataclasses.replace(SWEEP.data, views=4)  # another transfer recipe: the cache must not be trusted
    with pytest.raises(UserError, match=r"trained with other settings \(data.views changed\)"):
        cache.mean_logits(root, other, TEACHER, [0], "test")


def test_member_trains_data_parallel_on_two_workers(ray_local, tmp_path):
    # Each of the 2 workers takes every other input (equal shards); DDP averages their gradients.
    teacher = dataclasses.replace(TEACHER, members=1, workers=2, train=dataclasses.replace(TEACHER.train, epochs=3))
    sweep = dataclasses.replace(SWEEP, teachers=(teacher,))
    splits, transfer = experiment.prepare(sweep.data)
    pipeline.teachers(sweep, tmp_path, ray_sweep.Executor(sweep, tmp_path, splits, transfer), print)
    result, _ = cache.member_result(tmp_path, sweep.data, teacher, 0)
    assert result["epochs"] == 3 and result["test_error"] < 0.2
    # The saved weights are the plain model's (no DDP "module." prefix): the harvest could load them.
    assert cache.mean_logits(tmp_path, sweep.data, teacher, [0], "test").shape == (len(splits.test_y), 10)
