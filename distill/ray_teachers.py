"""Ray Train adapter: train the teacher ensembles, members in parallel, then harvest their logits.

Each member is its own Ray Train run (a TorchTrainer with `workers` data-parallel workers) that
checkpoints every epoch and, when a worker dies, restarts from its last checkpoint. Members run
concurrently as trials of one Ray Tune grid, so the cluster's free resources decide how many train at
once (one GPU each on a GPU cluster). Finished members (their result.json) are never retrained, and a
teacher whose logit cache matches its members is never harvested again. The training itself is
`distill.experiment`; this module only places it on the cluster.
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

from distill import cache, experiment, io, losses, ray_shared
from distill.config import SweepConfig, TeacherConfig
from distill.errors import UserError
from distill.train import fit


def member_loop(config: dict) -> None:
    """One Ray Train worker of one member: shard, train (resuming from the last checkpoint), save."""
    teacher: TeacherConfig = config["teacher"]
    index: int = config["index"]
    torch.set_num_threads(max(1, int(teacher.cpus_per_worker)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    splits, transfer, _ = ray_shared.get(config["data"], get_device())
    model = prepare_model(experiment.build_member(teacher, index, splits))  # DDP only with 2+ workers
    x, y, train = experiment.member_task(teacher, index, splits, transfer, rank, world)
    resume = None
    if (checkpoint := ray.train.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            resume = torch.load(Path(d) / "state.pt", map_location=get_device(), weights_only=False)

    def report(row: dict, state: Callable[[], dict]) -> None:
        with tempfile.TemporaryDirectory() as d:
            saved = None
            if rank == 0:
                torch.save(state(), Path(d) / "state.pt")
                saved = Checkpoint.from_directory(d)
            ray.train.report(row, checkpoint=saved)

    result = fit(model, x, y, losses.cross_entropy, (splits.val_x, splits.val_y), train, report, resume)
    if rank == 0:
        plain = getattr(model, "module", model)  # unwrap DDP
        cache.save_member(config["root"], teacher, index, plain, splits, result)


def member_trial(config: dict, data, root: str, retries: int) -> None:
    """A Tune trial that drives one member's TorchTrainer; its metrics stream to Tune."""
    teacher, index = config["member"]
    trainer = TorchTrainer(
        member_loop,
        train_loop_config={"teacher": teacher, "index": index, "data": data, "root": root},
        scaling_config=ScalingConfig(
            num_workers=teacher.workers, use_gpu=teacher.gpus_per_worker > 0,
            resources_per_worker={"CPU": teacher.cpus_per_worker, "GPU": teacher.gpus_per_worker}),
        run_config=RunConfig(
            name=f"{teacher.name}-member-{index}", storage_path=str(io.location(root) / "ray"),
            failure_config=FailureConfig(max_failures=retries),
            checkpoint_config=CheckpointConfig(num_to_keep=1), callbacks=[TuneReportCallback()]))
    trainer.fit()


def train(sweep: SweepConfig, root: io.Where, splits, transfer, retries: int = 3,
          log: Callable[[str], None] = print) -> None:
    """Train every unfinished member of every teacher through Ray Train, then harvest what changed."""
    root = io.location(root)
    pending = [(t, i) for t in sweep.teachers for i in range(t.members)
               if cache.member_result(root, t.name, i) is None]
    done = sum(t.members for t in sweep.teachers) - len(pending)
    if done:
        log(f"teachers: {done} members finished before, not retrained")
    data = ray_shared.put(splits, transfer)
    if pending:
        t0 = time.perf_counter()
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(member_trial, data=data, root=str(root), retries=retries),
                                {"cpu": 0.01}),  # the trial only waits on its TorchTrainer, which holds resources
            param_space={"member": tune.grid_search(pending)},
            # Each waiting member trial is a process with torch loaded: do not start more than can train.
            tune_config=tune.TuneConfig(max_concurrent_trials=sweep.teacher_concurrency or concurrency(pending)),
            run_config=tune.RunConfig(name=f"teachers-{int(time.time())}", storage_path=str(root / "ray"),
                                      verbose=1))
        grid = tuner.fit()
        failed = [str(r.error).splitlines()[0] for r in grid if r.error is not None]
        if failed:
            raise UserError(f"{len(failed)} teacher member(s) failed, e.g. {failed[0]}: see {root / 'ray'}")
        log(f"teachers: trained {len(pending)} members in {time.perf_counter() - t0:.0f} s")
    for teacher in sweep.teachers:
        results = [cache.member_result(root, teacher.name, i) for i in range(teacher.members)]
        errors = ", ".join(f"{r['test_error']:.4f}" for r in results)
        log(f"teacher {teacher.name}: member test errors {errors}")
        if cache.cached(root, sweep.data, teacher):
            log(f"teacher {teacher.name}: logits cached before, not harvested again")
            continue
        resources = {"num_cpus": max(teacher.cpus_per_worker, 1), "num_gpus": teacher.gpus_per_worker}
        manifest = ray.get(harvest_task.options(**resources).remote(root, sweep.data, teacher, data))
        log(f"teacher {teacher.name}: ensemble test error {manifest['ensemble']['test_error']:.4f} "
            f"(median member {sorted(m['test_error'] for m in manifest['members'])[teacher.members // 2]:.4f}); "
            f"logits of {manifest['shapes']['transfer'][1]} transfer inputs cached")


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
def harvest_task(root: io.Location, data_config, teacher: TeacherConfig, data) -> dict:
    """Harvest on a worker with the member's resources (a GPU where members had one), not on the driver."""
    device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
    # Ray reuses task processes: torch keeps the thread count of the first task the process ran.
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    splits, transfer, _ = ray_shared.get(data, device)
    return cache.harvest(root, data_config, teacher, splits, transfer)
