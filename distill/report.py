"""The rendering of a sweep's analysis: capacity curves, teacher quality, the bottleneck effect, paper-style tables
and the fit of error against log10(#params), written as `report.md` plus PNGs beside the results.

`write` loads the run once (`distill.analysis.load`); everything else draws or formats frames from it. The numbers
come from `distill.analysis`; names, order and colours of the targets from `distill.targets.TARGETS`. Errors are
test errors in %, a cell's the mean ± sample std over its seeds; a fact the run did not record shows as n/a.
"""

from __future__ import annotations

import re
from io import BytesIO
from numbers import Number

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # Figure without pyplot: no global backend state, renders PNG by Agg
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from distill import analysis, files
from distill.analysis import cells, references
from distill.errors import UserError
from distill.targets import TARGETS


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
        style = TARGETS[target]
        ax.errorbar(c["params"], 100 * c["error"], yerr=100 * c["sd"].fillna(0), color=style.colour,
                    marker="s" if has_k else "o", ls="--" if has_k else "-", capsize=3,
                    label=f"{style.title}{' of ' + teacher if style.teacher else ''}{' (bottleneck)' * has_k}")
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
                    capsize=3, ls="--" if pd.notna(k) else "-",
                    label=f"{target} H={h}" + (f" k={k:.0f}" if pd.notna(k) else ""))
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
    nothing (rank W <= min(D, H)), so that is where the unrestricted net sits on the k axis (at H when D is
    unknown)."""
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


def shape_name(row) -> str:
    """A student shape as the report's tables name it: 'snn H=1024', 'snn H=1024 k=64'."""
    k = f" k={row['bottleneck']:.0f}" if pd.notna(row["bottleneck"]) else ""
    return f"{row['arch']} H={row['hidden']}{k}"


def transfer_figure(table: pd.DataFrame, path: files.Where, title: str = "") -> files.Location:
    """Against transfer-set size (#inputs, log x), one line per student shape, mean over seeds with its 95%
    interval: the gap mimic recovers against labels on the train inputs and against labels on the same augmented
    inputs, and what the logits add (labels-aug - mimic, points). A share's baseline can sit near the teacher,
    which makes it large and noisy: those panels show -100% to 150% (a point or bar beyond runs off the panel)."""
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (("gap_labels", "gap recovered (%)", "vs labels: (labels - mimic) / (labels - teacher)"),
              ("gap_aug", "gap recovered (%)", "vs labels-aug: (labels-aug - mimic) / (labels-aug - teacher)"),
              ("logits_add", "labels-aug - mimic (points)", "what the logits add beyond the same inputs"))
    at = sorted(table["inputs"].dropna().unique())  # the measured transfer-set sizes: every panel's x ticks
    for ax, (col, ylabel, name) in zip(axes, panels, strict=True):  # every value in % (or points) of error
        for key, c in table.groupby(analysis.SHAPE, dropna=False):
            c = c.sort_values("inputs")
            err = [100 * (c[col] - c[f"{col}_lo"]).fillna(0), 100 * (c[f"{col}_hi"] - c[col]).fillna(0)]
            shape = dict(zip(analysis.SHAPE, key, strict=True))
            ax.errorbar(c["inputs"], 100 * c[col], yerr=err, marker="o", capsize=3,
                        ls="--" if pd.notna(shape["bottleneck"]) else "-", label=shape_name(shape))
        ax.axhline(0, color="k", lw=0.8)
        if col != "logits_add":
            ax.axhline(100, color="k", ls=":", lw=0.8)
            ax.set_ylim(-100, 150)
        ax.set(xscale="log", xlabel="transfer set (# inputs)", ylabel=ylabel, title=name)
        ax.title.set_fontsize(9)
        ax.set_xticks(at, [human(v) for v in at])
        ax.minorticks_off()  # ticks at the measured sizes, not at log-axis decades
    fig.suptitle(title or "against transfer-set size (gap recovered: 0 the baseline, 100 the teacher)")
    return _save(fig, path)


