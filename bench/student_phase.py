"""The demo's student phase with this tree's code against an earlier commit's, one after the other in one run, each
on a fresh local Ray and a fresh storage directory, on the same sweep file: its time and its errors.

Command:   .venv/bin/python bench/student_phase.py [--before d00b646] [--after COMMIT] [--sweep sweeps/demo.py]
           (15 minutes on 2 idle cores, measured: each version trains its own teachers first, untimed)
Measures:  wall seconds of `python -m distill sweep SWEEP` (the students: the protocol's search, then every other
           seed and teacher) for each code version (the earlier one from a git worktree, imported through
           PYTHONPATH, which Ray's workers inherit), the part of it the fixed trials took (first start to last end of
           the trials that are not search trials, from their rows), and each cell's mean test error over seeds.
           Issue 19: the demo's student-phase time before and after the loop's changes (b1ca149), and its
           errors not worse. The default --before, d00b646, is the last commit before them; it also ran the
           search as one Tuner per cell (one Tuner for all came in 9fd8dbb), so the fixed trials' span is the
           like-for-like figure of the loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import arguments, load, save
from teacher_phase import worktree

REPO = Path(__file__).resolve().parents[1]


def distill(code: Path, command: str, sweep: Path, storage: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "distill", command, str(sweep), "--storage", str(storage)],
                          cwd=code, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{code}: distill {command}: {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def phase(code: Path, sweep: Path, storage: Path) -> dict:
    distill(code, "teachers", sweep, storage)
    seconds = distill(code, "sweep", sweep, storage)
    found = sorted(storage.glob("*/results.parquet"))
    rows = pd.read_parquet(found[0])
    ok = rows[rows["status"] == "ok"]
    # Search trials live in a sub-folder per sampled setting (pipeline.trial_dir): the others are the fixed trials.
    fixed = ok[~ok["trial_dir"].str.contains(r"/students/[^/]+/[0-9a-f]{12}$", regex=True)]
    ends = fixed["started_at"] + fixed["wall_seconds"]
    span = float(ends.max() - fixed["started_at"].min()) if len(fixed) else None
    # Per cell and seed the trial of lowest val error (the report's choice), then the mean over seeds.
    best = ok.sort_values("val_error").groupby(["target", "teacher", "hidden", "seed"], dropna=False).head(1)
    errors = best.groupby(["target", "teacher", "hidden"], dropna=False)["test_error"].mean()
    return {"seconds": seconds, "fixed_trials": len(fixed), "fixed_span_seconds": span, "trials": len(rows),
            "errors": {" ".join(map(str, k)).strip(): float(v) for k, v in errors.items()}, "load": load()}


def main() -> None:
    parser = arguments("student_phase", __doc__)
    parser.add_argument("--before", default="d00b646", help="the earlier commit to compare with")
    parser.add_argument("--after", default=None, help="the commit to measure (default: this working tree)")
    parser.add_argument("--sweep", default="sweeps/demo.py", help="the sweep file both run (this tree's)")
    args = parser.parse_args()
    old = worktree(args.before)
    new = worktree(args.after) if args.after else REPO
    sweep = (REPO / args.sweep).resolve()
    try:
        before = phase(old, sweep, Path(tempfile.mkdtemp(prefix="distill-students-before-")))
        after = phase(new, sweep, Path(tempfile.mkdtemp(prefix="distill-students-after-")))
    finally:
        for tree in {old, new} - {REPO}:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    b, a = before, after
    print(f"before ({args.before}): {b['seconds']:.0f} s (fixed trials {b['fixed_span_seconds']:.0f} s); "
          f"now: {a['seconds']:.0f} s (fixed trials {a['fixed_span_seconds']:.0f} s); "
          f"ratio {a['seconds'] / b['seconds']:.2f}, fixed {a['fixed_span_seconds'] / b['fixed_span_seconds']:.2f}")
    for cell in sorted(after["errors"]):
        print(f"  {cell}: {100 * before['errors'].get(cell, float('nan')):.2f}% -> {100 * after['errors'][cell]:.2f}%")
    save(args.out, {"before_commit": args.before, "after_commit": args.after or "working tree", "sweep": args.sweep,
                    "before": before, "after": after}, " ".join(["bench/student_phase.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
