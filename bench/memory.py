"""Memory of concurrent sweep trials against one copy of the shared data.

Command:   python bench/memory.py RESULTS_DIR   (a finished `distill run sweeps/demo.py` directory: its cache)
Measures:  4 student trials running at once (mimic, H=1024) read the mnist5k transfer set and the 9-member
           logits from the object store. Each trial records how much private memory (USS) its process gained
           from its start (after the imports, before the data) to its end: model, optimizer, batches,
           allocator caches and any copy of the shared data. The interpreter and torch themselves are paid
           per process whatever the design, so they are not counted. Target: the trials' extra memory
           plus the one object-store copy stays within 1.5x of (one copy of data + logits + one trial's model
           state: weights, gradients and Adam's two moments).
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

from distill import cache, experiment, models, ray_shared
from distill.config import SearchConfig, load_sweep


@ray.remote(num_cpus=0.5)
def read_everything(data) -> tuple[float, bool]:
    """Private memory a worker gains by getting the shared payload and reading every byte of it as tensors,
    and whether any array came back writeable (a private copy); ray.get maps store objects read-only."""
    before = psutil.Process().memory_full_info().uss
    splits, transfer, logits = ray_shared.get(data)
    tensors = [transfer.x, transfer.source, splits.train_x, splits.val_x, splits.test_x,
               *(v for per in logits.values() for v in per.values())]
    total = sum(float(t.float().sum()) if t.dtype != torch.float32 else float(t.sum()) for t in tensors)
    assert total == total  # every page was read
    writeable = any(a.flags.writeable for a in data["transfer"].values())
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
    per_member = cache.load_all(root, sweep.data, sweep.teachers)
    payload = ray_shared.pack(splits, transfer, per_member)
    shared = sum(a.nbytes for part in (payload["splits"], payload["transfer"]) for a in part.values()
                 if hasattr(a, "nbytes")) + sum(a.nbytes for per in payload["logits"].values() for a in per.values())
    read_cost, copied = ray.get(read_everything.remote(ray.put(payload)))
    frame = sweep_students(sweep, bench_root, splits, transfer, per_member, log=print)
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
