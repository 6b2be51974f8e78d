"""Paper scale: the student phase at TIMIT's size, on synthetic frames of its shape, on this machine.

Command:   .venv/bin/python bench/scale.py                      (about 6 minutes on 2 cores; --frames to choose N)
Measures:  for N = 10k, 100k and 1.1M train frames of `timit-shaped` (123 features per frame in utterances of
           150-450 frames, +-7 context gathered per batch, 183 classes; dev and test in TIMIT's proportions) and a
           9-member teacher's logit cache of random fp16 logits written in the real chunked layout, each N in a
           fresh process: the student phase as `distill sweep` runs it (the driver forms the ensemble's mean
           logits from the 9 members' chunks, puts data and means in Ray's object store, and 2 mimic trials of
           1845-250L-1024-183 train at once, 1 CPU each, one epoch). Reported: the driver's peak RSS;
           the peak of the memory summed over every process of the run (PSS, so shared object-store pages count
           once), over the whole run and over the student phase alone; the bytes put into the object store; each
           trial's private memory (what it added to its process); seconds from the process's start and from the
           student phase's start to the first student step; student samples/s. Then the projection table for
           TIMIT and CIFAR-10 at the paper's size, from `distill.budget`'s counts.
Targets:   (issue 15) the student phase at N = 1.1M with 2 concurrent trials at most 6 GB summed over all its
           processes; a GPU trial's data (frames, its teacher's mean logits, labels) at most 2.5 GB at TIMIT's size.
"""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from common import arguments, save, table

from distill import budget, cache, experiment, files, models, pipeline, ray_shared, ray_sweep
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig

GB = 1e9
# sweeps/timit.py's ensemble (9 CNNs), by value; its members are never trained here: their logits are random.
TEACHER = TeacherConfig(name="ecnn", arch="cnn", arch_args={"channels": (128,), "hidden": (2000, 2000, 2000),
                                                            "kernel": 5}, members=9, cpus_per_worker=1)
STUDENT = StudentConfig(hidden=1024, bottleneck=250, train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=256,
                                                                       epochs=1))


class Peak:
    """Samples the PSS summed over this process and all its descendants (Ray's daemons, workers) every second."""

    def __init__(self):
        self.peak, self.phase, self.stop = 0, 0, False
        threading.Thread(target=self.run, daemon=True).start()

    def total(self) -> int:
        me = psutil.Process()
        pss = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                pss += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return pss

    def run(self) -> None:
        while not self.stop:
            now = self.total()
            self.peak, self.phase = max(self.peak, now), max(self.phase, now)
            time.sleep(1.0)


def fake_cache(root, data_config: DataConfig, splits, transfer, key: str) -> list[dict]:
    """A 9-member logit cache of random fp16 logits in the real layout (chunks, each member's record, manifest);
    returns the stand-in member results it was published with."""
    gen = torch.Generator().manual_seed(0)
    sizes = {"transfer": len(transfer.x), "val": len(splits.val_x), "test": len(splits.test_x)}
    members = []
    for i in range(TEACHER.members):
        sha = files.sha256(f"synthetic member {i}".encode())
        logits = {split: torch.randn(n, splits.classes, generator=gen).half() for split, n in sizes.items()}
        cache.write_chunks(root, data_config, TEACHER, i, sha, logits)
        members.append({"sha256": sha})
    cache.publish(root, data_config, TEACHER, key, members, splits)
    return members


def one(frames: int) -> dict:
    """One N in this process: prepare, fake the cache, run the student phase; the figures."""
    start = time.time()
    peak = Peak()
    data_config = DataConfig(name="timit-shaped", views=0, args={"frames": frames})
    splits, transfer = experiment.prepare(data_config)
    prepared = time.time() - start
    root = Path(tempfile.mkdtemp(prefix="distill-bench-scale-"))
    key = "synthetic"
    fake_cache(root, data_config, splits, transfer, key)
    sweep = SweepConfig(name="scale", data=data_config, teachers=(TEACHER,), hidden=(STUDENT.hidden,),
                        bottleneck=(STUDENT.bottleneck,), targets=("mimic",), student_teachers=("ecnn",), seeds=(0, 1),
                        student=STUDENT, cpus_per_trial=1, search=SearchConfig(samples=1, concurrency=2))
    ray_shared.init(num_cpus=2)
    peak.phase, phase = peak.total(), time.time()  # the student phase starts: data prepared, Ray up
    driver_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
    jobs = pipeline.jobs(sweep, root, keys={TEACHER.name: key})
    logits = cache.teacher_logits(root, data_config, sweep.teachers, pipeline.uses(jobs), {TEACHER.name: key})
    executor = ray_sweep.Executor(sweep, root, splits, transfer, print)
    errored = executor.run_students(jobs, logits, {j.id: [] for j in jobs}, False)
    rows = [r for j in jobs for r in pipeline.finished(root, j, False)] + errored
    assert rows and all(r["status"] == "ok" for r in rows), rows
    peak.stop = True
    store = data_bytes = budget.data_bytes(splits, transfer)
    store += sum(v.numel() * v.element_size() for v in logits.values())
    files.remove_tree(root)
    first = min(r["started_at"] for r in rows)
    return {"frames": frames, "transfer": len(transfer.x), "val": len(splits.val_x), "test": len(splits.test_x),
            "prepare_seconds": prepared, "driver_peak_rss_before_phase_gb": driver_before,
            "driver_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            * 1024 / GB, "all_processes_peak_gb": peak.peak / GB, "student_phase_peak_gb": peak.phase / GB,
            "store_gb": store / GB, "data_gb": data_bytes / GB,
            "trial_private_gb": [r["trial_private_mib"] * 2**20 / GB for r in rows],
            "first_step_from_start_s": first - start, "first_step_from_phase_s": first - phase,
            "samples_per_s": sum(r["transfer_size"] / r["train_seconds"] for r in rows),
            "train_seconds": [r["train_seconds"] for r in rows]}


