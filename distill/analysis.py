"""The analysis of a sweep, apart from its rendering: pure pandas over one loaded run.

`load` reads a sweep's directory once into a `Run`: the results rows, the sweep config that produced them, the
newest invocation record and the teacher table. Everything else here takes frames and dicts and reads nothing:
`select` (one trial per cell and seed, chosen by val error), `cells` (mean, sample std and n over seeds),
`references` (the members a teacher averages), `fit` (test error against log10(#params) with 95% intervals) and
`match` (the size at which a fit reaches a teacher's error, with its 95% interval).

Facts come from where the run recorded them (rows, member results, manifests, the record); one that an older
directory lacks is NaN, shown as n/a, never re-derived here. The test split never chooses anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from distill import cache, files, results
from distill.teachers import parse

# transfer_views: the student's transfer set (NaN for students of the train inputs, and in older runs' rows).
CELL = ["arch", "hidden", "bottleneck", "target", "teacher", "transfer_views", "seed"]  # one trial per cell: `select`
GROUP = ["target", "teacher", "arch", "hidden", "bottleneck", "transfer_views"]  # a cell over its seeds
TEACHER_COLUMNS = ["teacher", "base", "kind", "members", "index", "test_error", "val_error", "params",
                   "hidden_units", "arch", "architecture"]


@dataclass(frozen=True)
class Run:
    """A sweep's directory as read once by `load`."""

    root: files.Location
    trials: pd.DataFrame  # every row of results.parquet, failed and searched trials included
    config: dict  # the sweep config that produced the rows (results.json); {} without one
    record: dict  # the newest runs/*.json: the invocation that wrote the results; {} without one
    record_name: str  # its file name; "" without one
    teachers: pd.DataFrame  # see `teachers`
    choices: list  # choices.json: what the fair protocol chose per target and shape; [] without one


def load(root: files.Where) -> Run:
    """Read a sweep's results, config, newest record, teacher manifests and member results, each once."""
    root = files.location(root)
    trials = results.load(root)
    config = results.config(root)
    records = (root / "runs").glob("*.json")  # named <UTC time>-<host>-<pid>: the last by name is the newest
    record = files.read_json(records[-1]) if records else {}
    manifests, members = {}, {}
    for t in config.get("teachers", []):
        path = cache.cache_paths(root, t["name"])[1]
        manifests[t["name"]] = files.read_json(path) if path.exists() else {}
        paths = [cache.member_dir(root, t["name"], i) / "result.json" for i in range(t.get("members", 1))]
        members[t["name"]] = [files.read_json(p) if p.exists() else {} for p in paths]
    table = teachers(config, record, manifests, members, trials["teacher"].dropna().unique())
    choices = files.read_json(root / "choices.json") if (root / "choices.json").exists() else []
    return Run(root, trials, config, record, records[-1].name if records else "", table, choices)