def transfer_section(table: pd.DataFrame) -> list[str]:
    """The gaps mimic recovers per student shape and transfer set, as a table (a row per recipe) and a sentence
    each: what the logits add beyond the same augmented inputs, and whether its interval includes zero."""
    if table.empty:
        return ["The sweep lacks one of mimic, labels-aug and labels at every student shape: no gap to measure.", ""]
    teacher = table["teacher"].iloc[0]
    lines = [f"Mimic students of `{teacher}` (test error {100 * table['teacher_error'].iloc[0]:.2f}%) per student "
             "shape and transfer set (the train inputs and v augmented views of each): the share of the gap between a "
             "baseline and the teacher they recover, per seed against the same seed's baseline, mean with its 95% t "
             "interval over seeds (n/a where some seed's baseline was no worse than the teacher: no gap to recover; "
             "a baseline close to the teacher makes the share large and noisy); the logits' gain is labels-aug - mimic "
             "in points, paired by seed.", "",
             _row("student", "views", "inputs", "mimic %", "labels-aug %", "labels %", "gap recovered vs labels %",
                  "gap recovered vs labels-aug %", "logits add (points)", "agreement %"),
             "|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
    sentences = []
    for _, g in table.sort_values([*analysis.SHAPE, "inputs"]).iterrows():
        name = shape_name(g)
        views = "n/a" if pd.isna(g["transfer_views"]) else f"{g['transfer_views']:.0f}"
        inputs = "n/a" if pd.isna(g["inputs"]) else f"{g['inputs']:,.0f}"
        lines.append(_row(name, views, inputs, *(f"{100 * g[t]:.2f}" for t in analysis.ORDER),
                          interval(g["gap_labels"], g["gap_labels_lo"], g["gap_labels_hi"]),
                          interval(g["gap_aug"], g["gap_aug_lo"], g["gap_aug_hi"]),
                          interval(g["logits_add"], g["logits_add_lo"], g["logits_add_hi"]),
                          "n/a" if pd.isna(g["agreement"]) else f"{100 * g['agreement']:.2f}"))
        zero = "n/a" if pd.isna(g["logits_add_lo"]) else (
            "excludes" if g["logits_add_lo"] > 0 or g["logits_add_hi"] < 0 else "includes")
        sentences.append(f"- {name}: the logits add {100 * g['logits_add']:+.2f} points beyond the augmented inputs at "
                         f"{inputs} inputs; its 95% interval "
                         + (f"({100 * g['logits_add_lo']:+.2f} to {100 * g['logits_add_hi']:+.2f}) {zero} zero."
                            if zero != "n/a" else "is n/a (one seed)."))
    return [*lines, "", *sentences, ""]


def model_name(target: str, teacher: str, hidden: int, arch: str) -> str:
    """Paper-style names: SNN-8k (labels), SNN-8k-AUG (labels on the transfer set), SNN-ECNN-MIMIC-8k; the
    student's architecture in front (CONV-SNN-8k for a `conv_snn`)."""
    net, h = arch.upper().replace("_", "-"), f"{hidden // 1000}k" if hidden % 1000 == 0 else str(hidden)
    if TARGETS[target].teacher:
        return f"{net}-{teacher.upper()}-{target.upper()}-{h}"
    return f"{net}-{h}" + ("-AUG" if TARGETS[target].inputs == "transfer" else "")


def error_text(mean: float, sd: float, n: int) -> str:
    """'2.87 ± 0.46 (3)': test error in %, mean ± sample std (none for n = 1), then n."""
    if n == 0 or pd.isna(mean):
        return "n/a"
    return f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if n > 1 else "") + f" ({n})"


def _row(*cols) -> str:
    """A markdown table row; numbers as whole counts with thousands separators, 'n/a' when not recorded."""
    return "| " + " | ".join("n/a" if c is None or (isinstance(c, Number) and pd.isna(c)) else
                             f"{c:,.0f}" if isinstance(c, Number) else c for c in cols) + " |"


