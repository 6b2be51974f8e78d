"""Memory of concurrent sweep trials against one copy of the shared data.

Command:   python bench/memory.py RESULTS_DIR   (a finished `distill run sweeps/demo.py` directory: its cache)
Measures:  4 student trials running at once (mimic, H=1024) read the mnist5k transfer set and the 9-member
           logits from the object store. For each trial process we take the peak USS (private memory) and
           subtract the USS of a Ray worker that imported the same libraries but holds no data (the
           interpreter and torch, paid per process whatever the design). Target: the trials' extra memory
           plus the one object-store copy stays within 1.5x of (one copy of data + logits + one trial's model
           state: weights, gradients and Adam's two moments).
"""

import dataclasses
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import ray

from distill import cache, experiment, models, ray_shared, ray_sweep
from distill.config import SearchConfig, load_sweep


@ray.remote(num_cpus=0.5)
def idle_trial_process() -> int:
    import torch  # noqa: F401  the same imports as a trial, no data

    import distill.ray_sweep  # noqa: F401

    return psutil.Process().memory_full_info().uss


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
    baseline = ray.get(idle_trial_process.remote())
    per_member = {t.name: cache.load(root, sweep.data, t) for t in sweep.teachers}
    payload = ray_shared.pack(splits, transfer, per_member)
    shared = sum(a.nbytes for part in (payload["splits"], payload["transfer"]) for a in part.values()
                 if hasattr(a, "nbytes")) + sum(a.nbytes for per in payload["logits"].values() for a in per.values())
    peaks: dict[int, int] = {}
    done = threading.Event()

    def poll():
        while not done.is_set():
            for p in psutil.process_iter(["cmdline"]):
                if "ImplicitFunc" in " ".join(p.info["cmdline"] or []):
                    try:
                        peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_full_info().uss)
                    except psutil.Error:
                        pass
            time.sleep(0.2)

    watcher = threading.Thread(target=poll)
    watcher.start()
    ray_sweep.sweep_students(sweep, bench_root, splits, transfer, per_member, log=print)
    done.set()
    watcher.join()
    with __import__("torch").device("meta"):
        params = models.param_count(experiment.build_student(sweep.cells()[0], splits))
    model = 4 * params * 4  # fp32 weights, gradients, Adam's two moments
    extra = sorted(max(0, u - baseline) for u in peaks.values())[-4:]
    total, reference = sum(extra) + shared, shared + model
    mib = 2**20
    print(f"trial processes seen: {len(peaks)}; baseline USS {baseline / mib:.0f} MiB; "
          f"extra per trial {[round(e / mib) for e in extra]} MiB")
    print(f"shared copy {shared / mib:.0f} MiB, one model state {model / mib:.0f} MiB")
    print(f"4 trials + store: {total / mib:.0f} MiB vs reference {reference / mib:.0f} MiB: "
          f"ratio {total / reference:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main(sys.argv[1])
