"""Ray Train adapter: train teacher members in parallel, and harvest their logits.

Each member is its own Ray Train run (a TorchTrainer with `workers` data-parallel workers) that
checkpoints every epoch and, when a worker dies, restarts from its last checkpoint. Members run
concurrently as trials of one Ray Tune grid, so the cluster's free resources decide how many train at
once (one GPU each on a GPU cluster). Which members are pending and which caches are stale is the
pipeline's decision (`distill.pipeline`); the training itself is `distill.experiment`; this module only
places them on the cluster.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import torch
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device, prepare_model
from ray.tune.integration.ray_train import TuneReportCallback

from distill import cache, experiment, files, ray_shared
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.errors import UserError


def member_loop(config: dict) -> None:
    """One Ray Train worker of one member: shard, train (resuming from the last checkpoint), save."""
    teacher: TeacherConfig = config["teacher"]
    index: int = config["index"]
    torch.set_num_threads(max(1, int(teacher.cpus_per_worker)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    splits, transfer, _ = ray_shared.get(config["data"], get_device())
    resume = None
    if (checkpoint := ray.train.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            resume = files.torch_load(Path(d) / "state.pt", map_location=get_device())  # weights only

    def report(row: dict, state: Callable[[], dict]) -> None:
        with tempfile.TemporaryDirectory() as d:
            saved = None
            if rank == 0:
                torch.save(state(), Path(d) / "state.pt")
                saved = Checkpoint.from_directory(d)
            ray.train.report(row, checkpoint=saved)

    # prepare_model wraps in DDP only with 2+ workers, and places the model on the worker's device.
    model, result = experiment.train_member(teacher, index, splits, transfer, report, resume, prepare_model, rank,
                                            world)
    if rank == 0:
        cache.save_member(config["root"], config["data_config"], teacher, index, model, splits, result)


def member_trial(config: dict, data, root: str, data_config: DataConfig, retries: int) -> None:
    """A Tune trial that drives one member's TorchTrainer; its metrics stream to Tune.

    The Ray Train run is named by the member's identity: a member retrained with other settings never resumes
    from a checkpoint of the old ones."""
    teacher, index = config["member"]
    identity = files.digest(cache.member_identity(data_config, teacher, index))[:8]
    trainer = TorchTrainer(
        member_loop,
        train_loop_config={"teacher": teacher, "index": index, "data": data, "root": root, "data_config": data_config},
        scaling_config=ScalingConfig(
            num_workers=teacher.workers, use_gpu=teacher.gpus_per_worker > 0,
            resources_per_worker={"CPU": teacher.cpus_per_worker, "GPU": teacher.gpus_per_worker}),
        run_config=RunConfig(
            name=f"{teacher.name}-member-{index}-{identity}", storage_path=str(files.location(root) / "ray"),
            failure_config=FailureConfig(max_failures=retries),
            checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=[TuneReportCallback()]))
    trainer.fit()


def train_members(sweep: SweepConfig, root: files.Location, pending: list[tuple[TeacherConfig, int]], data,
                  retries: int = 3) -> None:
    """Train the pending members through Ray Train, as many at once as the cluster fits."""
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(member_trial, data=data, root=str(root), data_config=sweep.data,
                                                 retries=retries),
                            {"cpu": 0.01}),  # the trial only waits on its TorchTrainer, which holds resources
        param_space={"member": tune.grid_search(pending)},
        # Each waiting member trial is a process with torch loaded: do not start more than can train.
        tune_config=tune.TuneConfig(max_concurrent_trials=sweep.teacher_concurrency or concurrency(pending)),
        run_config=tune.RunConfig(name=f"teachers-{int(time.time())}", storage_path=str(root / "ray"), verbose=1))
    grid = tuner.fit()
    failed = [str(r.error).splitlines()[0] for r in grid if r.error is not None]
    if failed:
        raise UserError(f"{len(failed)} teacher member(s) failed, e.g. {failed[0]}: see {root / 'ray'}")


def harvest(root: files.Location, data_config: DataConfig, teacher: TeacherConfig, data) -> dict:
    """Harvest `teacher` in a task with its members' resources (a GPU where members had one)."""
    resources = {"num_cpus": max(teacher.cpus_per_worker, 1), "num_gpus": teacher.gpus_per_worker}
    return ray.get(harvest_task.options(**resources).remote(root, data_config, teacher, data))


def concurrency(pending: list[tuple[TeacherConfig, int]]) -> int:
    """How many members the cluster can train at once now (an autoscaling cluster: set teacher_concurrency)."""
    total = ray.cluster_resources()
    fits = []
    for teacher, _ in pending:
        need = {"CPU": teacher.workers * teacher.cpus_per_worker, "GPU": teacher.workers * teacher.gpus_per_worker}
        fits.append(min(int(total.get(k, 0) // v) for k, v in need.items() if v > 0))
    # None of the needed resources yet (an autoscaling cluster at zero workers): let every member ask.
    return max(1, min(fits)) if max(fits) > 0 else len(pending)


@ray.remote
def harvest_task(root: files.Location, data_config, teacher: TeacherConfig, data) -> dict:
    """Harvest on a worker with the member's resources (a GPU where members had one), not on the driver."""
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    # Ray reuses task processes: torch keeps the thread count of the first task the process ran.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    splits, transfer, _ = ray_shared.get(data, device)
    return cache.harvest(root, data_config, teacher, splits, transfer)