def teacher_rows(teachers: pd.DataFrame, teacher: str) -> list[str]:
    """A teacher's table rows: its members pooled (mean ± std over members) and itself, or its one net."""
    members, own = references(teachers, teacher)
    if own.empty:
        return []
    t, net = own.iloc[0], str(own.iloc[0]["arch"]).upper()
    if members.empty:  # a single net: one member ('ecnn[2]') or a one-member teacher ('dnn')
        name = net if t["kind"] == "ensemble" else f"{net} ({teacher})"
        return [_row(name, t["architecture"], t["params"], t["hidden_units"], error_text(t["test_error"], 0, 1))]
    m, e = members.iloc[0], members["test_error"]
    return [_row(f"{net} (each member)", m["architecture"], m["params"], m["hidden_units"],
                 error_text(e.mean(), e.std(), int(e.count()))),
            _row(teacher.upper(), f"ensemble of {t['members']} {net}s", t["params"], t["hidden_units"],
                 error_text(t["test_error"], 0, 1))]


def tables(frame: pd.DataFrame, teachers: pd.DataFrame) -> str:
    """A markdown table like the paper's Tables 1-2: the label-trained students, then each teacher followed
    by its students (targets in TARGETS order), each group by #params. Architectures and sizes are the ones the
    rows and the teachers' results recorded."""
    lines = [_row("Model", "Architecture", "# Param.", "# Hidden units", "Error % (mean ± std, n)"),
             "|---|---|---:|---:|---|"]
    table = cells(frame)
    table = table.assign(order=table["target"].map(lambda t: TARGETS[t].order)).sort_values(
        ["teacher", "order", "params"])
    for teacher, group in table.groupby("teacher", sort=True):  # "" sorts first: the label-trained students
        lines += teacher_rows(teachers, teacher) if teacher else []
        for _, c in group.iterrows():
            lines.append(_row(model_name(c["target"], teacher, int(c["hidden"]), c["arch"]), c["architecture"],
                              c["params"], c["hidden_units"], error_text(c["error"], c["sd"], int(c["n"]))))
    return "\n".join(lines)


def human(n: float) -> str:
    """814090 -> '814k': #params in prose."""
    for scale, suffix in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]:
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def interval(value: float, lo: float, hi: float) -> str:
    """'10.00 (9.10 to 10.90)': a fraction in %, with its interval (n/a where it has none)."""
    if pd.isna(value):
        return "n/a"
    return f"{100 * value:.2f} " + ("(n/a)" if pd.isna(lo) else f"({100 * lo:.2f} to {100 * hi:.2f})")


def spread(match: dict) -> str:
    """'95% interval 2.5M–9.9M', or why there is none ('95% interval unbounded: ...')."""
    return "95% interval " + (f"{human(match['lo'])}–{human(match['hi'])}" if match["lo"] is not None
                              else match["interval"])


def match_text(match: dict) -> str:
    """'4.07M (95% interval 2.5M–9.9M; **extrapolated**: outside the measured range)', or '—' and why not."""
    if match["params"] is None:
        return f"— ({match['reason']})"
    where = "**extrapolated**: " * match["extrapolated"] + match["reason"]
    return f"{human(match['params'])} ({spread(match)}; {where})"


FIT_METHOD = ("Ordinary least squares of test error on log10(#params) over the seed-level rows (one per cell and "
              "seed, with and without bottleneck), 95% confidence intervals on intercept and slope from the t "
              "distribution with n - 2 degrees of freedom. The size to match the teacher is where the line reaches "
              "the teacher's test error; its 95% interval is Fieller's inverse-regression interval: the sizes at "
              "which the fit's 95% confidence band for the mean error contains the teacher's error, taken as exact "
              "(unbounded when the slope's interval includes 0). The intervals hold if the line is the right model: "
              "beyond the measured sizes nothing here tests that it still is.")