def teachers(config: dict, record: dict, manifests: dict[str, dict], members: dict[str, list[dict]],
             used=()) -> pd.DataFrame:
    """One row per teacher net and ensemble of the sweep `config`: teacher (the name students use: 'ecnn[2]',
    'ecnn', 'ecnn[:4]'), base, kind ("member"/"ensemble"), members, index, test_error, val_error, params,
    hidden_units, arch (the builder) and architecture (paper notation; an ensemble's is 'n x <member's>').

    Errors come from the teacher's cache manifest (`manifests`, by name: the logits students learned from), else
    the member's own result; a member's size from its result (`members`: by name, one dict per member), else
    from the record's teacher facts (one member's). An ensemble's size is its members' sum. A sub-ensemble in
    `used` (e.g. 'ecnn[:3]') takes its errors from the manifest's `subsets` (computed at harvest)."""
    facts = {t["name"]: t for t in record.get("teachers", [])}
    rows = []
    for t in config.get("teachers", []):
        name, count = t["name"], t.get("members", 1)
        manifest, fact = manifests.get(name, {}), facts.get(name, {})
        scored = {m["index"]: m for m in manifest.get("members", [])}
        net = dict(base=name, arch=t.get("arch"))
        own = []
        for i, result in enumerate(members.get(name, [{}] * count)):
            errors = scored.get(i, result)
            own.append(net | dict(teacher=f"{name}[{i}]", kind="member", members=1, index=i,
                                  test_error=errors.get("test_error"), val_error=errors.get("val_error"),
                                  **{k: result.get(k, fact.get(k)) for k in ("params", "hidden_units",
                                                                             "architecture")}))
        rows += own
        subs = [(name, list(range(count)), manifest.get("ensemble", {}))]
        subs += [(s, parse(s, {name: count})[1], manifest.get("subsets", {}).get(s, {}))
                 for s in sorted(u for u in used if u.startswith(f"{name}[:"))]
        for teacher, idx, errors in subs:
            part = [own[i] for i in idx]
            rows.append(net | dict(teacher=teacher, kind="ensemble", members=len(idx), index=None,
                                   test_error=errors.get("test_error"), val_error=errors.get("val_error"),
                                   params=_total(m["params"] for m in part),
                                   hidden_units=_total(m["hidden_units"] for m in part),
                                   architecture=_times(len(idx), part[0]["architecture"])))
    return pd.DataFrame(rows, columns=TEACHER_COLUMNS).astype(
        {"test_error": float, "val_error": float, "params": float, "hidden_units": float})


def _total(values) -> float:
    """The sum, or NaN when any part is unknown: a partly known size is not a size."""
    values = [np.nan if v is None else v for v in values]
    return float(np.sum(values)) if values else np.nan


def _times(n: int, architecture: str | None) -> str | None:
    """An ensemble's notation as models.describe writes it ('4 x 8c3-p-32-10'); one net's is its own."""
    return architecture if n == 1 or architecture is None else f"{n} x {architecture}"


def having(frame: pd.DataFrame, names) -> pd.DataFrame:
    """`frame` with every column of `names`, those it lacks as NaN (an older run's rows, a label-only sweep)."""
    return frame.reindex(columns=[*frame.columns, *(c for c in names if c not in frame)])


