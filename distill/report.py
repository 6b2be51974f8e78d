"""The analysis of a sweep: capacity curves, teacher quality, the bottleneck effect, paper-style tables and a
fit of error against log10(#params), written as `report.md` plus PNGs beside the results.

Every function takes the results dataframe (one row per trial, see `distill.results`) and, where teachers
matter, the table of `teacher_errors`. Errors are test errors; a cell's error is the mean and the sample
standard deviation (ddof=1) over its seeds. The test split never chooses anything: `select` keeps the row
of lowest *val* error per cell when a search ran several trials in it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # Figure without pyplot: no global backend state, renders PNG by Agg

from distill import io, models, results
from distill.teachers import parse

CELL = ["hidden", "bottleneck", "target", "teacher", "seed"]
STYLE = {"mimic": "C0", "kd": "C2", "labels-aug": "C1", "labels": "C3"}  # colour per target family
# (input shape, classes) by data set: the report needs them for teacher sizes and architecture strings.
DATA = {"mnist5k": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10),
        "digits": ((1, 8, 8), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
        "svhn": ((3, 32, 32), 10)}


def select(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (hidden, bottleneck, target, teacher, seed): the finished trial of lowest val error."""
    ok = frame[(frame["status"] == "ok") & frame["val_error"].notna()] if "status" in frame else frame
    best = ok.sort_values("val_error", kind="stable").groupby(CELL, dropna=False, sort=False).head(1)
    return best.sort_index().reset_index(drop=True)


def size(arch: str, shape, classes: int, **kwargs) -> tuple[int, int]:
    """(#params, #hidden units) of a model, built on the meta device (nothing allocated); hidden units are
    the ReLU outputs of one input, so a linear bottleneck does not count, as in the paper's tables."""
    with torch.device("meta"):
        model = models.build(arch, shape, classes, **kwargs)
        units = []
        for m in model.modules():
            if isinstance(m, torch.nn.ReLU):
                m.register_forward_hook(lambda _m, _i, out: units.append(out[0].numel()))
        model(torch.empty(1, *shape))
    return models.param_count(model), sum(units)


def architecture(arch: str, shape=None, classes: int | None = None, **kw) -> str:
    """Paper-style architecture: '784-64L-1024-10' (L: linear bottleneck), '16c3-p-32c3-p-128-10'."""
    d = [str(math.prod(shape))] if shape else []
    out = [str(classes)] if classes else []
    if arch == "dnn":
        return "-".join(d + [str(kw.get("hidden", 2000))] * kw.get("layers", 3) + out)
    k = kw.get("kernel", 5)
    if arch == "cnn":
        convs = [f"{c}c{k}-p" for c in kw.get("channels", (128, 128, 128))]
        return "-".join(convs + [str(h) for h in kw.get("hidden", (1000,))] + out)
    bottleneck = [f"{int(kw['bottleneck'])}L"] if kw.get("bottleneck") else []
    stem = d if arch == "snn" else [f"{kw.get('channels', 128)}c{k}-p"]
    return "-".join(stem + bottleneck + [str(kw["hidden"])] + out)


