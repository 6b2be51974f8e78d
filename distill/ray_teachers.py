"""Ray Train adapter: train teacher members in parallel, and harvest their logits.

Each member is its own Ray Train run (a TorchTrainer with `workers` data-parallel workers) that
checkpoints every epoch and, when a worker dies, restarts from its last checkpoint. Members run
concurrently, each driven by a task that holds no resources, as many at once as the cluster's resources fit
(one GPU each on a GPU cluster); the data reach the workers by reference, never inside the pickled
`train_loop_config`. Each member harvests its logits in its rank-0 worker as soon as it has trained. Which
members are pending and which caches are stale is the pipeline's decision (`distill.pipeline`); the training
itself is `distill.experiment`; this module only places them on the cluster.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device, prepare_model

from distill import cache, experiment, files, ray_shared
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.errors import UserError


def member_loop(config: dict) -> None:
    """One Ray Train worker of one member: shard, train (resuming from the last checkpoint), save.
    `config["data"]` is a one-element list holding the data's object reference: a list, so that neither Ray
    nor Train resolves it into the config that is pickled into the controller and every worker."""
    teacher: TeacherConfig = config["teacher"]
    index: int = config["index"]
    torch.set_num_threads(max(1, int(teacher.cpus_per_worker)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    splits, transfer = ray_shared.get(config["data"][0], get_device())
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
    if rank == 0:  # the member harvests its own logits here, while other members still train
        saved = cache.save_member(config["root"], config["data_config"], teacher, index, model, splits, result)
        cache.harvest_member(config["root"], config["data_config"], teacher, index, model, saved["sha256"], splits,
                             transfer)


@ray.remote(num_cpus=0)
def member_run(teacher: TeacherConfig, index: int, data: list, root: str, data_config: DataConfig,
               retries: int) -> None:
    """Drive one member's TorchTrainer. Holds no resources (its Train controller holds none either), so a member
    waiting on its workers never keeps them from starting; if its process dies, Ray runs it again and the Train
    run, named by the member's identity, resumes from its last checkpoint (never from a checkpoint of other
    settings)."""
    identity = files.digest(cache.member_identity(data_config, teacher, index))[:8]
    trainer = TorchTrainer(
        member_loop,
        train_loop_config={"teacher": teacher, "index": index, "data": data, "root": root, "data_config": data_config},
        scaling_config=ScalingConfig(
            num_workers=teacher.workers, use_gpu=teacher.gpus_per_worker > 0,
            resources_per_worker={"CPU": teacher.cpus_per_worker, "GPU": teacher.gpus_per_worker}),
        run_config=RunConfig(
            name=f"{teacher.name}-member-{index}-{identity}", storage_path=str(files.location(root) / "ray"),
            failure_config=FailureConfig(max_failures=retries), checkpoint_config=CheckpointConfig(num_to_keep=1)))
    trainer.fit()


def train_members(sweep: SweepConfig, root: files.Location, pending: list[tuple[TeacherConfig, int]], data,
                  log: Callable[[str], None] = print, retries: int = 3) -> None:
    """Train the pending members through Ray Train, as many at once as the cluster fits (`concurrency`, or the
    sweep's teacher_concurrency): a member starts as soon as another finishes."""
    limit = sweep.teacher_concurrency or concurrency(pending)
    queue, running, failed, done = list(pending), {}, [], 0
    while queue or running:
        # Exactly as many as can train: one more queued behind them (its controller up early) was slower here,
        # 438 s against 353 s for the demo's 9 members on 2 CPUs: its processes took CPU from the training ones.
        while queue and len(running) < limit:
            teacher, i = queue.pop(0)
            running[member_run.remote(teacher, i, [data], str(root), sweep.data, retries)] = (teacher, i)
        finished, _ = ray.wait(list(running), num_returns=1)
        teacher, i = running.pop(finished[0])
        done += 1
        try:
            ray.get(finished[0])
            log(f"teacher {teacher.name}[{i}]: trained ({done}/{len(pending)})")
        except ray.exceptions.RayError as e:
            failed.append(f"{teacher.name}[{i}]: {(str(e).strip().splitlines() or ['unknown error'])[-1]}")
            log(f"teacher {failed[-1]} ({done}/{len(pending)})")
    if failed:
        raise UserError(f"{len(failed)} teacher member(s) failed, e.g. {failed[0]}: see {root / 'ray'}")


def harvest(root: files.Location, data_config: DataConfig, teacher: TeacherConfig, indices: list[int], data) -> None:
    """Harvest members `indices` (trained, not harvested: e.g. their harvest died) in parallel, each in a task
    with a member's resources (a GPU where members had one), as many at once as the cluster fits."""
    resources = {"num_cpus": max(teacher.cpus_per_worker, 1), "num_gpus": teacher.gpus_per_worker}
    ray.get([harvest_task.options(**resources).remote(root, data_config, teacher, i, [data]) for i in indices])


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
def harvest_task(root: files.Location, data_config, teacher: TeacherConfig, index: int, data: list) -> None:
    """Harvest one member on a worker with the member's resources, not on the driver."""
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    # Ray reuses task processes: torch keeps the thread count of the first task the process ran.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    splits, transfer = ray_shared.get(data[0], device)
    cache.harvest(root, data_config, teacher, [index], splits, transfer)