def projection() -> list[dict]:
    """Memory per trial at the paper's size, from the counts `distill.budget` checks against (compact storage)."""
    rows = []
    cases = [  # (data set, train, val, test, transfer, bytes per stored input, shape, classes, student)
        ("TIMIT", 1_100_000, 122_000, 58_000, 1_100_000, 3 * 41 * 2, (3, 41, 15), 183,
         StudentConfig(hidden=400_000, bottleneck=250, train=STUDENT.train)),
        ("TIMIT", 1_100_000, 122_000, 58_000, 1_100_000, 3 * 41 * 2, (3, 41, 15), 183,
         StudentConfig(hidden=8_000, bottleneck=250, train=STUDENT.train)),
        ("CIFAR-10", 45_000, 5_000, 10_000, 45_000 * 11, 3 * 32 * 32, (3, 32, 32), 10,
         StudentConfig(hidden=30_000, bottleneck=1200, arch="conv_snn", arch_args={"channels": 128, "kernel": 5},
                       train=dataclasses.replace(STUDENT.train, batch_size=256))),
    ]
    for name, n_train, n_val, n_test, n_transfer, per, shape, classes, cell in cases:
        speech = name == "TIMIT"
        stored = (n_train + n_val + n_test) * per + (0 if speech else (n_transfer - n_train) * per)
        labels = (n_train + n_val + n_test + n_transfer) * 8 + (16 * (n_train + n_val + n_test) if speech else 0)
        logits = (n_transfer + n_test) * classes * 2  # the teacher's mean on transfer, the reference's on test
        with torch.device("meta"):
            params = models.param_count(models.build(cell.arch, shape, classes, hidden=cell.hidden,
                                                     bottleneck=cell.bottleneck, **cell.arch_args))
        model = params * 4 * 5
        width = math.prod(shape) + (cell.bottleneck or 0) + 2 * cell.hidden + classes
        batch = 2 * 4 * cell.train.batch_size * width
        rows.append({"data set": name, "student": f"{cell.arch} H={cell.hidden:,} k={cell.bottleneck}",
                     "params (M)": params / 1e6, "data (GB)": (stored + labels) / GB, "mean logits (GB)": logits / GB,
                     "GPU trial: data + logits (GB)": (stored + labels + logits) / GB,
                     "GPU trial: all (GB)": (stored + labels + logits + model + batch) / GB,
                     "CPU node: store + driver (GB)": 2 * (stored + labels + logits) / GB,
                     "CPU trial: private (GB)": (model + batch + budget.PROCESS) / GB})
    return rows


def main() -> None:
    parser = arguments("scale", __doc__)
    parser.add_argument("--frames", type=int, nargs="+", default=[10_000, 100_000, 1_100_000])
    parser.add_argument("--one", action="store_true", help="internal: measure one N in this process")
    args = parser.parse_args()
    if args.one:
        files.write_json(args.out, one(args.frames[0]))
        return
    runs = []
    for n in args.frames:  # a fresh process per N: its peak RSS is its own
        out = Path(tempfile.mkdtemp()) / "one.json"
        subprocess.run([sys.executable, __file__, "--one", "--frames", str(n), "--out", str(out)], check=True)
        runs.append(json.loads(out.read_text()))
        print(json.dumps(runs[-1], indent=1))
    print(table(runs, ["frames", "driver_peak_rss_gb", "all_processes_peak_gb", "student_phase_peak_gb", "store_gb",
                       "first_step_from_start_s", "samples_per_s"]))
    projected = projection()
    print(table(projected, list(projected[0])))
    save(args.out, {"runs": runs, "projection": projected}, " ".join(["bench/scale.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
