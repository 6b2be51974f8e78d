"""Figure 1: `fit` trains wide students at the machine's matrix-multiply rate, in fp32 and in bf16 (issue 19).

Command:   taskset -c 1 python bench/fit_rate.py --threads 1     (about 9 minutes under load 5-8 from other work)
           python bench/fit_rate.py --tiny                         (seconds: checks the script, measures nothing)
Measures:  three ratios, each within this run, for mnist-shaped SNN students (D = 784, C = 10) learning random
           fp16 logits by mimic L2 with fused AdamW and a constant rate:
  loop     `fit` vs a bare hand loop of the same student, batch and optimizer (pre-made fp32 batches, the
           same val forward per epoch; gradients freed as in fit: kept ones were no faster, page_faults.py),
           alternated (A B A B), `--repeats` rounds; the fastest epoch of each over all rounds. `fit` reads
           compact uint8 `Inputs` and fp16 logits and gathers every batch, as a trial does; the hand loop does
           no gathering at all.
  fp32     training FLOP/s through `fit` over the fp32 matmul rate measured right before and after it, for
           H = 4k..16k, without and with a k = 250 bottleneck, at batch 256 (the demo's wide variant), 512, 1024.
  bf16     the same with TrainConfig(precision="bf16") over the bf16 matmul rate.
  gemms    beside each: the step's matmuls alone at the student's own shapes (gemm_rate) over the square
           matmul rate, the ceiling of that row, and the training rate over it (what the rest of a step costs).
           FLOPs are the matmul FLOPs autograd executes (bench/common.py: snn_flops): 4*D*H + 6*H*C per sample,
           4*D*k + 6*k*H + 6*H*C with the bottleneck. Times are this process's CPU time (time.process_time;
           run it on 1 thread), not wall time: on a core shared with other work the time it waits descheduled
           counts on neither side of a ratio. Every time is the fastest of its kind (an epoch after the first;
           a matmul of `reps`), the least disturbed by other work's use of the caches.
Targets:   loop >= 0.95; fp32 >= 0.8 at the wide students' batch, with and without k = 250; bf16 >= 0.6.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import sys
import time

import torch
from common import arguments, interleave, load, save, set_threads, snn_flops, table

from distill import losses, models, train
from distill.data import Inputs
from distill.train import TrainConfig, fit, infer

D, C, K = 784, 10, 250
ADAM = TrainConfig(optimizer="adam", lr=1e-4, momentum=0.9, batch_size=512, epochs=3, schedule="constant")
MATMUL_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_rate(n: int, dtype: torch.dtype, reps: int = 5) -> float:
    """The fastest of `reps` (n, n) @ (n, n) products in FLOP/s, after one warm-up."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        a @ b
        times.append(time.process_time() - t0)
    return 2 * n**3 / min(times)


@dataclasses.dataclass
class Task:
    """One student's data as a trial holds it: (N, 1, 28, 28) uint8 inputs and (N, C) fp16 logits; 512 val."""

    x: Inputs
    z: torch.Tensor
    val: tuple[Inputs, torch.Tensor]

    @classmethod
    def make(cls, n: int) -> Task:
        gen = torch.Generator().manual_seed(0)
        stats = torch.full((1, 1, 1, 1), 33.3), torch.full((1, 1, 1, 1), 78.6)  # mnist's mean and std of 0..255

        def images(m: int) -> Inputs:
            return Inputs(torch.randint(0, 256, (m, 1, 28, 28), dtype=torch.uint8, generator=gen), *stats)

        return cls(images(n), torch.randn(n, C, generator=gen).half(),
                   (images(512), torch.randint(0, C, (512,), generator=gen)))


def student(hidden: int, bottleneck: int | None) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.snn((1, 28, 28), C, hidden, bottleneck)