def fit_section(frame: pd.DataFrame, teachers: pd.DataFrame, teacher: str) -> list[str]:
    """Per family, the fit with its intervals and the size at which it reaches `teacher`'s error; the
    extrapolation in words."""
    own = teachers.loc[teachers["teacher"] == teacher, "test_error"]
    goal = own.iloc[0] if len(own) else np.nan
    head = f"Teacher **{teacher}**: test error " + ("n/a." if pd.isna(goal) else f"{100 * goal:.2f}%.")
    lines = [head if teacher else "No teacher-trained students: the fits alone.", "",
             _row("Family", "Cells", "Trials", "Intercept % (95% CI)", "Slope % per decade (95% CI)",
                  "Measured # param.", "# Param. to match the teacher (95% interval)"),
             "|---|---:|---:|---|---|---|---|"]
    words = []
    for family in sorted(frame["target"].unique(), key=lambda t: -TARGETS[t].order):  # teacher families first
        style = TARGETS[family]
        fit = analysis.fit(frame, family, teacher if style.teacher else "")
        if fit["cells"] == 0:
            continue
        match, measured = analysis.match(fit, goal), f"{human(fit['params_min'])}–{human(fit['params_max'])}"
        lines.append(_row(style.title, str(fit["cells"]), str(fit["n"]), interval(fit["a"], fit["a_lo"], fit["a_hi"]),
                          interval(fit["b"], fit["b_lo"], fit["b_hi"]), measured, match_text(match)))
        if style.teacher and match["params"]:  # the paper's question: how big must the mimic be?
            words.append(f"- The {style.title} students would match the teacher at about {human(match['params'])} "
                         f"parameters ({spread(match)}). " +
                         (f"This is an **extrapolation** beyond the measured {measured}: a guess, not a measurement."
                          if match["extrapolated"] else f"This is inside the measured {measured}."))
    return lines + [""] + words


def quality_section(table: pd.DataFrame) -> list[str]:
    """The teacher-quality fits as a table and a sentence each; [] when no student shape learned from 2+ teachers."""
    if table.empty:
        return ["No student shape learned from two or more teachers of known error: no slope to fit.", ""]
    lines = ["Least squares of each student's test error (one point per seed) on its teacher's test error; the slope "
             "is points of student error per point of teacher error, with its 95% interval (t, n - 2 degrees of "
             "freedom).",
             "", _row("student", "teachers, best first (test error %)", "student error % under each", "slope (95% CI)",
                      "monotone"), "|---|---|---|---|---|"]
    sentences = []
    for _, q in table.iterrows():
        k = f" k={q['bottleneck']:.0f}" if pd.notna(q["bottleneck"]) else ""
        name = f"{q['target']} {q['arch']} H={q['hidden']}{k}"
        teachers = ", ".join(f"{t} {100 * e:.2f}" for t, e in zip(q["teachers"], q["teacher_errors"], strict=True))
        slope = "n/a" if pd.isna(q["b"]) else (f"{q['b']:+.2f}" + ("" if pd.isna(q["b_lo"]) else
                                                                 f" ({q['b_lo']:+.2f} to {q['b_hi']:+.2f})"))
        lines.append(_row(name, teachers, ", ".join(f"{100 * e:.2f}" for e in q["student_errors"]), slope,
                          "yes" if q["monotone"] else "**no**"))
        order = ("the student never got worse with a better teacher" if q["monotone"] else
                 "**not monotone**: a better teacher gave a worse student somewhere in this order")
        excludes = pd.notna(q["b_lo"]) and q["b_lo"] > 0
        sentences.append(f"- {name}: slope {slope}; the interval {'excludes' if excludes else 'includes'} 0; {order}.")
    return [*lines, "", *sentences, ""]


