"""Figure 2: the same student trained inside a Ray Tune trial vs in a plain in-process loop.

Command:   python bench/ray_overhead.py            (about 3 minutes on 2 cores)
Measures:  one mimic student (H=2048, the demo's AdamW settings, 2 epochs over the 38,500-input mnist5k
           transfer set; random per-member teacher logits, speed only) trained (a) in this process by
           `distill.experiment.run_student` with torch using c threads, and (b) as a one-trial sweep through
           the Ray executor (`fixtures.sweep_students`) with cpus_per_trial = c, for c = 1 and 2, alternated, 2 rounds.
           Compared: the trial's `train_seconds` (the training loop alone, as the trial reports it) and the
           whole sweep call's wall time (Tuner start-up, trial actor, result collection). Also: the
           OMP_NUM_THREADS and torch.get_num_threads() a Ray worker with c CPUs starts with, before the trial
           sets its own.
Target:    in-process train seconds / trial train seconds >= 0.9 (the trial trains at >= 90% of the speed).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
from common import arguments, interleave, load, save, table
from fixtures import mnist5k, random_logits, student_sweep, sweep_students

from distill import experiment, ray_shared


@ray.remote
class Threads:
    """A fresh worker process (an actor, so no reused task worker): what its torch starts with. Ray sets
    OMP_NUM_THREADS to the worker's CPU count; torch reads it when it starts its thread pool."""

    def get(self) -> dict:
        return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads()}


def in_process(sweep, splits, transfer, per_member, threads_: int) -> dict:
    """The student in this process, torch on `threads_` threads (the trial sets int(cpus_per_trial))."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads_)
    try:
        cell = sweep.cells()[0]
        t0 = time.perf_counter()
        row = experiment.run_student(cell, splits, transfer, per_member[cell.teacher, "transfer"],
                                     per_member[cell.teacher, "test"])
        return {"train_seconds": row["train_seconds"], "wall_seconds": time.perf_counter() - t0, "load": load()}
    finally:
        torch.set_num_threads(before)


def in_tune(sweep, splits, transfer, per_member, storage: Path) -> dict:
    """The student as a one-trial sweep through the project's Tune path, in a fresh storage directory."""
    root = Path(tempfile.mkdtemp(dir=storage))
    t0 = time.perf_counter()
    frame = sweep_students(sweep, root, splits, transfer, per_member, log=lambda line: None)
    row = frame.iloc[0]
    assert row["status"] == "ok", row.get("reason")
    return {"train_seconds": float(row["train_seconds"]), "wall_seconds": time.perf_counter() - t0, "load": load()}


def main() -> None:
    parser = arguments("ray_overhead", __doc__)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="distill-bench-ray-"))
    splits, transfer = mnist5k()
    per_member = random_logits(splits, transfer)
    ray_shared.init(num_cpus=2)
    probe = {}
    for c in args.cpus:
        actor = Threads.options(num_cpus=c).remote()
        probe[c] = ray.get(actor.get.remote())
        ray.kill(actor)
    rows = []
    for c in args.cpus:
        sweep = student_sweep("bench-ray", args.hidden, args.epochs, (0,), cpus_per_trial=c, concurrency=1)
        got = interleave({"plain": lambda sweep=sweep, c=c: in_process(sweep, splits, transfer, per_member, c),
                          "tune": lambda sweep=sweep: in_tune(sweep, splits, transfer, per_member, storage)},
                         args.repeats)
        plain = statistics.median(r["train_seconds"] for r in got["plain"])
        tune = statistics.median(r["train_seconds"] for r in got["tune"])
        plain_wall = statistics.median(r["wall_seconds"] for r in got["plain"])
        tune_wall = statistics.median(r["wall_seconds"] for r in got["tune"])
        rows.append({"cpus": c, "worker_OMP_NUM_THREADS": probe[c]["OMP_NUM_THREADS"],
                     "worker_torch_threads": probe[c]["torch_threads"], "plain_train_s": plain, "tune_train_s": tune,
                     "ratio": plain / tune, "plain_wall_s": plain_wall, "tune_wall_s": tune_wall,
                     "wall_ratio": plain_wall / tune_wall, "runs": got, "load": load()})
    print(f"driver torch threads {torch.get_num_threads()}; load {load()}")
    print(table(rows, ["cpus", "worker_OMP_NUM_THREADS", "worker_torch_threads", "plain_train_s", "tune_train_s",
                       "ratio", "plain_wall_s", "tune_wall_s", "wall_ratio", "load"]))
    save(args.out, {"hidden": args.hidden, "epochs": args.epochs, "transfer_size": len(transfer.x),
                    "driver_torch_threads": torch.get_num_threads(), "rows": rows},
         " ".join(["python", *sys.argv]))
    ray.shutdown()


if __name__ == "__main__":
    main()