def gemm_rate(hidden: int, bottleneck: int | None, batch: int, dtype: torch.dtype, reps: int = 5) -> float:
    """FLOP/s of one training step's matmuls alone, at the student's own shapes: per layer (in -> out) the forward
    (B, in) @ (in, out), the weight gradient (out, B) @ (B, in) and, past the first layer, the input gradient
    (B, out) @ (out, in), on transposed views as autograd runs them. The ceiling of a step: thin shapes (k = 250,
    C = 10) run below the square matmul's rate."""
    dims = [D, hidden, C] if bottleneck is None else [D, bottleneck, hidden, C]
    layers = [(torch.randn(batch, i, dtype=dtype), torch.randn(o, i, dtype=dtype), torch.randn(batch, o, dtype=dtype))
              for i, o in zip(dims, dims[1:], strict=False)]  # (input (B, in), weight (out, in), grad (B, out))

    def step() -> None:
        for n, (a, w, g) in enumerate(layers):
            a @ w.t()
            g.t() @ a
            if n:
                g @ w

    step()
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        step()
        times.append(time.process_time() - t0)
    return batch * snn_flops(D, hidden, C, bottleneck)["executed"] / min(times)


def steps_for(flops: int, rate: float, seconds: float, batch: int, least: int = 4, most: int = 64) -> int:
    """Steps of an epoch of about `seconds` at half of `rate` (small students are bound by overhead)."""
    return min(most, max(least, math.ceil(seconds * 0.5 * rate / (flops * batch))))


def fit_epoch(task: Task, hidden: int, bottleneck: int | None, config: TrainConfig) -> float:
    """The fastest epoch after the first of `fit` on `task`, in CPU seconds (read at each epoch's report)."""
    ends = []
    fit(student(hidden, bottleneck), task.x, task.z, losses.mimic_l2, task.val, config,
        report=lambda row, state: ends.append(time.process_time()))
    return min(b - a for a, b in zip(ends, ends[1:], strict=False))


def hand_epoch(task: Task, hidden: int, bottleneck: int | None, config: TrainConfig) -> float:
    """The fastest epoch after the first of the barest loop of the same steps: the batches made beforehand in
    fp32 (in fit's order), the same optimizer, and the same val forward per epoch."""
    model = student(hidden, bottleneck)
    opt = train.optimizer(model.parameters(), config)
    order = torch.randperm(len(task.x), generator=torch.Generator().manual_seed(config.seed))
    batches = [(task.x[i], task.z[i].float()) for i in order.split(config.batch_size)]  # (B, 1, 28, 28), (B, C)
    times = []
    for _ in range(config.epochs):
        t0 = time.process_time()
        model.train()
        for xb, zb in batches:
            batch_loss = losses.mimic_l2(model(xb), zb)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            opt.step()
        infer(model, task.val[0])
        times.append(time.process_time() - t0)
    return min(times[1:])


def loop_rows(shapes, rate: float, seconds: float, repeats: int) -> list[dict]:
    """fit vs the hand loop, alternated: the fastest epoch of each over all rounds (and the median of the
    rounds' ratios, which bursts of other work spread)."""
    rows = []
    for hidden, bottleneck, batch in shapes:
        config = dataclasses.replace(ADAM, batch_size=batch)
        flops = snn_flops(D, hidden, C, bottleneck)["executed"]
        task = Task.make(batch * steps_for(flops, rate, seconds, batch))
        got = interleave({"fit": functools.partial(fit_epoch, task, hidden, bottleneck, config),
                          "hand": functools.partial(hand_epoch, task, hidden, bottleneck, config)}, repeats)
        ratios = [hand / f for f, hand in zip(got["fit"], got["hand"], strict=True)]
        rows.append({"H": hidden, "k": bottleneck, "batch": batch, "samples": len(task.x),
                     "fit_samples_per_s": len(task.x) / min(got["fit"]),
                     "hand_samples_per_s": len(task.x) / min(got["hand"]),
                     "fit_over_hand": min(got["hand"]) / min(got["fit"]), "median_ratio": statistics.median(ratios),
                     "ratios": ratios, "runs": got, "load": load()})
        print(table(rows[-1:], ["H", "k", "batch", "fit_samples_per_s", "hand_samples_per_s", "fit_over_hand"]),
              flush=True)
    return rows


