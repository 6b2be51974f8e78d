"""Figure 6: harvest throughput, the teacher ensemble's inputs/s when it labels the transfer set.

Command:   python bench/harvest.py                  (about 2 minutes on 2 cores)
Measures:  `distill.experiment.harvest` (what `distill teachers` runs per member: `infer` over transfer,
           val and test) for the demo's 9 CNN members (untrained weights: speed only) on the real mnist5k
           splits, 40,000 inputs per member. Reported: ensemble inputs/s = inputs / (seconds for all 9
           members), and GFLOP/s of the convolutions and linear layers. Variants, each on 2 members and
           alternated, 2 rounds: NCHW (`infer` before the channels-last fix in distill/train.py) vs
           channels-last (now), infer's batch size (1024, the default, vs 256 and 4096), torch.compile (its
           compile time reported apart), and 1 torch thread (what `ray_teachers.harvest_task`, a 1-CPU Ray
           task, gets) instead of all cores.
Target:    none set by the issue; reported. A useful bar: harvesting takes a small fraction of teacher
           training (an epoch of a member is 3x the forward FLOPs on 38,500 inputs).
"""

from __future__ import annotations

import statistics
import sys
import time
from unittest import mock

import torch
from common import arguments, interleave, load, save, table
from fixtures import TEACHER, members, mnist5k

from distill import experiment


def member_flops(shape: tuple[int, int, int], classes: int) -> int:
    """Forward multiply-add FLOPs of one input through the demo's CNN member (convs 'same', 2x2 pools)."""
    c, h, w = shape
    channels, hidden, k = TEACHER.arch_args["channels"], TEACHER.arch_args["hidden"], TEACHER.arch_args["kernel"]
    flops = 0
    for ch in channels:
        flops += 2 * h * w * c * ch * k * k
        c, h, w = ch, h // 2, w // 2
    d = c * h * w
    for units in (*hidden, classes):
        flops += 2 * d * units
        d = units
    return flops


def harvest_seconds(models_: list[torch.nn.Module], splits, transfer, batch_size: int) -> float:
    t0 = time.perf_counter()
    for m in models_:
        experiment.harvest(m, splits, transfer, torch.float16, batch_size)
    return time.perf_counter() - t0


def main() -> None:
    parser = arguments("harvest", __doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant-members", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--views", type=int, default=10, help="augmented views in the transfer set (the demo's 10)")
    args = parser.parse_args()
    splits, transfer = mnist5k(args.views)
    inputs = len(transfer.x) + len(splits.val_x) + len(splits.test_x)
    flops = member_flops(splits.shape, splits.classes)
    ensemble = members(splits)
    full = harvest_seconds(ensemble, splits, transfer, 1024)
    rows = [{"variant": "all 9 members, as `distill teachers` runs it (batch 1024)", "members": len(ensemble),
             "seconds": full,
             "ensemble_inputs_per_s": inputs / full, "GFLOP/s": inputs * len(ensemble) * flops / full / 1e9,
             "load": load()}]
    few = ensemble[: args.variant_members]
    t0 = time.perf_counter()
    compiled = [] if args.no_compile else [torch.compile(m) for m in members(splits, args.variant_members)]
    harvest_seconds(compiled, splits, transfer, 1024)  # compiles (and runs once)
    compile_s = time.perf_counter() - t0

    def nchw(batch_size: int) -> float:
        with mock.patch.object(experiment, "infer", infer_nchw):
            return harvest_seconds(few, splits, transfer, batch_size)

    def one_thread() -> float:  # what `ray_teachers.harvest_task` gets: Ray gives its 1-CPU worker 1 thread
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return harvest_seconds(few, splits, transfer, 1024)
        finally:
            torch.set_num_threads(before)

    variants = {
        "NCHW (before), batch 1024": lambda: nchw(1024),
        "channels-last (now), batch 1024": lambda: harvest_seconds(few, splits, transfer, 1024),
        "channels-last, batch 256": lambda: harvest_seconds(few, splits, transfer, 256),
        "channels-last, batch 4096": lambda: harvest_seconds(few, splits, transfer, 4096),
        "NCHW, batch 4096": lambda: nchw(4096),
        **({} if args.no_compile else {
            "channels-last + torch.compile": lambda: harvest_seconds(compiled, splits, transfer, 1024)}),
        "channels-last, 1 thread (a 1-CPU Ray task)": one_thread,
    }
    got = interleave(variants, args.repeats)
    base = statistics.median(got["NCHW (before), batch 1024"])
    for name, v in got.items():
        s = statistics.median(v)
        rows.append({"variant": name, "members": len(few), "seconds": s,
                     "ensemble_inputs_per_s": inputs / (s * TEACHER.members / len(few)),
                     "GFLOP/s": inputs * len(few) * flops / s / 1e9, "vs_before": base / s, "runs": v,
                     "load": load()})
    print(f"{inputs} inputs per member, {flops / 1e6:.2f} MFLOP per input per member; torch.compile took "
          f"{compile_s:.0f} s for {len(compiled)} members (incl. one harvest); load {load()}")
    print(table(rows, ["variant", "members", "seconds", "ensemble_inputs_per_s", "GFLOP/s", "vs_before", "load"]))
    save(args.out, {"inputs_per_member": inputs, "mflop_per_input": flops / 1e6, "compile_seconds": compile_s,
                    "rows": rows}, " ".join(["python", *sys.argv]))


@torch.no_grad()
def infer_nchw(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """distill.train.infer before the channels-last fix: NCHW as built."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(chunk) for chunk in x.split(batch_size)])
    model.train(was_training)
    return out


if __name__ == "__main__":
    main()
