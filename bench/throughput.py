"""Student training throughput against the same machine's matrix-multiply rate, by precision; the paper-scale
GPU figure (bench/gpu.sh). The CPU targets of figure 1 are measured by bench/fit_rate.py.

Command:   python bench/throughput.py                 (CPU, mnist-shaped students, about 3 minutes on 2 cores)
           python bench/throughput.py --device cuda --paper --dtypes fp32 tf32 bf16    (bench/gpu.sh: paper scale)
           python bench/throughput.py --tiny          (a seconds-long check of the script itself)
Measures:  samples/s of `distill.train.fit` (the loop every student runs: mimic L2, AdamW, constant lr) for
           SNN students of H = 1k..32k hidden units, without and with a linear bottleneck of k units, at the
           demo's batch size (128) and at 512, in each `--dtypes` precision (TrainConfig.precision: fit's own
           bf16 autocast or TF32 setting). Inputs are random tensors of the data's shape (D = 784,
           C = 10 here; D = 1845, C = 183, TIMIT's, with --paper): only speed matters. samples/s becomes
           FLOP/s through the executed matmul FLOPs per sample (bench/common.py: snn_flops) and is divided by
           the (n x n) @ (n x n) rate of the same precision measured in the same process before and after. The
           first epoch (allocation, warm-up) is dropped; the median of the others counts. Also (CPU): the same
           steps with the old foreach AdamW (before the fused-optimizer fix in distill/train.py), alternated with
           fused; and torch on 1 thread vs on all cores (H=4096), alternated.
Target:    issue 19's: fp32 (and tf32) >= 0.8 of the matmul rate of that precision for H >= 4k, bf16 >= 0.6.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
import sys
from unittest import mock

import torch
from common import arguments, epoch_seconds, interleave, load, matmul_rate, save, set_threads, snn_flops, table

from distill import losses, models, train
from distill.train import TrainConfig

PRECISION = train.PRECISIONS  # the float32 matmul precision of each, for the matmul rate it is compared with
MATMUL_DTYPE = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
ADAM = TrainConfig(optimizer="adam", lr=1e-4, momentum=0.9, batch_size=128, epochs=3, schedule="constant")


def foreach_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """distill.train.optimizer before the fused fix: AdamW's default multi-tensor (foreach) update."""
    return torch.optim.AdamW(params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay)


def samples_for(flops: int, rate: float, seconds: float, batch: int, max_steps: int) -> int:
    """Enough random samples for an epoch of about `seconds` at half of `rate`: whole batches, 4 to `max_steps`
    of them (small students are bound by per-step overhead, not FLOPs)."""
    return batch * min(max_steps, max(4, math.ceil(seconds * 0.5 * rate / flops / batch)))


def measure(d: int, classes: int, hidden: int, bottleneck: int | None, config: TrainConfig, device: torch.device,
            dtype: str, seconds: float, rate: float, max_steps: int = 400, peak_n: int = 4096) -> dict:
    """Steady-state samples/s of one student through `fit`: random x (N, D), random teacher logits (N, C).
    Also the matmul rate measured right before it (`local_peak`): under bursts of load from other work the
    ratio to it is steadier than the ratio to the run's best."""
    flops = snn_flops(d, hidden, classes, bottleneck)
    n = samples_for(flops["executed"], rate, seconds, config.batch_size, max_steps)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, d, device=device, generator=gen)
    z = torch.randn(n, classes, device=device, generator=gen)
    val = (x[: config.batch_size], torch.zeros(config.batch_size, dtype=torch.long, device=device))
    torch.manual_seed(0)
    with device:  # built in place: a 400k-unit plain student is 811M parameters
        model = models.snn((d,), classes, hidden, bottleneck)
    config = dataclasses.replace(config, precision=dtype)  # fit's own autocast / TF32 setting
    local = matmul_rate(device, peak_n, reps=2, dtype=MATMUL_DTYPE[dtype])["best"]
    per_epoch, _ = epoch_seconds(model, x, z, losses.mimic_l2, val, config)
    steady = statistics.median(per_epoch[1:])
    return {"H": hidden, "k": bottleneck, "batch": config.batch_size, "dtype": dtype, "samples": n,
            "epoch_s": per_epoch, "samples_per_s": n / steady, "flop_per_s": n / steady * flops["executed"],
            "flop_per_s_3x": n / steady * flops["convention"], "local_peak": local,
            "of_local_peak": n / steady * flops["executed"] / local, "load": load()}


def fused_before_after(d: int, classes: int, hidden: tuple[int, ...], device: torch.device, seconds: float,
                       rate: float, repeats: int) -> list[dict]:
    """Fused AdamW (now) vs foreach AdamW (before), alternated, batch 128, no bottleneck."""
    rows = []
    for h in hidden:
        runs = {}
        for name, patch in (("foreach", mock.patch.object(train, "optimizer", foreach_optimizer)),
                            ("fused", contextlib.nullcontext())):
            def run(patch=patch, h=h) -> float:
                with patch:
                    return measure(d, classes, h, None, ADAM, device, "fp32", seconds, rate,
                                   peak_n=512 if rate < 1e9 else 4096)["samples_per_s"]
            runs[name] = run
        got = interleave(runs, repeats)
        before, after = statistics.median(got["foreach"]), statistics.median(got["fused"])
        rows.append({"H": h, "foreach_samples_per_s": before, "fused_samples_per_s": after,
                     "speedup": after / before, "repeats": repeats, "runs": got, "load": load()})
    return rows