def select(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (hidden, bottleneck, target, teacher, seed): the finished trial of lowest val error."""
    ok = frame[(frame["status"] == "ok") & frame["val_error"].notna()] if "status" in frame else frame
    ok = having(ok, CELL)
    best = ok.sort_values("val_error", kind="stable").groupby(CELL, dropna=False, sort=False).head(1)
    return best.sort_index().reset_index(drop=True)


# Columns a cell averages when its rows have them (older runs, label-only sweeps or images may lack some).
MEANS = {"best_epoch": "best_epoch", "seconds": "train_seconds", "agreement": "test_agreement", "per": "test_per"}
FIRSTS = ["params", "architecture", "hidden_units"]  # the same in every seed of a cell


def cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (target, teacher, hidden, bottleneck) over seeds: error (mean test error), sd (sample std, ddof=1;
    NaN for one seed), n, and the cell's size and architecture and the means of MEANS. Pass `select`'s rows."""
    frame = having(frame, [*GROUP, *FIRSTS, *MEANS.values()])
    return (frame.groupby(GROUP, dropna=False)
            .agg(**{c: (c, "first") for c in FIRSTS}, error=("test_error", "mean"), sd=("test_error", "std"),
                 n=("test_error", "count"), **{k: (c, "mean") for k, c in MEANS.items()})
            .reset_index().sort_values(["target", "teacher", "params"]).reset_index(drop=True))


def references(teachers: pd.DataFrame, teacher: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the members a teacher name averages, if more than one; its own row): 'ecnn[:4]' -> members 0-3."""
    own = teachers[teachers["teacher"] == teacher]
    if own.empty:
        return own, own
    ensembles = teachers[teachers["kind"] == "ensemble"]
    base, idx = parse(teacher, ensembles.groupby("base")["members"].max().to_dict())
    members = teachers[(teachers["base"] == base) & (teachers["kind"] == "member") & teachers["index"].isin(idx)]
    return (members if len(idx) > 1 else members.iloc[:0]), own


def ols(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> dict:
    """Ordinary least squares y = a + b x: a, b, their `level` intervals from the t distribution with n - 2
    degrees of freedom (NaN with fewer than 3 points), s (residual std), rmse, x_mean, sxx, and `reason` when
    no line or no interval could be had."""
    n, dof = len(x), len(x) - 2
    out = dict(n=n, dof=dof, level=level, a=np.nan, b=np.nan, a_lo=np.nan, a_hi=np.nan, b_lo=np.nan, b_hi=np.nan,
               s=np.nan, rmse=np.nan, x_mean=np.nan, sxx=np.nan, reason="")
    if len(np.unique(x)) < 2:
        return out | dict(reason=f"{len(np.unique(x))} distinct x value(s): a line needs two")
    x_mean, sxx = x.mean(), float(((x - x.mean()) ** 2).sum())
    b = float(((x - x_mean) * (y - y.mean())).sum() / sxx)
    a = float(y.mean() - b * x_mean)
    residuals = y - a - b * x
    out |= dict(a=a, b=b, x_mean=float(x_mean), sxx=sxx, rmse=float(np.sqrt(np.mean(residuals**2))))
    if dof < 1:
        return out | dict(reason="2 points: no residual degrees of freedom for an interval")
    s = float(np.sqrt((residuals**2).sum() / dof))
    t = float(stats.t.ppf(0.5 + level / 2, dof))
    se_a, se_b = s * math.sqrt(1 / n + x_mean**2 / sxx), s / math.sqrt(sxx)
    return out | dict(s=s, a_lo=a - t * se_a, a_hi=a + t * se_a, b_lo=b - t * se_b, b_hi=b + t * se_b)


def fit(frame: pd.DataFrame, family: str, teacher: str | None = None, level: float = 0.95) -> dict:
    """`ols` of test_error = a + b * log10(params) over the seed-level rows (`select`'s: one per cell and seed) of
    one target family, optionally of one teacher; all its cells, with and without bottleneck, since #params is
    the x."""
    rows = having(frame[frame["target"] == family], GROUP)
    rows = rows if teacher is None else rows[rows["teacher"] == teacher]
    rows = rows.dropna(subset=["params", "test_error"])
    line = ols(np.log10(rows["params"].to_numpy(float)), rows["test_error"].to_numpy(float), level)
    return dict(family=family, teacher=teacher, cells=len(rows.drop_duplicates(GROUP)),
                params_min=float(rows["params"].min()), params_max=float(rows["params"].max())) | line


QUALITY = ["target", "arch", "hidden", "bottleneck", "transfer_views"]  # a student shape and target: teachers vary


def quality(frame: pd.DataFrame, teachers: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Does a better teacher make a better student? Per student shape and target learning from 2+ teachers of
    known error: `ols` of the student's test error on its teacher's test error over the seed-level rows (`select`'s),
    the slope b (points of student error per point of teacher error) with its interval, the teachers in order of
    their error with the student's mean error under each, and `monotone`: whether those means never fall as the
    teacher gets worse (a better teacher never gave a worse student)."""
    known = teachers.dropna(subset=["test_error"]).drop_duplicates("teacher").set_index("teacher")["test_error"]
    rows = frame[frame["teacher"].isin(known.index)].assign(teacher_error=lambda f: f["teacher"].map(known))
    rows = having(rows, QUALITY)
    out = []
    for key, group in rows.groupby(QUALITY, dropna=False):
        means = group.groupby("teacher")["test_error"].mean().sort_index(key=lambda t: t.map(known))
        if len(means) < 2:
            continue
        line = ols(group["teacher_error"].to_numpy(float), group["test_error"].to_numpy(float), level)
        out.append(dict(zip(QUALITY, key, strict=True)) | dict(
            teachers=list(means.index), teacher_errors=[float(known[t]) for t in means.index],
            student_errors=[float(v) for v in means],
            monotone=bool((np.diff(means.to_numpy()) >= -1e-9).all())) | line)  # equal means (ties) are monotone
    return pd.DataFrame(out)


SHAPE = ["arch", "hidden", "bottleneck"]  # one student shape: its targets are compared
ORDER = ("mimic", "labels-aug", "labels")  # the paper's first result, best first: mimic < labels-aug < labels


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the t interval of the mean over n values (n - 1 degrees of freedom; NaN for one value)."""
    n, mean = len(values), float(np.mean(values))
    if n < 2:
        return mean, np.nan, np.nan
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def by_seed(rows: pd.DataFrame, target: str) -> pd.Series:
    """One target's test errors indexed by seed."""
    return rows[rows["target"] == target].set_index("seed")["test_error"]


def paired(a: pd.Series, b: pd.Series, level: float = 0.95, combine=None) -> tuple[float, float, float]:
    """(mean, lo, hi) of `combine(a, b)` (default a - b) over the seeds both have (the same seed's init in both):
    `mean_interval`; NaN where they share none."""
    seeds = a.index.intersection(b.index)
    values = ((combine or pd.Series.sub)(a[seeds], b[seeds])).to_numpy(float)
    return mean_interval(values, level) if len(values) else (np.nan,) * 3


def recipes(frame: pd.DataFrame, teacher: str):
    """Per student shape and transfer set: (its key, the rows of mimic learning from `teacher` and of labels-aug on
    that transfer set, with the shape's labels rows, which learn on the train inputs whatever the recipe)."""
    frame = having(frame, [*SHAPE, "transfer_views"])
    transfer = frame[(frame["target"] == "labels-aug") | ((frame["target"] == "mimic") & (frame["teacher"] == teacher))]
    labels = frame[frame["target"] == "labels"]
    for key, group in transfer.groupby([*SHAPE, "transfer_views"], dropna=False):
        shape = labels
        for column, value in zip(SHAPE, key, strict=False):
            shape = shape[shape[column].isna() if pd.isna(value) else shape[column] == value]
        yield dict(zip([*SHAPE, "transfer_views"], key, strict=True)), pd.concat([group, shape])


def headline(frame: pd.DataFrame, teacher: str, level: float = 0.95) -> pd.DataFrame:
    """The paper's first result per student shape and transfer set: mimic (learning from `teacher`) against
    labels-aug against labels. Each target's mean test error over seeds with its interval, and each neighbouring
    pair's difference paired by seed (the same seed's init in both) with its interval: `mimic-labels-aug` < 0 with
    an interval below 0 is a lower error beyond seed noise. Pass `select`'s rows; shapes lacking a target are left
    out."""
    out = []
    for key, rows in recipes(frame, teacher):
        by = {t: by_seed(rows, t) for t in ORDER}
        if any(v.empty for v in by.values()):
            continue
        row = key | {"teacher": teacher}
        for t, v in by.items():
            row[t], row[f"{t}_lo"], row[f"{t}_hi"] = mean_interval(v.to_numpy(float), level)
        for a, b in zip(ORDER, ORDER[1:], strict=False):  # neighbours: (mimic, labels-aug), (labels-aug, labels)
            name = f"{a}-{b}"
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = paired(by[a], by[b], level)
        row["holds"] = bool(row["mimic"] < row["labels-aug"] < row["labels"])
        out.append(row)
    return pd.DataFrame(out)


def gaps(frame: pd.DataFrame, teachers: pd.DataFrame, teacher: str, level: float = 0.95) -> pd.DataFrame:
    """Where do the teacher's logits matter? Per student shape and transfer set, the share of the gap between a
    baseline and `teacher` that mimic recovers, against both baselines, by seed (the same seed's baseline and
    mimic student): `gap_labels` = (labels - mimic) / (labels - teacher) and `gap_aug` = (labels-aug - mimic) /
    (labels-aug - teacher), each a mean over seeds with its t interval (1: as good as the teacher; 0: no better
    than the baseline; below 0: worse). `logits_add` = labels-aug - mimic in error (what the logits add beyond
    the same augmented inputs), paired by seed with its interval, `inputs` the transfer set's size, `agreement`
    mimic's mean test agreement with the teacher. A share is NaN where some seed's baseline is no worse than the
    teacher: there is no gap to recover (its ratio would be infinite or of the wrong sign). Pass `select`'s rows;
    shapes lacking a target are left out."""
    known = teachers.dropna(subset=["test_error"]).drop_duplicates("teacher").set_index("teacher")["test_error"]
    if teacher not in known:
        return pd.DataFrame()
    t_err = float(known[teacher])
    out = []
    for key, rows in recipes(frame, teacher):
        mimic, aug, labels = (by_seed(rows, t) for t in ORDER)
        if mimic.empty or aug.empty or labels.empty:
            continue
        own = rows[rows["target"] == "mimic"]
        row = key | {"teacher": teacher, "teacher_error": t_err, "mimic": float(mimic.mean()),
                     "labels-aug": float(aug.mean()), "labels": float(labels.mean()),
                     "inputs": float(own["transfer_size"].iloc[0]) if "transfer_size" in own else np.nan,
                     "agreement": float(own["test_agreement"].mean()) if "test_agreement" in own else np.nan}
        for name, base in (("gap_labels", labels), ("gap_aug", aug)):
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = paired(
                base, mimic, level, lambda b, m: ((b - m) / (b - t_err)).where(b > t_err))
        row["logits_add"], row["logits_add_lo"], row["logits_add_hi"] = paired(aug, mimic, level)
        out.append(row)
    return pd.DataFrame(out)


def match(fit: dict, teacher_error: float) -> dict:
    """{params, lo, hi, extrapolated, reason, interval}: the #params at which the fitted line reaches
    `teacher_error`, whether that lies outside the measured range, and its interval at the fit's level.

    The interval is Fieller's inverse-regression interval: the sizes whose confidence band for the mean error
    (a + b x ± t s sqrt(1/n + (x - mean x)^2 / Sxx), x = log10 #params) contains the teacher's error, which is
    taken as exact. It is bounded only when the slope's own interval excludes 0; otherwise lo and hi are None and
    `interval` says why. A line that does not fall with size (b >= 0) never reaches the teacher: params is None."""
    none = dict(params=None, lo=None, hi=None, extrapolated=False, interval="")
    if np.isnan(fit["b"]):
        return none | dict(reason=f"no fit: {fit['reason']}")
    if pd.isna(teacher_error):
        return none | dict(reason="the teacher's error is unknown")
    if fit["b"] >= 0:
        return none | dict(reason=f"the error does not fall with size (slope {fit['b']:+.4f} per decade)")
    a, b, n, x_mean, sxx = fit["a"], fit["b"], fit["n"], fit["x_mean"], fit["sxx"]
    params = float(10 ** ((teacher_error - a) / b))
    extrapolated = not fit["params_min"] <= params <= fit["params_max"]
    out = dict(params=params, lo=None, hi=None, extrapolated=extrapolated,
               reason=f"{'outside' if extrapolated else 'inside'} the measured range")
    if np.isnan(fit["s"]):
        return out | dict(interval=f"n/a: {fit['reason']}")
    # (b u - d)^2 <= q (1/n + u^2 / Sxx) with u = x - mean x, d = teacher error - mean y: A u^2 - 2 b d u + C <= 0.
    q = (stats.t.ppf(0.5 + fit["level"] / 2, fit["dof"]) * fit["s"]) ** 2
    d = teacher_error - (a + b * x_mean)
    big_a = b**2 - q / sxx
    if big_a <= 0:
        return out | dict(interval="unbounded: the slope's interval includes 0")
    root = math.sqrt(max(q * (b**2 / n + d**2 / sxx - q / (n * sxx)), 0.0))
    lo, hi = sorted(10 ** (x_mean + (b * d + sign * root) / big_a) for sign in (-1, 1))
    return out | dict(lo=float(lo), hi=float(hi), interval="Fieller")
