"""What a sweep needs in memory, counted before anything runs, and a one-line refusal when it does not fit.

A student trial holds, on its device: the data it reads (every split as stored, compact), its teacher's mean
logits on the transfer set and its reference's on test (`distill.pipeline.uses`), the model state (fp32
weights, gradients, `fit`'s copy of the best weights, the optimizer's moments) and one batch's activations.
On a CPU node the data and logits are one shared copy in Ray's object store, mapped by every trial, plus the
driver's own copy; each trial adds its model state and a process. A GPU trial copies its data and logits to
its device. (Measured against these counts: BENCHMARKS.md, "Paper scale".)
"""

from __future__ import annotations

import math
import os

import psutil
import torch

from distill import data, experiment, models, pipeline
from distill.config import StudentConfig, SweepConfig
from distill.errors import UserError

# Private memory of one idle Ray worker process with torch imported (measured here: 0.3-0.4 GiB, bench/scale.py).
PROCESS = 400 * 2**20
GIB = 2**30


def model_bytes(cell: StudentConfig, splits: data.Splits) -> int:
    """fp32 weights, gradients, the best weights' copy and the optimizer's state (Adam: 2 moments, SGD: 1)."""
    with torch.device("meta"):  # counts parameters without allocating them
        params = models.param_count(experiment.build_student(cell, splits))
    return params * 4 * (5 if cell.train.optimizer == "adam" else 4)


def batch_bytes(cell: StudentConfig, splits: data.Splits) -> int:
    """One batch's fp32 inputs, activations and their gradients, roughly: (d + k + 2 H + C) floats per example,
    twice."""
    width = math.prod(splits.shape) + (cell.bottleneck or 0) + 2 * cell.hidden + splits.classes
    return 2 * 4 * cell.train.batch_size * width


def logit_bytes(name_split: tuple[str, str], splits: data.Splits, transfer: data.TransferSet, itemsize: int) -> int:
    rows = len(transfer.x) if name_split[1] == "transfer" else len(splits.split(name_split[1])[0])
    return rows * splits.classes * itemsize


def data_bytes(splits: data.Splits, transfer: data.TransferSet) -> int:
    """Every split as stored, the transfer set once more when it is not the train inputs themselves."""
    extra = 0 if transfer.x is splits.train_x else transfer.x.nbytes
    return splits.nbytes + extra + transfer.source.numel() * transfer.source.element_size()


def trial(cell: StudentConfig, job: pipeline.Job, splits: data.Splits, transfer: data.TransferSet,
          itemsize: int) -> dict[str, int]:
    """Bytes one trial of `cell` holds on its device, by part."""
    return {"data": data_bytes(splits, transfer),
            "logits": sum(logit_bytes(k, splits, transfer, itemsize) for k in pipeline.needs(job)),
            "model": model_bytes(cell, splits), "batch": batch_bytes(cell, splits)}


def describe(parts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / GIB:.2f}" for k, v in parts.items())


def check_fits(sweep: SweepConfig, splits: data.Splits, transfer: data.TransferSet, device: str | torch.device,
               on_this_machine: bool) -> None:
    """Refuse a sweep that cannot fit: each trial on a GPU it has (`device`), and, when the trials run on this
    machine (`on_this_machine`: --local or a local Ray), all concurrent trials with the shared data in host memory
    (80% of what is available). Before any work; the message says what to change."""
    device = torch.device(device)
    itemsize = 2 if sweep.data.compact else 4
    jobs = pipeline.jobs(sweep, None, keys={t.name: "" for t in sweep.teachers})
    per_trial = {job.id: trial(job.cell, job, splits, transfer, itemsize) for job in jobs}
    if device.type == "cuda" and sweep.gpus_per_trial > 0:
        free = torch.cuda.mem_get_info(device)[0]
        job = max(jobs, key=lambda j: sum(per_trial[j.id].values()))
        need = sum(per_trial[job.id].values())
        if need > 0.8 * free:
            raise UserError(f"student H={job.cell.hidden} k={job.cell.bottleneck} needs about {need / GIB:.1f} GiB on "
                            f"{device} ({describe(per_trial[job.id])} GiB) but it has {free / GIB:.1f} GiB free: add "
                            "a bottleneck (e.g. bottleneck=250), lower hidden or batch_size, keep DataConfig.compact, "
                            "or use a bigger GPU")
    if not on_this_machine or (sweep.gpus_per_trial > 0 and device.type != "cuda"):
        return  # trials run on other nodes (or on GPUs this machine lacks): their memory is not ours to count
    cpus = os.cpu_count() or 1
    at_once = min(len(jobs), sweep.search.concurrency or max(1, int(cpus // max(sweep.cpus_per_trial, 1e-9))))
    used = {(name, split) for name, splits_used in pipeline.uses(jobs).items() for split in splits_used}
    shared = data_bytes(splits, transfer) + sum(logit_bytes(k, splits, transfer, itemsize) for k in used)
    biggest = sorted((per_trial[j.id]["model"] + per_trial[j.id]["batch"] for j in jobs), reverse=True)[:at_once]
    need = 2 * shared + sum(biggest) + at_once * PROCESS  # the driver's copy and the store's
    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        raise UserError(f"{at_once} student trials at once need about {need / GIB:.1f} GiB of host memory (data "
                        f"and logits {shared / GIB:.2f} GiB, held twice: driver and object store; the largest trials' "
                        f"model state {sum(biggest) / GIB:.2f} GiB) but this machine has {free / GIB:.1f} GiB "
                        "available: run fewer trials at once (SearchConfig.concurrency, or more cpus_per_trial), add a "
                        "bottleneck or lower hidden, keep DataConfig.compact, or use a bigger machine")
