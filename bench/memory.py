"""Memory of concurrent sweep trials against one copy of the shared data.

Command:   python bench/memory.py RESULTS_DIR   (a finished `distill run sweeps/demo.py` directory: its cache)
Measures:  4 student trials running at once (mimic, H=1024) read the mnist5k transfer set and the 9-member
           ensemble's mean logits from the object store. Each trial records how much private memory (USS) its
           process gained from its start (after the imports, before the data) to its end: model, optimizer,
           batches, allocator caches and any copy of the shared data. The interpreter and torch themselves are paid
           per process whatever the design, so they are not counted. Target: the trials' extra memory plus the one
           object-store copy stays within 1.5x of (one copy of data + logits + one trial's model state: weights,
           gradients and Adam's two moments).
"""

import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import psutil
import ray
import torch
from fixtures import sweep_students

from distill import cache, experiment, models, pipeline, ray_shared
from distill.config import SearchConfig, load_sweep


@ray.remote(num_cpus=0.5)
def read_everything(data, logits: list) -> tuple[float, bool]:
    """Private memory a worker gains by getting the shared payload and a teacher's logits and reading every byte
    of them as tensors, and whether any array came back writeable (a private copy); ray.get maps store objects
    read-only."""
    before = psutil.Process().memory_full_info().uss
    splits, transfer = ray_shared.get(data)
    mine = ray_shared.get_logits(logits[0], list(logits[0]))
    tensors = [transfer.x.stored, transfer.source, splits.train_x.stored, splits.val_x.stored, splits.test_x.stored,
               *mine.values()]
    total = sum(float(t.double().sum()) for t in tensors)
    assert total == total  # every page was read
    writeable = any(t.numpy().flags.writeable for t in tensors)
    return psutil.Process().memory_full_info().uss - before, writeable


def main(results_dir: str) -> None:
    sweep = load_sweep("sweeps/demo.py")
    root = Path(results_dir)
    bench_root = Path(tempfile.mkdtemp(prefix="distill-bench-memory-"))
    for part in ("teachers", "cache"):  # the demo's teachers and logit cache, not its results
        shutil.copytree(root / part, bench_root / part)
    sweep = dataclasses.replace(sweep, hidden=(1024,), bottleneck=(None,), targets=("mimic",), seeds=(0, 1, 2, 3),
                                cpus_per_trial=0.5, search=SearchConfig(samples=1, concurrency=4))
    sweep = dataclasses.replace(sweep, student=dataclasses.replace(
        sweep.student, train=dataclasses.replace(sweep.student.train, epochs=3, patience=0)))
    splits, transfer = experiment.prepare(sweep.data)
    ray_shared.init(num_cpus=2)
    logits = cache.teacher_logits(root, sweep.data, sweep.teachers, pipeline.uses(pipeline.jobs(sweep, root)))
    shared = splits.nbytes + transfer.x.nbytes + sum(v.numel() * v.element_size() for v in logits.values())
    refs = [ray_shared.put_logits(logits)]  # in a list: the task resolves nothing, it fetches what it reads
    read_cost, copied = ray.get(read_everything.remote(ray_shared.put(splits, transfer), refs))
    frame = sweep_students(sweep, bench_root, splits, transfer, logits, log=print)
    with torch.device("meta"):
        params = models.param_count(experiment.build_student(sweep.cells()[0], splits))
    model = 4 * params * 4  # fp32 weights, gradients, Adam's two moments
    extra = frame["trial_private_mib"].clip(lower=0) * 2**20
    total, reference = extra.sum() + shared, shared + model
    mib = 2**20
    print(f"private memory each trial added: {[round(e / mib) for e in extra]} MiB")
    print(f"shared copy {shared / mib:.0f} MiB, one model state {model / mib:.0f} MiB")
    print(f"4 trials + store: {total / mib:.0f} MiB vs reference {reference / mib:.0f} MiB: "
          f"ratio {total / reference:.2f}, torch's per-process runtime (allocator caches, thread pools) included")
    shared_cost = 4 * read_cost + shared + model
    print(f"reading all {shared / mib:.0f} MiB of shared data in a worker added {read_cost / mib:.1f} MiB private "
          f"(a private copy: {copied}); 4 trials' data cost + store + one model: {shared_cost / mib:.0f} MiB, "
          f"ratio {shared_cost / reference:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main(sys.argv[1])
