"""The analysis of a sweep: capacity curves, teacher quality, the bottleneck effect, paper-style tables and a
fit of error against log10(#params), written as `report.md` plus PNGs beside the results.

The functions take the results dataframe (one row per trial, see `distill.results`) and, where teachers
matter, the table of `teacher_errors`. Errors are test errors; a cell's error is the mean and the sample
standard deviation (ddof=1) over its seeds. The test split never chooses anything: `select` keeps the trial
of lowest *val* error per cell when a search ran several in it.
"""

from __future__ import annotations

import inspect
import math
import re
from io import BytesIO
from numbers import Number

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # Figure without pyplot: no global backend state, renders PNG by Agg
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from distill import files, models, results
from distill.errors import UserError
from distill.teachers import parse

CELL = ["hidden", "bottleneck", "target", "teacher", "seed"]
STYLE = {"mimic": "C0", "kd": "C2", "labels-aug": "C1", "labels": "C3"}  # colour per target family
ORDER = {"labels": 0, "labels-aug": 1, "kd": 2, "mimic": 3}  # table order: baselines first, as in the paper
# (input shape, classes) by data set: the results do not store them, and teacher sizes need them.
DATA = {"mnist5k": ((1, 28, 28), 10), "mnist": ((1, 28, 28), 10), "fashion-mnist": ((1, 28, 28), 10),
        "digits": ((1, 8, 8), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
        "svhn": ((3, 32, 32), 10)}


def select(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (hidden, bottleneck, target, teacher, seed): the finished trial of lowest val error."""
    ok = frame[(frame["status"] == "ok") & frame["val_error"].notna()] if "status" in frame else frame
    best = ok.sort_values("val_error", kind="stable").groupby(CELL, dropna=False, sort=False).head(1)
    return best.sort_index().reset_index(drop=True)


def defaults(arch: str) -> dict:
    """A builder's keyword defaults, read from its signature so that they have one source: models.py."""
    return {n: p.default for n, p in inspect.signature(getattr(models, arch)).parameters.items()
            if p.default is not inspect.Parameter.empty}


def describe(arch: str, shape=None, classes: int | None = None, **kw) -> tuple[str, float]:
    """(paper-style architecture, #hidden units): '784-64L-1024-10' (L: linear bottleneck), '16c3-p-32c3-p-128-10'.
    Hidden units are the ReLU outputs for one input, so a linear bottleneck does not count, as in the paper;
    without `shape` the input size is left out (and a conv net's units are unknown, NaN)."""
    kw = defaults(arch) | kw
    _, h, w = shape or (0, 0, 0)
    parts = [str(math.prod(shape))] if shape and arch in ("snn", "dnn") else []
    convs = list(kw["channels"]) if arch == "cnn" else [kw["channels"]] if arch == "conv_snn" else []
    units = 0
    for ch in convs:  # conv-ReLU-pool stages with 'same' padding: ch maps of h x w, then halved
        parts.append(f"{ch}c{kw['kernel']}-p")
        units, h, w = units + ch * h * w, h // 2, w // 2
    if kw.get("bottleneck"):
        parts.append(f"{int(kw['bottleneck'])}L")
    hidden = [kw["hidden"]] * kw["layers"] if arch == "dnn" else list(kw["hidden"]) if arch == "cnn" else [kw["hidden"]]
    parts += [str(x) for x in hidden] + ([str(classes)] if classes else [])
    return "-".join(parts), units + sum(hidden) if shape or not convs else np.nan


def param_count(arch: str, shape, classes: int, **kw) -> int:
    """#params of a model built on the meta device: counts a 400k-unit net without allocating it."""
    with torch.device("meta"):
        return models.param_count(models.build(arch, shape, classes, **kw))


def teacher_errors(results_dir: files.Where) -> pd.DataFrame:
    """One row per teacher net and ensemble: teacher (the name students use: 'ecnn[2]', 'ecnn', 'ecnn[:4]'),
    base, kind ("member"/"ensemble"), members, index, test_error, val_error, params, hidden_units, arch (the
    builder) and architecture. Errors come from `cache/<teacher>.json`, sizes from the teachers of the sweep
    config in results.json (an ensemble's are its members' sum). A sub-ensemble that students used has unknown
    (NaN) errors: the manifest does not hold them, and the test labels that computing them needs are not stored
    here."""
    root = files.location(results_dir)
    config = results.config(root)
    shape, classes = DATA.get(config.get("data", {}).get("name"), (None, None))
    used = results.load(root)["teacher"].unique() if (root / "results.parquet").exists() else []
    rows = []
    for t in config.get("teachers", []):
        name, args, count = t["name"], t.get("arch_args", {}), t.get("members", 1)
        params = param_count(t["arch"], shape, classes, **args) if shape else np.nan
        arch, units = describe(t["arch"], shape, classes, **args)
        path = root / "cache" / f"{name}.json"
        manifest = files.read_json(path) if path.exists() else {}
        net = dict(base=name, arch=t["arch"], architecture=arch)
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
    """(the members a teacher name averages, if more than one; its own row): 'ecnn[:4]' -> members 0-3."""
    own = teachers[teachers["teacher"] == teacher]
    if own.empty:
        return own, own
    ensembles = teachers[teachers["kind"] == "ensemble"]
    base, idx = parse(teacher, ensembles.groupby("base")["members"].max().to_dict())
    members = teachers[(teachers["base"] == base) & (teachers["kind"] == "member") & teachers["index"].isin(idx)]
    return (members if len(idx) > 1 else members.iloc[:0]), own


def _save(fig: Figure, path: files.Where) -> files.Location:
    for ax in fig.axes:
        ax.grid(True, which="both", alpha=0.3)
    if fig.axes[-1].get_legend_handles_labels()[0]:
        fig.axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never hides data
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    files.write_bytes(path, buf.getvalue())  # atomically, locally or in object storage
    return files.location(path)


def capacity_figure(frame: pd.DataFrame, teachers: pd.DataFrame, teacher: str, path: files.Where,
                    title: str = "") -> files.Location:
    """Test error against #params (log x): students of `teacher` and label-trained students, mean ± std over
    seeds; solid circles without bottleneck, dashed squares with one; the teacher's members and itself."""
    fig = Figure(figsize=(8, 5), layout="constrained")
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
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # sweeps often span a decade or two: 1-2-5 ticks
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    return _save(fig, path)


def teacher_quality_figure(frame: pd.DataFrame, teachers: pd.DataFrame, path: files.Where,
                           title: str = "") -> files.Location:
    """Student error against teacher error at each fixed student size (one line per size and target): does a
    better teacher make a better student? Teachers of unknown error are left out."""
    fig = Figure(figsize=(8, 5), layout="constrained")
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
        ax.annotate(name, (100 * err, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=8)
    if table.empty:
        ax.text(0.5, 0.5, "no teacher-trained students with a known teacher error", ha="center", transform=ax.transAxes)
    else:  # the x range is the teachers' errors, padded: with one teacher the diagonal would squash the points
        lo, hi = 100 * table["teacher_error"].min(), 100 * table["teacher_error"].max()
        pad = max(0.1 * (hi - lo), 0.25)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", ls=":", lw=1, label="student = teacher")
        ax.set_xlim(lo - pad, hi + pad)
    ax.set(xlabel="teacher test error (%)", ylabel="student test error (%)", title=title or "teacher quality")
    return _save(fig, path)


def bottleneck_figure(frame: pd.DataFrame, path: files.Where, input_dim: int | None = None,
                      title: str = "") -> files.Location:
    """One row per hidden width H: test error, best epoch (time to converge) and train seconds against k.
    The net without bottleneck is a hollow marker at k = min(input_dim, H): a bottleneck that wide restricts
    nothing (rank W <= min(D, H)), so that is where the unrestricted net sits on the k axis."""
    table = cells(frame)
    widths = sorted(table["hidden"].unique())
    fig = Figure(figsize=(12, 3.2 * len(widths)), layout="constrained")
    axes = fig.subplots(len(widths), 3, squeeze=False)
    panels = [("error", "test error (%)", 100), ("best_epoch", "best epoch", 1), ("seconds", "train seconds", 1)]
    series = table[["target", "teacher"]].drop_duplicates().itertuples(index=False)
    colours = {tuple(s): f"C{i % 10}" for i, s in enumerate(series)}  # one colour per series across panels
    for row, h in zip(axes, widths, strict=True):
        at = table[table["hidden"] == h]
        at = at.assign(k=at["bottleneck"].fillna(min(input_dim or h, h)))
        for (target, teacher), c in at.groupby(["target", "teacher"]):
            full, narrow = c[c["bottleneck"].isna()], c[c["bottleneck"].notna()].sort_values("k")
            for ax, (col, ylabel, scale) in zip(row, panels, strict=True):
                yerr = 100 * narrow["sd"].fillna(0) if col == "error" else None
                ax.errorbar(narrow["k"], scale * narrow[col], yerr=yerr, color=colours[(target, teacher)], marker="s",
                            capsize=3, label=f"{target} {teacher}".strip())
                ax.plot(full["k"], scale * full[col], color=colours[(target, teacher)], marker="o", mfc="none",
                        ls="none", ms=9)
                ax.set(xscale="log", xlabel="bottleneck k", ylabel=ylabel, title=f"H = {h}")
                ax.set_xticks(sorted(at["k"].unique()), [f"{k:.0f}" for k in sorted(at["k"].unique())])
                ax.minorticks_off()  # ticks at the measured k, not at log-axis decades
    fig.suptitle(title or "bottleneck effect (hollow: no bottleneck, drawn at k = min(D, H))")
    return _save(fig, path)


def model_name(target: str, teacher: str, hidden: int) -> str:
    """Paper-style names: SNN-8k (labels), SNN-8k-AUG, SNN-ECNN-MIMIC-8k, SNN-ECNN-KD-8k."""
    h = f"{hidden // 1000}k" if hidden % 1000 == 0 else str(hidden)
    if target in ("mimic", "kd"):
        return f"SNN-{teacher.upper()}-{target.upper()}-{h}"
    return f"SNN-{h}" + ("-AUG" if target == "labels-aug" else "")


def error_text(mean: float, sd: float, n: int) -> str:
    """'2.87 ± 0.46 (3)': test error in %, mean ± sample std (none for n = 1), then n."""
    if n == 0 or pd.isna(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if n > 1 else "") + f" ({n})"


def _row(*cols) -> str:
    """A markdown table row; numbers as whole counts with thousands separators, '?' when unknown."""
    return "| " + " | ".join("?" if pd.isna(c) else f"{c:,.0f}" if isinstance(c, Number) else c for c in cols) + " |"


def teacher_rows(teachers: pd.DataFrame, teacher: str) -> list[str]:
    """A teacher's table rows: its members pooled (mean ± std over members) and itself, or its one net."""
    members, own = references(teachers, teacher)
    if own.empty:
        return []
    t, net = own.iloc[0], own.iloc[0]["arch"].upper()
    if members.empty:  # a single net: one member ('ecnn[2]') or a one-member teacher ('dnn')
        name = net if t["kind"] == "ensemble" else f"{net} ({teacher})"
        return [_row(name, t["architecture"], t["params"], t["hidden_units"], error_text(t["test_error"], 0, 1))]
    m, e = members.iloc[0], members["test_error"]
    return [_row(f"{net} (each member)", m["architecture"], m["params"], m["hidden_units"],
                 error_text(e.mean(), e.std(), int(e.count()))),
            _row(teacher.upper(), f"ensemble of {t['members']} {net}s", t["params"], t["hidden_units"],
                 error_text(t["test_error"], 0, 1))]


def tables(frame: pd.DataFrame, teachers: pd.DataFrame, shape=None, classes: int | None = None,
           student_args: dict | None = None) -> str:
    """A markdown table like the paper's Tables 1-2: the label-trained students, then each teacher followed
    by its kd and mimic students, each group by #params. Without `shape` and `classes` the architecture
    leaves out the input and output sizes (and a conv student's hidden units are unknown)."""
    lines = [_row("Model", "Architecture", "# Param.", "# Hidden units", "Error % (mean ± std, n)"),
             "|---|---|---:|---:|---|"]
    table = cells(frame)
    table = table.assign(order=table["target"].map(ORDER)).sort_values(["teacher", "order", "params"])
    for teacher, group in table.groupby("teacher", sort=True):  # "" sorts first: the label-trained students
        lines += teacher_rows(teachers, teacher) if teacher else []
        for _, c in group.iterrows():
            k = None if pd.isna(c["bottleneck"]) else int(c["bottleneck"])
            args = (student_args or {}) | dict(hidden=int(c["hidden"]), bottleneck=k)
            arch, units = describe(c["arch"], shape, classes, **args)
            lines.append(_row(model_name(c["target"], teacher, int(c["hidden"])), arch, c["params"], units,
                              error_text(c["error"], c["sd"], int(c["n"]))))
    return "\n".join(lines)


def fit_family(frame: pd.DataFrame, family: str, teacher: str | None = None) -> dict:
    """Least squares of test_error = a + b * log10(params) over the cell means (seeds averaged) of one target
    family, optionally of one teacher: all its cells, with and without bottleneck, since #params is the x."""
    rows = frame[frame["target"] == family]
    c = cells(rows if teacher is None else rows[rows["teacher"] == teacher])
    x, y = np.log10(c["params"].to_numpy(float)), c["error"].to_numpy(float)
    fit = dict(family=family, teacher=teacher, cells=len(c), params_min=float(c["params"].min()),
               params_max=float(c["params"].max()), a=np.nan, b=np.nan, rmse=np.nan, reason="")
    if len(np.unique(x)) < 2:
        return fit | dict(reason=f"{len(np.unique(x))} distinct size(s): a line needs two")
    b, a = np.polyfit(x, y, 1)
    return fit | dict(a=float(a), b=float(b), rmse=float(np.sqrt(np.mean((a + b * x - y) ** 2))))


def match_size(fit: dict, teacher_error: float) -> dict:
    """{params, extrapolated, reason}: the #params at which the fitted line reaches `teacher_error`, and
    whether that lies outside the measured range. A line that does not fall with size (b >= 0) never
    reaches it: params is None."""
    none = dict(params=None, extrapolated=False)
    if np.isnan(fit["b"]):
        return none | dict(reason=f"no fit: {fit['reason']}")
    if pd.isna(teacher_error):
        return none | dict(reason="the teacher's error is unknown")
    if fit["b"] >= 0:
        return none | dict(reason=f"the error does not fall with size (slope {fit['b']:+.4f} per decade)")
    params = float(10 ** ((teacher_error - fit["a"]) / fit["b"]))
    extrapolated = not fit["params_min"] <= params <= fit["params_max"]
    return dict(params=params, extrapolated=extrapolated,
                reason=f"{'outside' if extrapolated else 'inside'} the measured range")


def human(n: float) -> str:
    """814090 -> '814k': #params in prose."""
    for scale, suffix in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]:
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def fit_section(frame: pd.DataFrame, teachers: pd.DataFrame, teacher: str) -> list[str]:
    """Per family, the fit and the size at which it reaches `teacher`'s error; the extrapolation in words."""
    own = teachers.loc[teachers["teacher"] == teacher, "test_error"]
    goal = own.iloc[0] if len(own) else np.nan
    head = f"Teacher **{teacher}**: test error " + ("unknown." if pd.isna(goal) else f"{100 * goal:.2f}%.")
    lines = [head if teacher else "No teacher-trained students: the fits alone.", "",
             _row("Family", "Cells", "Fit: error % =", "Measured # param.", "# Param. to match the teacher"),
             "|---|---:|---|---|---|"]
    words = []
    for family in ("mimic", "kd", "labels-aug", "labels"):
        fit = fit_family(frame, family, teacher if family in ("mimic", "kd") else "")
        if fit["cells"] == 0:
            continue
        match, measured = match_size(fit, goal), f"{human(fit['params_min'])}–{human(fit['params_max'])}"
        line = "n/a" if np.isnan(fit["b"]) else \
            f"{100 * fit['a']:.2f} {'+' if fit['b'] >= 0 else '-'} {100 * abs(fit['b']):.2f} · log10(P)"
        at = "—" if match["params"] is None else human(match["params"])
        lines.append(_row(family, str(fit["cells"]), line, measured,
                          f"{at} ({'**extrapolated**: ' * match['extrapolated']}{match['reason']})"))
        if family in ("mimic", "kd") and match["params"]:  # the paper's question: how big must the mimic be?
            words.append(f"- The {family} students would match the teacher at about {human(match['params'])} "
                         "parameters. " + (f"This is an **extrapolation** beyond the measured {measured}: a guess, "
                                           "not a measurement." if match["extrapolated"] else
                                           f"This is inside the measured {measured}."))
    return lines + [""] + words


def write(results_dir: files.Where) -> files.Location:
    """Write report.md and its PNG figures beside the results (relative links: it renders on a code host)."""
    root = files.location(results_dir)
    raw = results.load(root)
    frame = select(raw)
    if frame.empty:
        raise UserError(f"no finished trial in {root / 'results.parquet'}: nothing to report")
    config = results.config(root)
    data, name = config.get("data", {}).get("name", "unknown data"), config.get("name", root.name)
    shape, classes = DATA.get(data, (None, None))
    student, args = config.get("student", {}), config.get("student", {}).get("arch_args", {})
    channels = (defaults("conv_snn") | args)["channels"]  # a conv_snn's head sees the pooled conv maps
    input_dim = None if shape is None else math.prod(shape) if student.get("arch", "snn") == "snn" else \
        channels * (shape[1] // 2) * (shape[2] // 2)
    teachers = teacher_errors(root)
    names = sorted(t for t in frame["teacher"].unique() if t) or [""]
    md = [f"# Report: sweep `{name}` on {data}", "",
          f"Produced by `python -m distill report {results_dir}` from `results.parquet`: {len(raw)} trials, "
          f"{len(frame)} kept (finished; per cell and seed the trial of lowest val error). Errors are test errors "
          "in %, mean ± sample std over seeds, (n) seeds; a teacher's member row pools its members instead. "
          "Sub-ensemble errors are n/a: the teacher cache's manifest does not hold them.", "", "## Tables", "",
          tables(frame, teachers, shape, classes, args), "", "## Capacity curves", ""]
    for t in names:
        path = root / f"capacity-{re.sub(r'[^A-Za-z0-9_]+', '-', t).strip('-') or 'labels'}.png"  # no [:] in files
        md += [f"![capacity curve, {t}]({capacity_figure(frame, teachers, t, path, f'{data}: students of {t}').name})",
               ""]
    md += ["## Teacher quality", "", "Student error against teacher error at each fixed student size.", "",
           f"![teacher quality]({teacher_quality_figure(frame, teachers, root / 'teacher-quality.png').name})", ""]
    if frame["bottleneck"].notna().any():
        md += ["## Bottleneck", "", "Error and time to converge (best epoch, train seconds) against k at fixed H; "
               "hollow markers: no bottleneck, at k = min(D, H), which restricts nothing.", "",
               f"![bottleneck]({bottleneck_figure(frame, root / 'bottleneck.png', input_dim).name})", ""]
    md += ["## Error against log10(#params)", ""]
    for t in names:
        md += fit_section(frame, teachers, t) + [""]
    files.write_bytes(root / "report.md", "\n".join(md).encode())
    return root / "report.md"


def main(results_dir: files.Where) -> int:
    """`python -m distill report RESULTS_DIR`: write the report and say where it is."""
    print(f"wrote {write(results_dir)}")
    return 0
