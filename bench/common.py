"""What every benchmark shares: the machine's matmul rate, FLOP counts, timing through `fit`, the load
average beside every figure, a markdown table, and the JSON of a run (written atomically).

The benchmarks run on machines shared with other work, so a figure is only trusted as a ratio of two
measurements taken in the same run, repeated alternately (A B A B ...) and summarised by the median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from distill import files
from distill.train import Fit, Loss, TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded: recorded with every figure (2 cores are shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, n: int = 4096, reps: int = 5, dtype: torch.dtype = torch.float32) -> dict:
    """This machine's measured (n, n) @ (n, n) rate in FLOP/s: the best and the median of `reps` timed runs
    after one warm-up (the first call also pays for the thread pool and the CPU's clock ramp)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    flop = 2 * n**3
    return {"n": n, "dtype": str(dtype), "best": flop / min(times), "median": flop / statistics.median(times),
            "load": load()}


def snn_flops(d: int, hidden: int, classes: int, bottleneck: int | None) -> dict[str, int]:
    """Matmul FLOPs of one training sample of `snn` (forward + backward), two ways.

    `executed`: what autograd runs. Each Linear (in -> out) costs 2*in*out forward, 2*in*out for its weight
    gradient and 2*in*out for its input gradient, except the first layer, whose input (the data) needs
    no gradient: so 4*D*H + 6*H*C, or 4*D*k + 6*k*H + 6*H*C with the bottleneck.
    `convention`: the usual 3x forward, 6*(D*H + H*C), or 6*(D*k + k*H + H*C): overstates the plain
    student's work by up to 1.5x (its first layer dominates), so targets are judged on `executed`.
    """
    if bottleneck is None:
        layers = [(d, hidden), (hidden, classes)]
    else:
        layers = [(d, bottleneck), (bottleneck, hidden), (hidden, classes)]
    forward = sum(2 * i * o for i, o in layers)
    first = 2 * layers[0][0] * layers[0][1]
    return {"executed": 3 * forward - first, "convention": 3 * forward}


def epoch_seconds(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, loss: Loss,
                  val: tuple[torch.Tensor, torch.Tensor], config: TrainConfig) -> tuple[list[float], Fit]:
    """Train through the project's `fit` and return each epoch's seconds (from its history), so that what is
    timed is the loop users run: batch gathers, the optimizer, the lr schedule, val inference, best-state copy."""
    result = fit(model, x, target, loss, val, config)
    cumulative = [0.0] + [row["seconds"] for row in result.history]
    return [b - a for a, b in zip(cumulative, cumulative[1:], strict=False)], result


def interleave(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every run once per round, `repeats` rounds (A B A B ...), so that a burst of load from other
    work hits both sides; returns each run's values."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            out[name].append(run())
    return out


def table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A markdown table of `rows` (dicts) with `columns`; floats get 3 significant digits."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict:
    """Where a figure was measured: CPU model, cores, torch threads, torch version, git commit."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "commit": commit}


def arguments(name: str, doc: str) -> argparse.ArgumentParser:
    """A parser with the shared `--out` (the JSON; default bench/results/NAME.json)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json", help="where the JSON goes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core); 1 is steadier on a shared machine")
    return parser


def set_threads(threads: int | None) -> None:
    """Apply --threads before anything is timed (the matmul rate too, so that ratios compare like with like)."""
    if threads is not None:
        torch.set_num_threads(threads)


def save(path: Path, figures: dict, command: str) -> None:
    """Write a benchmark's numbers with the command that made them and the machine, atomically."""
    files.write_json(path, {"command": command, "machine": machine(), "finished_load": load(), **figures})
    print(f"wrote {path}")
