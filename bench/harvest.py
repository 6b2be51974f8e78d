"""Figure 6: harvest throughput, the teacher ensemble's inputs/s when it labels the transfer set.

Command:   python bench/harvest.py                  (about 2 minutes on 2 cores)
Measures:  `distill.experiment.harvest` (what `distill teachers` runs per member: `infer` over transfer,
           val and test) for the demo's 9 CNN members (untrained weights: speed only) on the real mnist5k
           splits, 40,000 inputs per member. Reported: ensemble inputs/s = inputs / (seconds for all 9
           members), and GFLOP/s of the convolutions and linear layers. Variants, each on 2 members and
           alternated, 2 rounds: infer's batch size (1024, the default, vs 256 and 4096), channels-last
           (input only, and input + weights), torch.compile (its compile time reported apart).
Target:    none set by the issue; reported. A useful bar: harvesting takes a small fraction of teacher
           training (an epoch of a member is 3x the forward FLOPs on 38,500 inputs).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time

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
        experiment.harvest(m, splits, transfer, batch_size)
    return time.perf_counter() - t0


def main() -> None:
    parser = arguments("harvest", __doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant-members", type=int, default=2)
    args = parser.parse_args()
    splits, transfer = mnist5k()
    inputs = len(transfer.x) + len(splits.val_x) + len(splits.test_x)
    flops = member_flops(splits.shape, splits.classes)
    ensemble = members(splits)
    full = harvest_seconds(ensemble, splits, transfer, 1024)
    rows = [{"variant": "default: 9 members, batch 1024, NCHW", "members": len(ensemble), "seconds": full,
             "ensemble_inputs_per_s": inputs / full, "GFLOP/s": inputs * len(ensemble) * flops / full / 1e9,
             "load": load()}]
    few = ensemble[: args.variant_members]
    cl = members(splits, args.variant_members)
    for m in cl:
        m.to(memory_format=torch.channels_last)
    cl_splits, cl_transfer = channels_last(splits, transfer)
    t0 = time.perf_counter()
    compiled = [torch.compile(m) for m in members(splits, args.variant_members)]
    harvest_seconds(compiled, splits, transfer, 1024)  # compiles (and runs once)
    compile_s = time.perf_counter() - t0
    variants = {
        "batch 1024, NCHW": lambda: harvest_seconds(few, splits, transfer, 1024),
        "batch 256": lambda: harvest_seconds(few, splits, transfer, 256),
        "batch 4096": lambda: harvest_seconds(few, splits, transfer, 4096),
        "channels-last input": lambda: harvest_seconds(few, cl_splits, cl_transfer, 1024),
        "channels-last input + weights": lambda: harvest_seconds(cl, cl_splits, cl_transfer, 1024),
        "torch.compile": lambda: harvest_seconds(compiled, splits, transfer, 1024),
    }
    got = interleave(variants, args.repeats)
    base = statistics.median(got["batch 1024, NCHW"])
    for name, v in got.items():
        s = statistics.median(v)
        rows.append({"variant": name, "members": len(few), "seconds": s,
                     "ensemble_inputs_per_s": inputs / (s * TEACHER.members / len(few)),
                     "GFLOP/s": inputs * len(few) * flops / s / 1e9, "vs_default": base / s, "runs": v,
                     "load": load()})
    print(f"{inputs} inputs per member, {flops / 1e6:.2f} MFLOP per input per member; torch.compile took "
          f"{compile_s:.0f} s for {len(compiled)} members (incl. one harvest); load {load()}")
    print(table(rows, ["variant", "members", "seconds", "ensemble_inputs_per_s", "GFLOP/s", "vs_default", "load"]))
    save(args.out, {"inputs_per_member": inputs, "mflop_per_input": flops / 1e6, "compile_seconds": compile_s,
                    "rows": rows}, " ".join(["python", *sys.argv]))


def channels_last(splits, transfer):
    """The same splits and transfer set with channels-last image tensors (same values, NHWC strides)."""
    def cl(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last)
    return (dataclasses.replace(splits, val_x=cl(splits.val_x), test_x=cl(splits.test_x), train_x=cl(splits.train_x)),
            dataclasses.replace(transfer, x=cl(transfer.x)))


if __name__ == "__main__":
    main()
