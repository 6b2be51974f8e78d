"""Figure 5: sweep scheduling, the wall time of an 8-trial sweep against its trials' own time.

Command:   python bench/scheduling.py               (about 2 minutes on 2 cores)
Measures:  8 mimic students (H=1024, the demo's AdamW settings, 10 epochs over the 38,500-input mnist5k
           transfer set; random per-member teacher logits, speed only; seeds 0-7) through the project's Tune
           path, the Ray executor (`fixtures.sweep_students`), with cpus_per_trial = 1 and concurrency 2 on a local Ray
           of 2 CPUs (started before the clock). Wall: the whole `sweep_students` call (Tuner start, trial
           actors, results). Trial time: each row's `wall_seconds` (the trial's `run_student`: training,
           val and test inference). Ratio = wall / (sum of trial times / 2).
Target:    ratio <= 1.2.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import ray
from common import arguments, load, save, table
from fixtures import mnist5k, random_logits, student_sweep, sweep_students

from distill import ray_shared


def timeline(frame, t0: float, t1: float) -> dict:
    """Where the wall time went, from each trial's last Tune report (result.json in its trial dir): its
    `timestamp` (whole seconds, unix) minus `time_total_s` is when the trial started. Returns the seconds
    from the sweep call to the first trial start, from the last trial end to the call's return, and the
    per-trial Tune time (time_total_s: the trial function, incl. getting the data) vs its `wall_seconds`."""
    spans = []
    for trial_dir in frame["trial_dir"]:
        last = json.loads(Path(trial_dir, "result.json").read_text().splitlines()[-1])
        spans.append((last["timestamp"] - last["time_total_s"], last["timestamp"], last["time_total_s"]))
    return {"to_first_start_s": min(s for s, _, _ in spans) - t0, "after_last_end_s": t1 - max(e for _, e, _ in spans),
            "sum_tune_trial_s": sum(t for _, _, t in spans)}


def main() -> None:
    parser = arguments("scheduling", __doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    splits, transfer = mnist5k()
    per_member = random_logits(splits, transfer)
    ray_shared.init(num_cpus=2)
    sweep = student_sweep("bench-scheduling", args.hidden, args.epochs, tuple(range(args.trials)),
                          cpus_per_trial=2 / args.concurrency, concurrency=args.concurrency)
    root = Path(tempfile.mkdtemp(prefix="distill-bench-scheduling-"))
    start_load = load()
    t0, unix0 = time.perf_counter(), time.time()
    frame = sweep_students(sweep, root, splits, transfer, per_member, log=print)
    wall, unix1 = time.perf_counter() - t0, time.time()
    assert (frame["status"] == "ok").all(), frame[frame["status"] != "ok"]
    trial = frame["wall_seconds"].astype(float)
    ideal = trial.sum() / args.concurrency
    row = {"trials": len(frame), "concurrency": args.concurrency, "cpus_per_trial": sweep.cpus_per_trial,
           "wall_s": wall, "sum_trial_s": float(trial.sum()), "ideal_s": float(ideal), "ratio": wall / ideal,
           "overhead_s": wall - ideal, "mean_trial_s": float(trial.mean()),
           "mean_train_s": float(frame["train_seconds"].mean()), **timeline(frame, unix0, unix1),
           "load_start": start_load, "load": load()}
    print(table([row], ["trials", "concurrency", "wall_s", "sum_trial_s", "ideal_s", "ratio", "overhead_s",
                        "mean_trial_s", "mean_train_s", "to_first_start_s", "after_last_end_s", "sum_tune_trial_s",
                        "load_start", "load"]))
    save(args.out, {"hidden": args.hidden, "epochs": args.epochs, "row": row,
                    "trial_seconds": trial.tolist(), "train_seconds": frame["train_seconds"].astype(float).tolist()},
         " ".join(["python", *sys.argv]))
    ray.shutdown()


if __name__ == "__main__":
    main()
