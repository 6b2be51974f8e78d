"""Injected faults: the sweep's driver is killed and resumed; a trial's process dies and is retried from its
checkpoint. Nothing finished is re-run or lost."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import torch
from conftest import session_processes

from distill import experiment, ray_sweep, results
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
            state = torch.load(saved, weights_only=False)
        except Exception:  # noqa: BLE001  being replaced right now: it is read again on the next poll
            continue
        if state["epoch"] == epochs:
            done[saved.parent.name] = state["seconds"]
    return done


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    sweep = tmp_path / "faults.py"
    sweep.write_text(textwrap.dedent(SWEEP).replace("{epochs}", str(EPOCHS)))
    command = [sys.executable, "-m", "distill", "sweep", str(sweep), "--storage", str(tmp_path)]
    ray_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # the driver's own Ray instance, to find its processes
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_dir}
    experiment_dir = tmp_path / "faults" / "ray" / "students"
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


def last_pid(result_file: Path) -> int | None:
    """The pid in a trial's latest result line (None before its first result has been written whole)."""
    try:
        lines = result_file.read_text().splitlines()
        return json.loads(lines[-1])["pid"] if lines else None
    except (OSError, ValueError, KeyError):
        return None


def test_trial_whose_process_dies_is_retried_from_its_checkpoint(ray_local, tmp_path):
    sweep = SweepConfig(name="retry", data=DataConfig(name="digits", val_size=200, views=0), hidden=(32,),
                        targets=("labels",), student_teachers=(), search=SearchConfig(samples=1, concurrency=1),
                        student=StudentConfig(hidden=32, train=TrainConfig(lr=0.05, batch_size=8, epochs=40)))
    splits, transfer = experiment.prepare(sweep.data)
    out: dict = {}
    run = threading.Thread(target=lambda: out.update(frame=ray_sweep.sweep_students(
        sweep, tmp_path, splits, transfer, {}, log=print)))
    run.start()
    killed: list[int] = []
    deadline = time.time() + 300
    while not killed and run.is_alive() and time.time() < deadline:
        # Kill the trial's own process (Tune records its pid in every result) once it has a checkpoint.
        for trial in (tmp_path / "ray" / "students").glob("*/"):
            pid = last_pid(trial / "result.json")
            if pid is not None and (trial / "state.pt").exists():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)
    run.join(timeout=600)
    assert killed, "no trial process was found to kill"
    frame = out["frame"]
    assert list(frame["status"]) == ["ok"]
    assert frame["resumed_from"][0] >= 1 and frame["epochs"][0] == 40