def teacher_errors(results_dir: str | Path) -> pd.DataFrame:
    """Every teacher net and ensemble, one row each: teacher (its name as students use it: 'ecnn[2]', 'ecnn'),
    base, kind ("member"/"ensemble"), members, index, test_error, val_error, params, hidden_units, arch (the
    builder) and architecture. Errors come from `cache/<teacher>.json`; #params and hidden units are counted
    from config.json's teachers (an ensemble's are the sum over its members). A sub-ensemble ('ecnn[:4]') that
    students used gets a row with unknown (NaN) errors: the manifest does not hold them, and the test labels
    that computing them would need are not stored beside the results."""
    root = Path(results_dir)
    config = io.read_json(root / "config.json") if (root / "config.json").exists() else {}
    shape, classes = DATA.get(config.get("data", {}).get("name"), (None, None))
    used = results.load(root)["teacher"].unique() if (root / "results.parquet").exists() else []
    rows = []
    for t in config.get("teachers", []):
        name, args, count = t["name"], t.get("arch_args", {}), t.get("members", 1)
        params, units = size(t["arch"], shape, classes, **args) if shape else (np.nan, np.nan)
        manifest_path = root / "cache" / f"{name}.json"
        manifest = io.read_json(manifest_path) if manifest_path.exists() else {}
        net = dict(base=name, arch=t["arch"], architecture=architecture(t["arch"], shape, classes, **args))
        for m in manifest.get("members", [{"index": i} for i in range(count)]):
            rows.append(net | dict(teacher=f"{name}[{m['index']}]", kind="member", members=1, index=m["index"],
                                   test_error=m.get("test_error"), val_error=m.get("val_error"), params=params,
                                   hidden_units=units))
        ens = manifest.get("ensemble", {})
        rows.append(net | dict(teacher=name, kind="ensemble", members=count, test_error=ens.get("test_error"),
                               val_error=ens.get("val_error"), params=params * count, hidden_units=units * count))
        for sub in sorted(u for u in used if u.startswith(f"{name}[:")):
            n = len(parse(sub, {name: count})[1])
            rows.append(net | dict(teacher=sub, kind="ensemble", members=n, params=params * n, hidden_units=units * n))
    cols = ["teacher", "base", "kind", "members", "index", "test_error", "val_error", "params", "hidden_units",
            "arch", "architecture"]
    return pd.DataFrame(rows, columns=cols).astype({"test_error": float, "val_error": float})


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of the test error (and time to converge) over seeds, per (target, teacher, hidden, k)."""
    return (frame.groupby(["target", "teacher", "hidden", "bottleneck"], dropna=False)
            .agg(params=("params", "first"), arch=("arch", "first"), error=("test_error", "mean"),
                 sd=("test_error", "std"), n=("test_error", "size"), best_epoch=("best_epoch", "mean"),
                 seconds=("train_seconds", "mean"))
            .reset_index().sort_values(["target", "teacher", "params"]))


def references(teachers: pd.DataFrame, teacher: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the members a teacher name uses, its own row): 'ecnn[:4]' -> members 0..3 and the sub-ensemble."""
    own = teachers[teachers["teacher"] == teacher]
    if own.empty:
        return own, own
    counts = {b: int(teachers.loc[(teachers["base"] == b) & (teachers["kind"] == "ensemble"), "members"].max())
              for b in teachers["base"].unique()}
    base, idx = parse(teacher, counts)
    members = teachers[(teachers["base"] == base) & (teachers["kind"] == "member") & teachers["index"].isin(idx)]
    return (members if len(idx) > 1 else members.iloc[:0]), own


