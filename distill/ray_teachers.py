"""Ray Train adapter: train teacher members in parallel, and harvest their logits.

Members train in *slots*: each slot is one Ray Train run (a TorchTrainer with a member's `workers`
data-parallel workers) whose workers train one member after another, each taking the next pending member from
a shared queue. Starting a worker group costs 16-20 s here, a third of a small member's training: a slot pays
it once, not once per member. As many slots run at once as the cluster's resources fit (one GPU each on a GPU
cluster); the data reach the workers by reference, never inside the pickled `train_loop_config`. Every member
checkpoints every epoch to a file of its own (named by its identity), so a restarted worker group, a retried
slot or a new job resumes each member where it stopped. Each member harvests its logits in its rank-0 worker as
soon as it has trained. Which members are pending and which caches are stale is the pipeline's decision
(`distill.pipeline`); the training itself is `distill.experiment`; this module only places them on the cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import ray
import ray.train
import torch
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device, prepare_model
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from distill import cache, experiment, files, progress, ray_shared
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.errors import UserError

Member = tuple[TeacherConfig, int]


@ray.remote(num_cpus=0)
class Queue:
    """The pending members, handed out to slots: every worker of a slot asking for its n-th member gets the same
    answer, and so does the slot restarted (its finished members are then skipped: their results exist)."""

    def __init__(self, pending: list[Member]):
        self.pending, self.given, self.finished, self.epochs = list(pending), {}, [], {}

    def claim(self, slot: int, n: int) -> Member | None:
        if (slot, n) not in self.given:
            self.given[slot, n] = self.pending.pop(0) if self.pending else None
        return self.given[slot, n]

    def epoch(self, slot: int, text: str) -> None:
        self.epochs[slot] = text

    def finish(self, slot: int, teacher: str, index: int, test_error: float) -> None:
        self.finished.append((teacher, index, test_error))
        self.epochs.pop(slot, None)

    def progress(self) -> tuple[list, dict[int, Member | None], list[str]]:
        """(members finished so far, each slot's latest claim, what each slot trains now: "ecnn[3] epoch 2/5")."""
        latest = {}
        for (slot, _), member in sorted(self.given.items(), key=lambda item: item[0]):
            latest[slot] = member
        return list(self.finished), latest, [self.epochs[s] for s in sorted(self.epochs)]


def slot_loop(config: dict) -> None:
    """One Ray Train worker of one slot: train members from the queue until it is empty. `config["data"]` is a
    one-element list holding the data's object reference: a list, so that neither Ray nor Train resolves it
    into the config that is pickled into the controller and every worker."""
    queue, slot, root, data_config = config["queue"], config["slot"], config["root"], config["data_config"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    splits, transfer = ray_shared.get(config["data"][0], get_device())
    n = 0
    while (member := ray.get(queue.claim.remote(slot, n))) is not None:
        n += 1
        teacher, index = member
        if cache.member_result(root, data_config, teacher, index)[0] is not None:
            continue  # trained before this slot restarted
        torch.set_num_threads(max(1, int(teacher.cpus_per_worker)))

        def on_epoch(epoch: int, name: str = f"{teacher.name}[{index}]", epochs: int = teacher.train.epochs) -> None:
            queue.epoch.remote(slot, f"{name} epoch {epoch}/{epochs}")

        test_error = train_member(teacher, index, splits, transfer, root, data_config, rank, world, on_epoch)
        if rank == 0:
            queue.finish.remote(slot, teacher.name, index, test_error)


def train_member(teacher: TeacherConfig, index: int, splits, transfer, root: str, data_config: DataConfig,
                 rank: int, world: int, on_epoch: Callable[[int], None]) -> float:
    """Train one member on this worker (resuming from its checkpoint file), then on rank 0 save and harvest it
    while other slots still train. Returns its test error."""
    state = cache.member_state(root, data_config, teacher, index)
    resume = files.torch_load(state, map_location=get_device()) if state.exists() else None  # weights only

    def report(row: dict, get_state: Callable[[], dict]) -> None:
        if rank == 0:
            files.write_bytes(state, files.torch_bytes(get_state()))
            on_epoch(row["epoch"])
        ray.train.report(row)

    # prepare_model wraps in DDP only with 2+ workers, and places the model on the worker's device.
    model, fitted = experiment.train_member(teacher, index, splits, transfer, report, resume, prepare_model, rank,
                                            world)
    if rank != 0:
        return float("nan")
    saved = cache.save_member(root, data_config, teacher, index, model, splits, fitted)
    cache.harvest_member(root, data_config, teacher, index, model, saved["sha256"], splits, transfer)
    return saved["test_error"]


@ray.remote(num_cpus=0)
def slot_run(slot: int, queue, scaling: tuple[int, float, float], data: list, root: str, data_config: DataConfig,
             storage: str, retries: int) -> None:
    """Drive one slot's TorchTrainer. Holds no resources (its Train controller holds none either), so a slot
    waiting on its workers never keeps them from starting; if its process dies, Ray runs it again and the
    slot's members resume from their checkpoint files."""
    workers, cpus, gpus = scaling
    trainer = TorchTrainer(
        slot_loop,
        train_loop_config={"queue": queue, "slot": slot, "data": data, "root": root, "data_config": data_config},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                     resources_per_worker={"CPU": cpus, "GPU": gpus}),
        # A fresh name each time: Ray resumes a run whose name and storage it finds (members resume from their
        # own files instead, which outlive any one run).
        run_config=RunConfig(name=f"members-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}-slot-{slot}",
                             storage_path=storage, failure_config=FailureConfig(max_failures=retries)))
    trainer.fit()


def train_members(sweep: SweepConfig, root: files.Location, pending: list[Member], data,
                  log: Callable[[str], None] = print, retries: int = 3) -> None:
    """Train the pending members through Ray Train in as many slots as the cluster fits (`concurrency`, or the
    sweep's teacher_concurrency), members of the same resources sharing slots; those of other resources
    (workers, CPUs, GPUs per worker) train in slots of their own afterwards."""
    groups: dict[tuple, list[Member]] = {}
    for teacher, i in pending:
        groups.setdefault((teacher.workers, teacher.cpus_per_worker, teacher.gpus_per_worker), []).append((teacher, i))
    failed, before, shown = [], 0, progress.Progress("members", len(pending))
    # The queue and the slots' drivers (and so their Train controllers, which Ray Train puts on the node that calls
    # fit) on the driver's node: they hold no resources, and Ray would place them on any node, where losing a
    # worker node would lose the queue (every slot and the driver failed) instead of only the members training there.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    for scaling, members in groups.items():
        queue = Queue.options(scheduling_strategy=here).remote(members)
        runs = {slot_run.options(scheduling_strategy=here).remote(
                    s, queue, scaling, [data], str(root), sweep.data, str(files.location(root) / "ray"), retries): s
                for s in range(min(len(members), sweep.teacher_concurrency or concurrency(members)))}
        while runs:
            finished, _ = ray.wait(list(runs), num_returns=1, timeout=2)
            trained, latest, now = ray.get(queue.progress.remote())
            shown.update(before + len(trained) + len(failed), ", ".join(now), len(failed))
            for ref in finished:
                slot = runs.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as e:  # its member in training failed every retry
                    teacher, i = latest.get(slot) or (None, None)
                    who = f"{teacher.name}[{i}]" if teacher is not None else f"slot {slot}"
                    failed.append(f"{who}: {(str(e).strip().splitlines() or ['unknown error'])[-1]}")
                    log(f"teacher {failed[-1]}")
        before += len(ray.get(queue.progress.remote())[0])
        ray.kill(queue)
    if failed:
        raise UserError(f"{len(failed)} teacher member(s) failed, e.g. {failed[0]}: see {root / 'ray'}")


def harvest(root: files.Location, data_config: DataConfig, teacher: TeacherConfig, indices: list[int], data) -> None:
    """Harvest members `indices` (trained, not harvested: e.g. their harvest died) in parallel, each in a task
    with a member's resources (a GPU where members had one), as many at once as the cluster fits."""
    resources = {"num_cpus": max(teacher.cpus_per_worker, 1), "num_gpus": teacher.gpus_per_worker}
    left = [harvest_task.options(**resources).remote(root, data_config, teacher, i, [data]) for i in indices]
    shown, fits = progress.Progress(f"harvest of {teacher.name}", len(left)), concurrency([(teacher, 0)])
    while left:
        shown.update(len(indices) - len(left), f"{min(len(left), fits)} running")
        done, left = ray.wait(left, num_returns=1)
        ray.get(done)
    shown.update(len(indices))


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