def rate_rows(shapes, precision: str, n: int, seconds: float, tiny: bool, epochs: int, reps: int) -> list[dict]:
    """Training FLOP/s through fit over the matmul rate of the same precision, measured before and after."""
    rows, dtype = [], MATMUL_DTYPE[precision]
    for hidden, bottleneck, batch in shapes:
        config = dataclasses.replace(ADAM, batch_size=batch, precision=precision, epochs=epochs)
        flops = snn_flops(D, hidden, C, bottleneck)["executed"]
        before = matmul_rate(n, dtype, reps)
        steps = steps_for(flops, 1e8 if tiny else before, seconds, batch, least=2 if precision == "bf16" else 4)
        task = Task.make(batch * steps)
        epoch = fit_epoch(task, hidden, bottleneck, config)
        after = matmul_rate(n, dtype, reps)
        gemms = gemm_rate(hidden, bottleneck, batch, dtype, reps)
        rate = len(task.x) / epoch * flops
        rows.append({"H": hidden, "k": bottleneck, "batch": batch, "precision": precision, "samples": len(task.x),
                     "samples_per_s": len(task.x) / epoch, "GFLOP/s": rate / 1e9,
                     "matmul_GFLOP/s": max(before, after) / 1e9, "of_matmul": rate / max(before, after),
                     "gemms_of_matmul": gemms / max(before, after), "of_gemms": rate / gemms, "load": load()})
        print(table(rows[-1:], ["H", "k", "batch", "precision", "samples_per_s", "GFLOP/s", "matmul_GFLOP/s",
                                "of_matmul", "gemms_of_matmul", "of_gemms"]), flush=True)
    return rows


def main() -> None:
    parser = arguments("fit_rate", __doc__)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script, measures nothing")
    parser.add_argument("--hidden", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--bf16-hidden", type=int, nargs="+", default=[4096],
                        help="bf16 widths (a CPU without bf16 instructions runs bf16 matmuls ~100x slower)")
    parser.add_argument("--seconds", type=float, default=1.0, help="about how long one epoch runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the fp32 matmul that sets the rate")
    parser.add_argument("--epochs", type=int, default=3, help="fp32 rows: epochs per run (the fastest after the first)")
    parser.add_argument("--reps", type=int, default=5, help="fp32 rows: timed matmuls and GEMM steps (the fastest)")
    parser.add_argument("--parts", nargs="+", default=["loop", "fp32", "bf16"], choices=["loop", "fp32", "bf16"])
    args = parser.parse_args()
    set_threads(args.threads)
    hidden, batches, bf16_hidden, n, k = args.hidden, args.batches, args.bf16_hidden, args.matmul_n, K
    if args.tiny:
        hidden, batches, bf16_hidden, n, k, args.seconds, args.repeats = [64], [32], [64], 256, 8, 0.05, 1
    rate = 1e8 if args.tiny else matmul_rate(n, torch.float32)
    loop_shapes = [(hidden[0] // 4, None, 128), (hidden[0], None, 512), (hidden[0], k, 512)]
    loop = loop_rows(loop_shapes, rate, args.seconds, args.repeats) if "loop" in args.parts else []
    shapes = [(h, bottle, b) for b in batches for h in hidden for bottle in (None, k)]
    fp32 = rate_rows(shapes, "fp32", n, args.seconds, args.tiny, args.epochs, args.reps) if "fp32" in args.parts else []
    # Without bf16 instructions (AVX2 only) a bf16 matmul runs ~100x slower than fp32: a 1024^3 one takes seconds.
    shapes = [(h, bottle, batches[0] if args.tiny else 512) for h in bf16_hidden for bottle in (None, k)]
    bf16 = rate_rows(shapes, "bf16", min(n, 1024), args.seconds, args.tiny, 3, 3) if "bf16" in args.parts else []
    print("\nloop:\n" + table(loop, ["H", "k", "batch", "fit_samples_per_s", "hand_samples_per_s", "fit_over_hand",
                                     "median_ratio", "load"]))
    columns = ["H", "k", "batch", "precision", "samples_per_s", "GFLOP/s", "matmul_GFLOP/s", "of_matmul",
               "gemms_of_matmul", "of_gemms", "load"]
    print("\nrates:\n" + table(fp32 + bf16, columns))
    save(args.out, {"d": D, "classes": C, "k": k, "matmul_n": n, "loop": loop, "rates": fp32 + bf16},
         " ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
