"""The demo's teacher phase (9 CNN members through Ray Train, then the harvest) with this tree's code against an
earlier commit's, one after the other in one run, each on a fresh local Ray and a fresh storage directory.

Command:   .venv/bin/python bench/teacher_phase.py [--before 894cf22] [--after COMMIT]   (about 12 minutes on 2
           idle cores; --after: a commit instead of this working tree, e.g. while the tree is being edited)
Measures:  wall seconds of `python -m distill teachers sweeps/demo.py` (the earlier commit's sweep file, 9 CNN
           members, for both) for each code version (the earlier one from a git worktree, imported through
           PYTHONPATH, which Ray's workers inherit), the members' test errors, and how many members trained at once
           (from their results' start and end times, where recorded).
           Target (issue 15): this tree's time at most 0.6 of the earlier commit's on 2 CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import arguments, load, save

REPO = Path(__file__).resolve().parents[1]


def phase(code: Path, sweep: Path, storage: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "distill", "teachers", str(sweep), "--storage", str(storage)],
                          cwd=code, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{code}: {done.stderr[-2000:]}")
    found = sorted((storage / "demo" / "teachers").glob("*/member-*/result.json"))
    results = [json.loads(p.read_text()) for p in found]
    spans = [(r["started_at"], r["finished_at"]) for r in results if "started_at" in r]
    # The most members whose (last) training run overlapped one moment: the start of one of them.
    at_once = max((sum(a <= s < b for a, b in spans) for s, _ in spans), default=None)
    return {"seconds": seconds, "members": len(results), "test_errors": [r["test_error"] for r in results],
            "most_at_once": at_once, "load": load()}


def worktree(commit: str) -> Path:
    tree = Path(tempfile.mkdtemp(prefix=f"distill-{commit}-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=REPO, check=True, capture_output=True)
    return tree


def main() -> None:
    parser = arguments("teacher_phase", __doc__)
    parser.add_argument("--before", default="894cf22", help="the earlier commit to compare with")
    parser.add_argument("--after", default=None, help="the commit to measure (default: this working tree)")
    args = parser.parse_args()
    old = worktree(args.before)
    new = worktree(args.after) if args.after else REPO
    try:
        # Both run the earlier commit's demo sweep (9 CNN members): the same work, two code versions.
        sweep = old / "sweeps" / "demo.py"
        before = phase(old, sweep, Path(tempfile.mkdtemp(prefix="distill-teachers-before-")))
        after = phase(new, sweep, Path(tempfile.mkdtemp(prefix="distill-teachers-after-")))
    finally:
        for tree in {old, new} - {REPO}:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    ratio = after["seconds"] / before["seconds"]
    print(f"before ({args.before}): {before['seconds']:.0f} s; now: {after['seconds']:.0f} s "
          f"({after['most_at_once']} members at once); ratio {ratio:.2f} (target <= 0.6)")
    save(args.out, {"before_commit": args.before, "after_commit": args.after or "working tree", "before": before,
                    "after": after, "ratio": ratio},
         " ".join(["bench/teacher_phase.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
