"""Rewrite the tables of BENCHMARKS.md from bench/results/*.json: everything between `<!-- figure:NAME -->` and
`<!-- /figure:NAME -->` is replaced by NAME's command, machine, load and table; the prose around stays.

Command:   python bench/render.py BENCHMARKS.md [RESULTS_DIR]    (bench/run_all.sh runs it last)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from common import RESULTS, table

from distill import files


def header(r: dict) -> str:
    m = r["machine"]
    return (f"`{r['command']}` at commit {m['commit']}, {m['cpu']}, {m['cores']} cores shared with other work, "
            f"torch {m['torch']}; load average (1/5/15 min) at the end {r['finished_load']}.\n\n")


def throughput(r: dict) -> str:
    peaks = "; ".join(f"{d}: {p['before']['best'] / 1e9:.0f} GFLOP/s before, {p['after']['best'] / 1e9:.0f} after "
                      f"(load {p['before']['load'][0]} / {p['after']['load'][0]})" for d, p in r["matmul"].items())
    rows = [{**row, "samples/s": row["samples_per_s"], "of peak": row["of_peak"], "of local": row["of_local_peak"],
             "load1": row["load"][0]}
            for row in r["rows"]]
    out = f"Matmul 4096^3, best of 5: {peaks}. D={r['d']}, C={r['classes']}.\n\n"
    out += table(rows, ["H", "k", "batch", "dtype", "samples/s", "GFLOP/s", "of peak", "of local", "load1"])
    if r["fused_vs_foreach"]:
        fused = [{**f, "load1": f["load"][0], "foreach samples/s": f["foreach_samples_per_s"],
                  "fused samples/s": f["fused_samples_per_s"]} for f in r["fused_vs_foreach"]]
        out += "\n\nFused AdamW (now) vs foreach AdamW (before), batch 128, no bottleneck, median of 3 alternated:\n\n"
        out += table(fused, ["H", "foreach samples/s", "fused samples/s", "speedup", "load1"])
    if r.get("threads"):
        threads = [{**t, "load1": t["load"][0], "1 thread samples/s": t["one_thread_samples_per_s"],
                    "all cores samples/s": t["all_threads_samples_per_s"]} for t in r["threads"]]
        out += "\n\ntorch on 1 thread vs on all cores, no bottleneck, median of 3 alternated:\n\n"
        out += table(threads, ["H", "batch", "threads", "1 thread samples/s", "all cores samples/s", "all_over_one",
                               "load1"])
    return out


def ray_overhead(r: dict) -> str:
    rows = [{**row, "load1": row["load"][0]} for row in r["rows"]]
    return (f"H={r['hidden']}, {r['epochs']} epochs over {r['transfer_size']} inputs; driver torch threads "
            f"{r['driver_torch_threads']}.\n\n"
            + table(rows, ["cpus", "worker_OMP_NUM_THREADS", "worker_torch_threads", "plain_train_s", "tune_train_s",
                           "ratio", "plain_wall_s", "tune_wall_s", "wall_ratio", "load1"]))


def online_teacher(r: dict) -> str:
    rows = [{**row, "runs": ", ".join(f"{v:.2f}" for v in row["runs"])} for row in r["rows"]]
    return (f"{r['inputs']} inputs, student H={r['hidden']}, batch {r['batch']}; load at the end {r['load']}.\n\n"
            + table(rows, ["path", "epoch_s", "inputs_per_s", "speedup_of_cache", "runs"]))


def linear_bottleneck(r: dict) -> str:
    rows = [{**row, "load1": row["load"][0]} for row in r["rows"]]
    return (f"{r['inputs']} inputs, D={r['d']}, C={r['classes']}; loss of predicting zeros {r['zero_loss']:.1f}, "
            f"threshold {r['threshold']:.1f}.\n\n"
            + table(rows, ["H", "k", "lr", "params", "epochs_to_loss", "seconds_to_loss", "epoch_s", "final_loss",
                           "load1"])
            + "\n\nParameters and fp32 training memory (weights, gradients, AdamW's two moments), exact counts:\n\n"
            + table(r["memory"], ["H", "k", "params", "param_MiB", "train_state_GiB", "MFLOP_per_sample"]))


def harvest(r: dict) -> str:
    rows = [{**row, "load1": row["load"][0]} for row in r["rows"]]
    return (f"{r['inputs_per_member']} inputs per member, {r['mflop_per_input']:.2f} MFLOP per input per member; "
            f"torch.compile's compile took {r['compile_seconds']:.0f} s.\n\n"
            + table(rows, ["variant", "members", "seconds", "ensemble_inputs_per_s", "GFLOP/s", "vs_before", "load1"]))


def scheduling(r: dict) -> str:
    row = r["row"]
    return (f"H={r['hidden']}, {r['epochs']} epochs; trial seconds {', '.join(f'{t:.1f}' for t in r['trial_seconds'])}."
            "\n\n" + table([{**row, "load1 start/end": f"{row['load_start'][0]} / {row['load'][0]}"}],
                           ["trials", "concurrency", "wall_s", "sum_trial_s", "ideal_s", "ratio", "overhead_s",
                            "mean_trial_s", "mean_train_s", "to_first_start_s", "after_last_end_s",
                            "sum_tune_trial_s", "load1 start/end"]))


def malloc(r: dict) -> str:
    return (f"Environment of the `keep` runs: {r['env']}.\n\n"
            + table([{**row, "load1": row["load"][0]} for row in r["rows"]],
                    ["H", "batch", "default_samples_per_s", "keep_samples_per_s", "speedup", "load1"]))


def student_phase(r: dict) -> str:
    b, a = r["before"], r["after"]
    rows = [{"cell (target, teacher, H)": c, "before %": 100 * b["errors"].get(c, float("nan")),
             "after %": 100 * a["errors"][c]} for c in sorted(a["errors"])]
    return (f"Sweep `{r['sweep']}`, {r['before_commit']} against {r['after_commit']}; load at the end of each side "
            f"{b['load']} / {a['load']}.\n\n"
            + table([{"": "student phase (s)", "before": b["seconds"], "after": a["seconds"],
                      "after / before": a["seconds"] / b["seconds"]},
                     {"": f"its {a['fixed_trials']} fixed trials, first start to last end (s)",
                      "before": b["fixed_span_seconds"], "after": a["fixed_span_seconds"],
                      "after / before": a["fixed_span_seconds"] / b["fixed_span_seconds"]}],
                    ["", "before", "after", "after / before"])
            + "\n\nMean test error over 3 seeds, per cell:\n\n"
            + table(rows, ["cell (target, teacher, H)", "before %", "after %"]))


FIGURES: dict[str, Callable[[dict], str]] = {
    "throughput": throughput, "throughput_1thread": throughput, "throughput_bf16": throughput,
    "ray_overhead": ray_overhead,
    "online_teacher": online_teacher, "linear_bottleneck": linear_bottleneck, "harvest": harvest,
    "scheduling": scheduling, "malloc": malloc, "student_phase": student_phase}


def render(text: str, results: Path) -> str:
    for name, fmt in FIGURES.items():
        path = results / f"{name}.json"
        if not path.exists():
            continue
        r = files.read_json(path)
        block = f"<!-- figure:{name} -->\n{header(r)}{fmt(r)}\n<!-- /figure:{name} -->"
        pattern = rf"<!-- figure:{name} -->.*?<!-- /figure:{name} -->"
        text = re.sub(pattern, lambda _, block=block: block, text, flags=re.S)  # a function: no escapes in block
    return text


def main(path: str, results: Path = RESULTS) -> None:
    target = Path(path)
    files.write_bytes(target, render(target.read_text(), results).encode())
    print(f"rewrote the tables of {target}")


if __name__ == "__main__":
    main(sys.argv[1], *(Path(a) for a in sys.argv[2:3]))  # optional: another results directory
