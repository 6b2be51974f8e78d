"""Injected faults: the sweep's driver is killed and resumed; a trial's process dies and is retried from its
checkpoint. Nothing finished is re-run or lost."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import session_processes

from distill import experiment, pipeline, ray_sweep, results
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig

EPOCHS = 150  # about 10 s a trial: a wide window to kill the driver between the first and the last
SWEEP = """
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig


def get_config(variant):
    return SweepConfig(name="faults", data=DataConfig(name="digits", val_size=200, views=0), hidden=(16, 24, 32),
                       targets=("labels",), student_teachers=(), seeds=(0, 1), cpus_per_trial=1,
                       search=SearchConfig(samples=1, concurrency=2),
                       student=StudentConfig(hidden=16, train=TrainConfig(lr=0.05, batch_size=16, epochs={epochs})))
"""


def finished_trials(experiment_dir: Path, epochs: int) -> dict[str, float]:
    """Trial directory name -> training seconds, for trials whose own checkpoint (state.pt, written by the
    trial every epoch) holds the last epoch. A trial finished just before the kill may be started again by
    the resumed sweep: it must not train again, so its training time stays exactly the same."""
    done = {}
    for saved in experiment_dir.glob("*/state.pt"):
        try:
            state = torch.load(saved, weights_only=True)
        except Exception:  # noqa: BLE001  being replaced right now: it is read again on the next poll
            continue
        if state["epoch"] == epochs:
            done[saved.parent.name] = state["seconds"]
    return done


@pytest.mark.ray  # the driver starts its own Ray
def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    sweep = tmp_path / "faults.py"
    sweep.write_text(textwrap.dedent(SWEEP).replace("{epochs}", str(EPOCHS)))
    command = [sys.executable, "-m", "distill", "sweep", str(sweep), "--storage", str(tmp_path)]
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # the driver's own Ray instance, to find its processes
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_dir}
    experiment_dir = tmp_path / "faults" / "students"  # a folder per trial: state.pt, then row.json
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(finished_trials(experiment_dir, EPOCHS)) < 2 and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.kill()  # the driver, and then the Ray instance it started: as a preempted head node would
    driver.wait()
    for p in session_processes(ray_dir):
        p.kill()
    before = finished_trials(experiment_dir, EPOCHS)
    assert 2 <= len(before) < 6, "the driver must be killed mid-sweep"
    assert not (tmp_path / "faults" / "results.parquet").exists()

    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    frame = results.load(tmp_path / "faults")
    assert len(frame) == 6 and set(frame["status"]) == {"ok"}
    seconds = {Path(d).name: t for d, t in zip(frame["trial_dir"], frame["train_seconds"], strict=True)}
    for trial, trained in before.items():  # finished before the kill: kept, not trained again
        assert seconds[trial] == trained


class KillOnce(ray_sweep.Progress):
    """The sweep's progress callback, which also SIGKILLs the trial's process when the trial's second epoch
    result reaches the driver: the trial is mid-training then, its state.pt (written before each report)
    holds epoch 2, and the pid in the result is the process running it."""

    killed: list[int] = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == 2 and not KillOnce.killed:
            KillOnce.killed.append(result["pid"])
            os.kill(result["pid"], signal.SIGKILL)


def test_trial_whose_process_dies_is_retried_from_its_checkpoint(ray_local, tmp_path, monkeypatch):
    sweep = SweepConfig(name="retry", data=DataConfig(name="digits", val_size=200, views=0), hidden=(32,),
                        targets=("labels",), student_teachers=(), search=SearchConfig(samples=1, concurrency=1),
                        student=StudentConfig(hidden=32, train=TrainConfig(lr=0.05, batch_size=8, epochs=40)))
    splits, transfer = experiment.prepare(sweep.data)
    monkeypatch.setattr(ray_sweep, "Progress", KillOnce)
    monkeypatch.setattr(KillOnce, "killed", [])
    frame = pipeline.students(sweep, tmp_path, ray_sweep.Executor(sweep, tmp_path, splits, transfer), print)
    assert KillOnce.killed, "the trial was not killed"
    assert list(frame["status"]) == ["ok"]
    assert frame["resumed_from"][0] >= 2 and frame["epochs"][0] == 40