def capacity_figure(frame: pd.DataFrame, teachers: pd.DataFrame, teacher: str, path: str | Path,
                    title: str = "") -> Path:
    """Test error against #params (log x): students of `teacher` and label-trained students, mean ± std over
    seeds; solid circles without bottleneck, dashed squares with one; the teacher's members and itself."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    table = cells(frame[frame["teacher"].isin([teacher, ""])])
    for (target, has_k), c in table.groupby(["target", table["bottleneck"].notna()]):
        ax.errorbar(c["params"], 100 * c["error"], yerr=100 * c["sd"].fillna(0), color=STYLE.get(target),
                    marker="s" if has_k else "o", ls="--" if has_k else "-", capsize=3,
                    label=f"{target}{' ' + teacher if target in ('mimic', 'kd') else ''}{' (bottleneck)' * has_k}")
    members, own = references(teachers, teacher)
    if len(members):
        ax.scatter(members["params"], 100 * members["test_error"], color="grey", marker="x", label="teacher members")
        ax.axhline(100 * members["test_error"].median(), color="grey", ls=":", label="median member")
    for _, t in own.dropna(subset=["test_error"]).iterrows():
        ax.scatter([t["params"]], [100 * t["test_error"]], color="k", marker="*", s=150, zorder=3)
        ax.axhline(100 * t["test_error"], color="k", ls="-.", label=f"teacher {teacher}")
    ax.set(xscale="log", xlabel="# parameters", ylabel="test error (%)", title=title or f"students of {teacher}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def teacher_quality_figure(frame: pd.DataFrame, teachers: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Student error against teacher error at each fixed student size (one line per size and target): does a
    better teacher make a better student? Teachers of unknown error are left out."""
    fig = Figure(figsize=(8, 5))
    ax = fig.add_subplot()
    known = teachers.dropna(subset=["test_error"]).drop_duplicates("teacher").set_index("teacher")["test_error"]
    table = cells(frame[frame["teacher"].isin(known.index)])
    table["teacher_error"] = table["teacher"].map(known)
    for (target, h, k), c in table.groupby(["target", "hidden", "bottleneck"], dropna=False):
        c = c.sort_values("teacher_error")
        ax.errorbar(100 * c["teacher_error"], 100 * c["error"], yerr=100 * c["sd"].fillna(0), marker="o",
                    capsize=3, ls="--" if k == k else "-", label=f"{target} H={h}" + (f" k={k:.0f}" if k == k else ""))
    for name, err in known[known.index.isin(table["teacher"])].items():
        ax.axvline(100 * err, color="grey", lw=0.5)
        ax.annotate(name, (100 * err, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", fontsize=8)
    if table.empty:
        ax.text(0.5, 0.5, "no teacher-trained students with a known teacher error", ha="center", transform=ax.transAxes)
    else:
        lo, hi = 100 * min(known.min(), table["error"].min()), 100 * table["error"].max()
        ax.plot([lo, hi], [lo, hi], color="k", ls=":", lw=1, label="student = teacher")
    ax.set(xlabel="teacher test error (%)", ylabel="student test error (%)", title=title or "teacher quality")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def bottleneck_figure(frame: pd.DataFrame, path: str | Path, input_dim: int | None = None, title: str = "") -> Path:
    """One row per hidden width H: test error, best epoch (time to converge) and train seconds against k.
    The net without bottleneck is drawn as a hollow marker at k = min(input_dim, H): a bottleneck that wide
    restricts nothing (rank W <= min(D, H)), so that is where the unrestricted net sits on the k axis."""
    table = cells(frame)
    widths = sorted(table["hidden"].unique())
    fig = Figure(figsize=(12, 3.2 * len(widths)))
    axes = fig.subplots(len(widths), 3, squeeze=False)
    panels = [("error", "test error (%)", 100), ("best_epoch", "best epoch (converged)", 1),
              ("seconds", "train seconds", 1)]
    for row, h in zip(axes, widths, strict=True):
        for (target, teacher), c in table[table["hidden"] == h].groupby(["target", "teacher"]):
            full, narrow = c[c["bottleneck"].isna()], c[c["bottleneck"].notna()].sort_values("bottleneck")
            colour, label = STYLE.get(target), f"{target} {teacher}".strip()
            for ax, (col, ylabel, scale) in zip(row, panels, strict=True):
                err = 100 * c["sd"].fillna(0) if col == "error" else None
                ax.errorbar(narrow["bottleneck"], scale * narrow[col], yerr=None if err is None else err[narrow.index],
                            color=colour, marker="s", capsize=3, label=label)
                k_full = [min(input_dim or h, h)] * len(full)
                ax.plot(k_full, scale * full[col], color=colour, marker="o", mfc="none", ls="none", ms=9)
                ax.set(xscale="log", xlabel="bottleneck k", ylabel=ylabel, title=f"H = {h}")
                ax.grid(True, which="both", alpha=0.3)
        row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(title or "bottleneck effect (hollow: no bottleneck, at k = min(D, H))")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return Path(path)


def model_name(target: str, teacher: str, hidden: int) -> str:
    """Paper-style names: SNN-8k (labels), SNN-8k-AUG, SNN-ECNN-MIMIC-8k, SNN-ECNN-KD-8k."""
    h = f"{hidden // 1000}k" if hidden % 1000 == 0 else str(hidden)
    if target in ("mimic", "kd"):
        return f"SNN-{teacher.upper()}-{target.upper()}-{h}"
    return f"SNN-{h}" + ("-AUG" if target == "labels-aug" else "")




def error_text(mean: float, sd: float, n: int) -> str:
    """'2.87 ± 0.46 (3)': test error in %, mean ± sample std over seeds (no std for one), then n."""
    if n == 0 or pd.isna(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if n > 1 else "") + f" ({n})"


def _count(value) -> str:
    return "?" if pd.isna(value) else f"{int(value):,}"


def _row(*cols) -> str:
    return "| " + " | ".join(str(c) for c in cols) + " |"


def teacher_rows(teachers: pd.DataFrame, teacher: str) -> list[str]:
    """A teacher's table rows: its members pooled (mean ± std over members) and itself, or the one net."""
    members, own = references(teachers, teacher)
    if own.empty:
        return []
    t = own.iloc[0]
    net = t["arch"].upper()
    if members.empty:  # a single net: one member ('ecnn[2]') or a one-member teacher ('dnn')
        name = net if t["kind"] == "ensemble" else f"{net} ({teacher})"
        return [_row(name, t["architecture"], _count(t["params"]), _count(t["hidden_units"]),
                     error_text(t["test_error"], np.nan, 1))]
    e = members["test_error"]
    m = members.iloc[0]
    return [_row(f"{net} (each member)", m["architecture"], _count(m["params"]), _count(m["hidden_units"]),
                 error_text(e.mean(), e.std(), int(e.count()))),
            _row(teacher.upper(), f"ensemble of {t['members']} {net}s", _count(t["params"]),
                 _count(t["hidden_units"]), error_text(t["test_error"], np.nan, 1))]


ORDER = {"labels": 0, "labels-aug": 1, "kd": 2, "mimic": 3}  # the paper's order: baselines, teachers, mimics


def tables(frame: pd.DataFrame, teachers: pd.DataFrame, shape=None, classes: int | None = None,
           student_args: dict | None = None) -> str:
    """Markdown tables like the paper's Tables 1-2, one per teacher: label-trained students, the teacher, then
    its mimic/kd students, each group by #params. Without `shape` and `classes` the architecture leaves out
    the input and output sizes and hidden units count only H."""
    out = []
    names = sorted(t for t in frame["teacher"].unique() if t) or [""]
    for teacher in names:
        lines = [_row("Model", "Architecture", "# Param.", "# Hidden units", "Error % (mean ± std, n)"),
                 "|---|---|---:|---:|---|"]
        table = cells(frame[frame["teacher"].isin([teacher, ""])])
        table = table.assign(order=table["target"].map(ORDER)).sort_values(["order", "params"])
        for _, c in table.iterrows():
            if c["target"] in ("kd", "mimic") and not lines[-1].startswith(f"| {teacher.upper()}"):
                lines += teacher_rows(teachers, teacher)  # the teacher sits between baselines and its mimics
            k = None if pd.isna(c["bottleneck"]) else int(c["bottleneck"])
            args = (student_args or {}) | dict(hidden=int(c["hidden"]), bottleneck=k)
            units = size(c["arch"], shape, classes, **args)[1] if shape else int(c["hidden"])
            lines.append(_row(model_name(c["target"], c["teacher"], int(c["hidden"])),
                              architecture(c["arch"], shape, classes, **args), _count(c["params"]), _count(units),
                              error_text(c["error"], c["sd"], int(c["n"]))))
        out.append(f"**Teacher {teacher}**\n\n" if teacher else "**Label-trained students**\n\n")
        out[-1] += "\n".join(lines)
    return "\n\n".join(out)
