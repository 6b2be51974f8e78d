"""Figure 1, a cause: the page faults of a wide student's training step, with glibc's default allocator settings and
with freed memory kept in the heap, and with gradients freed (`zero_grad(set_to_none=True)`, as fit does) or kept
(zeroed in place; backward still allocates each gradient afresh and adds it in).

Command:   taskset -c 1 python bench/page_faults.py          (about 1 minute on one core)
Measures:  for each environment (glibc's defaults; bench/malloc.py's KEEP: MALLOC_MMAP_THRESHOLD_ and
           MALLOC_TRIM_THRESHOLD_ at 4 GiB), a fresh process on 1 thread times `--steps` steps of an
           784-H-10 mimic student with fused AdamW at batch `--batch`, both gradient modes alternated in it,
           and counts the minor page faults per step (getrusage). Seconds are comparable within a process only.
Target:    none of its own: zero faults per step is what a step that reuses its memory does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from common import arguments, load, save, table
from malloc import KEEP


def child(hidden: int, batch: int, steps: int) -> dict:
    """{set_to_none: (minor faults per step, fastest step in s)} of one process, both modes alternated."""
    import torch

    from distill import losses, models

    torch.set_num_threads(1)
    out: dict[str, list] = {"True": [], "False": []}
    runs = {}
    for none in (True, False):
        torch.manual_seed(0)
        model = models.snn((784,), 10, hidden)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        x, z = torch.randn(batch, 784), torch.randn(batch, 10)  # (B, D), (B, C)

        def step(model=model, opt=opt, x=x, z=z, none=none) -> None:
            loss = losses.mimic_l2(model(x), z)
            opt.zero_grad(set_to_none=none)
            loss.backward()
            opt.step()

        step()
        step()
        runs[str(none)] = step
    for _ in range(steps):
        for name, step in runs.items():
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            step()
            out[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, time.perf_counter() - t0))
    return {name: {"faults_per_step": sum(f for f, _ in v) / len(v), "fastest_step_s": min(s for _, s in v)}
            for name, v in out.items()}


def main() -> None:
    parser = arguments("page_faults", __doc__)
    parser.add_argument("--hidden", type=int, default=16384)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one environment's process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.hidden, args.batch, args.steps)))
        return
    rows = []
    for env_name, env in (("default", {}), ("keep", KEEP)):
        done = subprocess.run([sys.executable, __file__, "--child", "--hidden", str(args.hidden), "--batch",
                               str(args.batch), "--steps", str(args.steps)], env={**os.environ, **env},
                              check=True, capture_output=True, text=True)
        got = json.loads(done.stdout.strip().splitlines()[-1])
        for none, r in got.items():
            rows.append({"env": env_name, "gradients": "freed" if none == "True" else "kept", "H": args.hidden,
                         "batch": args.batch, **r, "load": load()})
    print(table(rows, ["env", "gradients", "H", "batch", "faults_per_step", "fastest_step_s", "load"]))
    save(args.out, {"env": KEEP, "rows": rows}, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