def threads_compare(d: int, classes: int, hidden: int, batches: tuple[int, ...], device: torch.device,
                    seconds: float, rate: float, repeats: int) -> list[dict]:
    """samples/s with torch on 1 thread vs on every core, alternated: on a machine shared with other work, the
    threads of one matmul wait for each other at every barrier, and a descheduled one stalls them all."""
    rows = []
    cores, current = os.cpu_count() or 1, torch.get_num_threads()
    for batch in batches:
        config = dataclasses.replace(ADAM, batch_size=batch)

        def run(threads: int, config=config) -> float:
            torch.set_num_threads(threads)
            try:
                return measure(d, classes, hidden, None, config, device, "fp32", seconds, rate,
                               peak_n=512 if rate < 1e9 else 4096)["samples_per_s"]
            finally:
                torch.set_num_threads(current)
        got = interleave({"1": lambda run=run: run(1), str(cores): lambda run=run: run(cores)}, repeats)
        one, all_ = statistics.median(got["1"]), statistics.median(got[str(cores)])
        rows.append({"H": hidden, "batch": batch, "threads": cores, "one_thread_samples_per_s": one,
                     "all_threads_samples_per_s": all_, "all_over_one": all_ / one, "runs": got, "load": load()})
    return rows


def main() -> None:
    parser = arguments("throughput", __doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", action="store_true", help="TIMIT-sized D=1845, C=183, k=250, H up to 400k")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--hidden", type=int, nargs="+", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=list(PRECISION),
                        help="TrainConfig.precision: fp32; tf32 (fp32 matmuls on tensor cores, CUDA); bf16 (autocast)")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long one epoch runs")
    parser.add_argument("--plain-max", type=int, default=None, help="largest H timed without the bottleneck")
    parser.add_argument("--no-fused-comparison", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device(args.device)
    d, classes, k = (1845, 183, 250) if args.paper else (784, 10, 250)
    hidden = args.hidden or ([8_000, 50_000, 160_000, 400_000] if args.paper else
                             [1024, 2048, 4096, 8192, 16384, 32768])
    n = 512 if args.tiny else 4096
    if args.tiny:
        d, classes, k, hidden, args.seconds = 64, 10, 8, [32, 64], 0.05
    peaks, rows = {}, []
    for dtype in args.dtypes:
        torch.set_float32_matmul_precision(PRECISION[dtype])
        before = matmul_rate(device, n, dtype=MATMUL_DTYPE[dtype])
        rate = 1e8 if args.tiny else before["best"]  # tiny: a few steps per epoch
        part = []
        for batch in args.batches:
            config = dataclasses.replace(ADAM, batch_size=batch)
            for h in hidden:
                for bottleneck in (None, k):
                    if bottleneck is None and args.plain_max and h > args.plain_max:
                        continue
                    part.append(measure(d, classes, h, bottleneck, config, device, dtype, args.seconds, rate,
                                        peak_n=n))
                    print(table(part[-1:], ["H", "k", "batch", "dtype", "samples_per_s", "flop_per_s"]), flush=True)
        after = matmul_rate(device, n, dtype=MATMUL_DTYPE[dtype])
        peak = max(before["best"], after["best"])
        peaks[dtype] = {"before": before, "after": after, "peak": peak}
        for r in part:
            r["of_peak"] = r["flop_per_s"] / peak
            r["GFLOP/s"] = r["flop_per_s"] / 1e9
        rows += part
    torch.set_float32_matmul_precision("highest")
    fused = []
    if device.type == "cpu" and not args.no_fused_comparison:
        fused = fused_before_after(d, classes, tuple(hidden[:1] if args.tiny else (4096, 16384)), device,
                                   args.seconds, 1e8 if args.tiny else peaks[args.dtypes[0]]["peak"],
                                   1 if args.tiny else 3)
    threads = []
    if device.type == "cpu" and not args.no_fused_comparison:
        threads = threads_compare(d, classes, hidden[0] if args.tiny else 4096, tuple(args.batches), device,
                                  args.seconds, 1e8 if args.tiny else peaks[args.dtypes[0]]["peak"],
                                  1 if args.tiny else 3)
    for dtype, p in peaks.items():
        print(f"\n{dtype} matmul {n}^3: best {p['before']['best'] / 1e9:.0f} GFLOP/s before, "
              f"{p['after']['best'] / 1e9:.0f} after (load {p['before']['load']} / {p['after']['load']})")
    print(table(rows, ["H", "k", "batch", "dtype", "samples_per_s", "GFLOP/s", "of_peak", "of_local_peak", "load"]))
    if fused:
        print("\nfused vs foreach AdamW (batch 128, no bottleneck):")
        print(table(fused, ["H", "foreach_samples_per_s", "fused_samples_per_s", "speedup", "load"]))
    if threads:
        print("\n1 thread vs all cores (no bottleneck):")
        print(table(threads, ["H", "batch", "threads", "one_thread_samples_per_s", "all_threads_samples_per_s",
                              "all_over_one", "load"]))
    save(args.out, {"d": d, "classes": classes, "k": k, "matmul": peaks, "rows": rows, "fused_vs_foreach": fused,
                    "threads": threads},
         " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