def headline_section(table: pd.DataFrame) -> list[str]:
    """The paper's first result per student shape, as a table and a sentence each, whether or not it holds."""
    if table.empty:
        return ["The sweep lacks one of mimic, labels-aug and labels at every student shape: no comparison.", ""]
    teacher = table["teacher"].iloc[0]
    lines = [f"Test error % per student shape, mean over seeds with its 95% t interval: mimicking `{teacher}` "
             "against the same student on labels of the same augmented inputs (labels-aug) and of the train inputs "
             "alone (labels). Differences are paired by seed, with their 95% intervals.", "",
             _row("student", "mimic", "labels-aug", "labels", "mimic - labels-aug", "labels-aug - labels",
                  "mimic < labels-aug < labels"), "|---|---|---|---|---|---|---|"]
    sentences = []
    for _, h in table.iterrows():
        name = shape_name(h)
        cols = [interval(h[t], h[f"{t}_lo"], h[f"{t}_hi"]) for t in analysis.ORDER]
        diffs = [interval(h[d], h[f"{d}_lo"], h[f"{d}_hi"]) for d in ("mimic-labels-aug", "labels-aug-labels")]
        lines.append(_row(name, *cols, *diffs, "yes" if h["holds"] else "**no**"))
        pairs = [("mimic", "labels-aug"), ("labels-aug", "labels")]
        lower = [f"{a} below {b}" for a, b in pairs if h[f"{a}-{b}_hi"] < 0]
        higher = [f"**{a} above {b}**" for a, b in pairs if h[f"{a}-{b}_lo"] > 0]
        noise = ", ".join(lower + higher)
        sentences.append(f"- {name}: " + ("mimic < labels-aug < labels holds" if h["holds"] else
                         "**mimic < labels-aug < labels does not hold**") +
                         (f"; beyond seed noise (the paired interval excludes 0): {noise}" if noise else
                          "; no difference is beyond seed noise") + ".")
    return [*lines, "", *sentences, ""]


def protocol_section(choices: list[dict]) -> list[str]:
    """What the fair protocol chose (choices.json): per target and shape, the setting and the val error it won by."""
    if not choices:
        return []
    lines = ["## Protocol", "", "Each target and student shape was searched on the first seed (and, for mimic, the "
             "first teacher); the setting of lowest val error (never test) trained every other seed and teacher "
             "(`choices.json`, also in the run record).", "",
             _row("target", "student", "views", "searched on", "samples", "chosen", "val error %"),
             "|---|---|---:|---|---:|---|---|"]
    for c in choices:
        k = f" k={c['bottleneck']}" if c.get("bottleneck") else ""
        chosen = ", ".join(f"{n} {v:.3g}" for n, v in sorted(c["settings"].items()))
        # n/a: a student of the train inputs (no transfer set), or a choice recorded before transfer sets existed.
        views = "n/a" if c.get("transfer_views") is None else str(c["transfer_views"])
        lines.append(_row(c["target"], f"{c['arch']} H={c['hidden']}{k}", views, f"seed {c['seed']}" +
                          (f", {c['teacher']}" if c.get("teacher") else ""), c["samples"], chosen,
                          f"{100 * c['val_error']:.2f}"))
    return [*lines, ""]


def epochs_text(frame: pd.DataFrame) -> str:
    """How often a kept trial's best val epoch was the last of its epoch budget (then it may have stopped early)."""
    if not {"best_epoch", "epochs", "train.epochs"} <= set(frame.columns):
        return "Epoch counts were not recorded."
    last = (frame["best_epoch"] == frame["train.epochs"]).groupby(frame["target"]).agg(["sum", "count"])
    parts = [f"{t}: {int(r['sum'])} of {int(r['count'])}" for t, r in last.iterrows()]
    return ("The best val epoch was the last epoch of the budget in " + "; ".join(parts) + " kept trials (a trial "
            "stopped by patience ended after its best epoch; one whose best epoch is the last might have improved).")


def provenance(run: analysis.Run) -> str:
    """Where the numbers come from: the invocation record's command, code version and data, or that it is absent."""
    rec = run.record
    if not rec:
        return "No invocation record (runs/*.json): code version and data shape n/a."
    code, data = rec.get("code", {}), rec.get("data", {})
    commit = code.get("commit", "n/a")[:12] + (" with uncommitted changes" if code.get("dirty") else "")
    sizes = "/".join(f"{data['sizes'][s]:,}" for s in ("train", "val", "test")) if "sizes" in data else "n/a"
    return (f"Record `runs/{run.record_name}`: `{' '.join(rec.get('command', []))}`, commit {commit}; data "
            f"{data.get('name', 'n/a')}, input {tuple(data['shape']) if 'shape' in data else 'n/a'}, "
            f"{data.get('classes', 'n/a')} classes, train/val/test {sizes}.")


