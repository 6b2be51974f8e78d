"""Figure 3: mimic training that reads the logit cache vs running the teacher ensemble on every batch.

Command:   python bench/online_teacher.py           (about 1 minute on 2 cores)
Measures:  epoch time of `distill.train.fit` for the demo's mimic student (H=1024, AdamW, batch 128) on
           4,096 real mnist5k transfer inputs, two ways, alternated, 3 rounds:
           cached:  the target is the precomputed (N, 10) ensemble logits; a batch indexes them;
           online:  what most distillation frameworks do: every batch runs the 9-member CNN ensemble
                    (sweeps/demo.py's teacher, untrained weights: speed only) forward under no_grad,
                    NCHW as built, then the same L2 loss; also with the ensemble in channels-last.
           The online path goes through the same `fit`: its target is the input batch itself and the loss
           runs the teacher on it, so the only difference is the teacher's forward pass per batch.
Target:    cached is >= 5x faster per epoch than online.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

import torch
from common import arguments, epoch_seconds, interleave, load, save, table
from fixtures import L2, members, mnist5k

from distill import losses, models
from distill.train import infer


def online_loss(teacher: torch.nn.Module):
    """mimic_l2 against the teacher's logits computed now: (student out (B, C), input batch (B, 1, 28, 28))."""
    def loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = teacher(x)
        return losses.mimic_l2(out, z)
    return loss


def main() -> None:
    parser = arguments("online_teacher", __doc__)
    parser.add_argument("--inputs", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    splits, transfer = mnist5k()
    x = transfer.x[torch.randperm(len(transfer.x), generator=torch.Generator().manual_seed(0))[: args.inputs]]
    teacher = models.Ensemble(members(splits)).eval()
    teacher_cl = models.Ensemble(members(splits)).eval().to(memory_format=torch.channels_last)
    cached = infer(teacher, x)  # what the harvest stores: (N, C) ensemble logits
    config = dataclasses.replace(L2, epochs=1, patience=0)
    val = (splits.val_x[:256], splits.val_y[:256])

    def student() -> torch.nn.Module:
        torch.manual_seed(0)
        return models.snn(splits.shape, splits.classes, args.hidden)

    def cached_epoch() -> float:
        return epoch_seconds(student(), x, cached, losses.mimic_l2, val, config)[0][0]

    def online_epoch() -> float:
        return epoch_seconds(student(), x, x, online_loss(teacher), val, config)[0][0]

    def online_channels_last_epoch() -> float:
        x_cl = x.contiguous(memory_format=torch.channels_last)
        return epoch_seconds(student(), x_cl, x_cl, online_loss(teacher_cl), val, config)[0][0]

    cached_epoch()  # warm-up: thread pool, allocator
    got = interleave({"cached": cached_epoch, "online": online_epoch,
                      "online_channels_last": online_channels_last_epoch}, args.repeats)
    base = statistics.median(got["cached"])
    rows = [{"path": name, "epoch_s": statistics.median(v), "inputs_per_s": args.inputs / statistics.median(v),
             "speedup_of_cache": statistics.median(v) / base, "runs": v} for name, v in got.items()]
    print(f"{args.inputs} inputs, student H={args.hidden}, batch {config.batch_size}; load {load()}")
    print(table(rows, ["path", "epoch_s", "inputs_per_s", "speedup_of_cache"]))
    save(args.out, {"inputs": args.inputs, "hidden": args.hidden, "batch": config.batch_size, "rows": rows,
                    "load": load()}, " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
