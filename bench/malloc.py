"""Figure 1, a cause: glibc returns every tensor over its mmap threshold (at most 32 MiB) to the kernel when it
is freed, so a wide student's activations and gradients (an H=32k student at batch 512: 64 MiB each) are
mapped and page-faulted afresh on every step.

Command:   python bench/malloc.py                   (about 2 minutes on 2 cores)
Measures:  bench/throughput.py --threads 1 --batches 512 --hidden 8192 32768 (no bottleneck) in a fresh
           process, with glibc's defaults and with MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ set to
           4 GiB (freed memory stays in the heap and is reused), alternated, 2 rounds; the median samples/s.
Target:    none of its own: the gain is what figure 1's target misses by at large H.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import arguments, interleave, load, save, table

from distill import files

KEEP = {"MALLOC_MMAP_THRESHOLD_": str(4 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


def run(env: dict, hidden: list[int]) -> dict[int, float]:
    """samples/s per H from one throughput.py process with `env` added to this one's environment."""
    out = Path(tempfile.mkdtemp(prefix="distill-bench-malloc-")) / "t.json"
    script = Path(__file__).resolve().parent / "throughput.py"
    subprocess.run([sys.executable, str(script), "--threads", "1", "--batches", "512", "--no-fused-comparison",
                    "--hidden", *map(str, hidden), "--out", str(out)], env={**os.environ, **env}, check=True,
                   capture_output=True)
    return {r["H"]: r["samples_per_s"] for r in files.read_json(out)["rows"] if r["k"] is None}


def main() -> None:
    parser = arguments("malloc", __doc__)
    parser.add_argument("--hidden", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    got = interleave({"default": lambda: run({}, args.hidden), "keep": lambda: run(KEEP, args.hidden)}, args.repeats)
    rows = []
    for h in args.hidden:
        default = statistics.median(r[h] for r in got["default"])
        keep = statistics.median(r[h] for r in got["keep"])
        rows.append({"H": h, "batch": 512, "default_samples_per_s": default, "keep_samples_per_s": keep,
                     "speedup": keep / default, "load": load()})
    print(table(rows, ["H", "batch", "default_samples_per_s", "keep_samples_per_s", "speedup", "load"]))
    save(args.out, {"env": KEEP, "rows": rows, "runs": got}, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