def write(results_dir: files.Where) -> files.Location:
    """Write report.md and its PNG figures beside the results (relative links: it renders on a code host)."""
    run = analysis.load(results_dir)
    root, frame, teachers = run.root, analysis.select(run.trials), run.teachers
    if frame.empty:
        raise UserError(f"no finished trial in {root / 'results.parquet'}: nothing to report")
    data, name = run.config.get("data", {}).get("name", "unknown data"), run.config.get("name", root.name)
    shape = run.record.get("data", {}).get("shape")
    # The head of an snn sees the flat input; another student's (conv_snn) is not recorded: its marker sits at H.
    input_dim = int(np.prod(shape)) if shape and run.config.get("student", {}).get("arch", "snn") == "snn" else None
    names = sorted(t for t in frame["teacher"].unique() if t) or [""]
    md = [f"# Report: sweep `{name}` on {data}", "",
          f"Produced by `python -m distill report {results_dir}` from `results.parquet`: {len(run.trials)} trials, "
          f"{len(frame)} kept (finished; per cell and seed the trial of lowest val error). Errors are test errors "
          "in %, mean ± sample std over seeds, (n) seeds; a teacher's member row pools its members instead. "
          "Architectures and sizes are as the run recorded them; n/a: not recorded (an older run).",
          "", provenance(run), ""]
    # The main teacher: the sweep's first student teacher (the protocol searched with it), else the most mimicked.
    mimicked = frame.loc[frame["target"] == "mimic", "teacher"].value_counts()
    main = (run.config.get("student_teachers") or list(mimicked.index) or [""])[0]
    gaps = analysis.gaps(frame, teachers, main)
    # Every section but the transfer section reads the students of the largest transfer set (and of the train
    # inputs): a curve per recipe would draw the same student sizes twice.
    largest = analysis.having(frame, ["transfer_views"])["transfer_views"].max()
    frame = frame if pd.isna(largest) else frame[frame["transfer_views"].isna() | (frame["transfer_views"] == largest)]
    recipes = 0 if gaps.empty else gaps["transfer_views"].nunique(dropna=False)
    md += ["## Mimic against labels", ""]
    if recipes > 1:
        md += [f"On the largest transfer set ({largest:.0f} augmented views per train input), as every section but "
               "the next, which has every transfer set.", ""]
    md += [*headline_section(analysis.headline(frame, main))]
    if recipes:
        md += ["## Transfer-set size", "", *transfer_section(gaps)]
    if recipes > 1:
        md += [f"![gap recovered against transfer-set size]({transfer_figure(gaps, root / 'transfer.png').name})", ""]
    md += protocol_section(run.choices)
    md += ["## Tables", "", tables(frame, teachers), "", "## Capacity curves", ""]
    for t in names:
        path = root / f"capacity-{re.sub(r'[^A-Za-z0-9_]+', '-', t).strip('-') or 'labels'}.png"  # no [:] in files
        md += [f"![capacity curve, {t}]({capacity_figure(frame, teachers, t, path, f'{data}: students of {t}').name})",
               ""]
    md += ["## Teacher quality", "", "Student error against teacher error at each fixed student size.", "",
           f"![teacher quality]({teacher_quality_figure(frame, teachers, root / 'teacher-quality.png').name})", "",
           *quality_section(analysis.quality(frame, teachers)), "## Training length", "", epochs_text(frame), ""]
    if frame["bottleneck"].notna().any():
        md += ["## Bottleneck", "", "Error and time to converge (best epoch, train seconds) against k at fixed H; "
               "hollow markers: no bottleneck, at k = min(D, H), which restricts nothing.", "",
               f"![bottleneck]({bottleneck_figure(frame, root / 'bottleneck.png', input_dim).name})", ""]
    md += ["## Error against log10(#params)", "", FIT_METHOD, ""]
    for t in names:
        md += fit_section(frame, teachers, t) + [""]
    files.write_bytes(root / "report.md", "\n".join(md).encode())
    return root / "report.md"


def main(results_dir: files.Where) -> int:
    """`python -m distill report RESULTS_DIR`: write the report and say where it is."""
    print(f"wrote {write(results_dir)}")
    return 0
