"""The analysis against hand computations: selection by val error, cell statistics, the fit's intervals, the
size that matches a teacher and its interval, and the teacher table from recorded facts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from distill import analysis


def row(hidden, seed, test_error, val_error=0.05, params=None, target="mimic", teacher="ecnn", bottleneck=np.nan,
        status="ok"):
    return {"arch": "snn", "hidden": hidden, "bottleneck": bottleneck, "target": target, "teacher": teacher,
            "seed": seed,
            "params": hidden * 10 if params is None else params, "architecture": f"784-{hidden}-10",
            "hidden_units": hidden, "val_error": val_error, "test_error": test_error, "status": status}


def test_select_chooses_by_val_error_never_by_test_error():
    best_test_worse_val = row(100, 0, 0.001, val_error=0.09)
    frame = pd.DataFrame([row(100, 0, 0.030, val_error=0.04), best_test_worse_val,
                          row(100, 0, np.nan, val_error=np.nan, status="failed"), row(100, 1, 0.020)])
    kept = analysis.select(frame)
    assert sorted(kept["test_error"]) == [0.020, 0.030]
    assert len(kept) == len(kept.drop_duplicates(analysis.CELL))


def test_cells_mean_sample_std_and_n_by_hand():
    errors = [0.026, 0.026, 0.034]
    table = analysis.cells(pd.DataFrame([row(1000, s, e) for s, e in enumerate(errors)] + [row(10, 0, 0.5)]))
    big = table[table["hidden"] == 1000].iloc[0]
    mean = sum(errors) / 3
    assert big["error"] == pytest.approx(mean) and big["n"] == 3 and big["params"] == 10_000
    assert big["sd"] == pytest.approx(math.sqrt(sum((e - mean) ** 2 for e in errors) / 2))  # ddof = 1
    assert big["architecture"] == "784-1000-10" and np.isnan(big["agreement"])  # not recorded: NaN, not guessed
    assert np.isnan(table[table["hidden"] == 10].iloc[0]["sd"])  # one seed has no spread


def four_points():
    """4 rows at 10^1..10^4 #params with errors off a line: a case small enough to check by hand."""
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.30, 0.22, 0.19, 0.09])
    frame = pd.DataFrame([row(int(10**p), i, e, params=10**p) for i, (p, e) in enumerate(zip(x, y, strict=True))])
    return x, y, frame


def test_fit_slope_intercept_and_intervals_match_ols_by_hand():
    x, y, frame = four_points()
    fit = analysis.fit(frame, "mimic", "ecnn")
    design = np.column_stack([np.ones(4), x])
    (a, b), residual, *_ = np.linalg.lstsq(design, y, rcond=None)
    s2 = residual[0] / (4 - 2)
    se = np.sqrt(np.diag(s2 * np.linalg.inv(design.T @ design)))
    t = stats.t.ppf(0.975, 2)  # 4.303
    assert fit["a"] == pytest.approx(a) and fit["b"] == pytest.approx(b) == -0.0660
    assert (fit["b_lo"], fit["b_hi"]) == pytest.approx((b - t * se[1], b + t * se[1]))
    assert (fit["a_lo"], fit["a_hi"]) == pytest.approx((a - t * se[0], a + t * se[0]))
    assert fit["n"] == 4 and fit["cells"] == 4 and fit["dof"] == 2


def test_the_match_interval_is_where_the_confidence_band_meets_the_teacher():
    x, y, frame = four_points()
    fit = analysis.fit(frame, "mimic", "ecnn")
    teacher = 0.15
    m = analysis.match(fit, teacher)
    assert m["params"] == pytest.approx(10 ** ((teacher - fit["a"]) / fit["b"])) and not m["extrapolated"]
    assert m["lo"] < m["params"] < m["hi"] and m["interval"] == "Fieller"

    def band(p):  # the 95% confidence band for the mean error at #params p, computed here from the points
        s = math.sqrt(((y - fit["a"] - fit["b"] * x) ** 2).sum() / 2)
        sxx = ((x - x.mean()) ** 2).sum()
        half = stats.t.ppf(0.975, 2) * s * math.sqrt(1 / 4 + (math.log10(p) - x.mean()) ** 2 / sxx)
        mean = fit["a"] + fit["b"] * math.log10(p)
        return mean - half, mean + half

    assert band(m["lo"])[0] == pytest.approx(teacher)  # smaller nets: the band's lower edge just reaches it
    assert band(m["hi"])[1] == pytest.approx(teacher)  # bigger nets: its upper edge comes down to it
    assert band(m["lo"] * 0.9)[0] > teacher and band(m["hi"] * 1.1)[1] < teacher


def test_an_exact_line_matches_at_one_size_and_a_flat_noisy_one_has_no_bounded_interval():
    frame = pd.DataFrame([row(h, s, 0.1 - 0.02 * math.log10(h * 10)) for h in (10, 100, 1000) for s in range(2)])
    fit = analysis.fit(frame, "mimic")
    assert fit["b"] == pytest.approx(-0.02) and fit["b_hi"] - fit["b_lo"] == pytest.approx(0, abs=1e-12)
    m = analysis.match(fit, 0.1 - 0.02 * 7)
    assert m["params"] == pytest.approx(1e7) and m["extrapolated"]
    assert (m["lo"], m["hi"]) == pytest.approx((1e7, 1e7))  # no residual spread: the interval is the point
    noisy = pd.DataFrame([row(h, s, e) for h, es in [(10, (0.1, 0.3)), (100, (0.3, 0.09))] for s, e in enumerate(es)])
    fit = analysis.fit(noisy, "mimic")
    assert fit["b"] < 0 < fit["b_hi"]
    m = analysis.match(fit, 0.01)
    assert m["params"] is not None and m["lo"] is None and "unbounded" in m["interval"]


def test_fits_that_cannot_match():
    rising = pd.DataFrame([row(h, 0, 0.01 * math.log10(h)) for h in (10, 100, 1000)])
    assert "does not fall" in analysis.match(analysis.fit(rising, "mimic"), 0.001)["reason"]
    one = analysis.fit(pd.DataFrame([row(10, s, 0.1) for s in range(3)]), "mimic")
    assert np.isnan(one["b"]) and analysis.match(one, 0.01)["params"] is None
    two = analysis.fit(pd.DataFrame([row(10, 0, 0.2), row(100, 0, 0.1)]), "mimic")
    assert two["b"] == pytest.approx(-0.1) and np.isnan(two["b_lo"])  # no residual: no interval, not a zero one
    assert analysis.match(two, 0.05)["lo"] is None
    assert analysis.match(two, np.nan)["reason"] == "the teacher's error is unknown"


def test_teacher_table_from_manifests_member_results_and_the_record():
    config = {"teachers": [{"name": "ecnn", "arch": "cnn", "members": 3}, {"name": "old", "arch": "dnn"}]}
    record = {"teachers": [{"name": "ecnn", "architecture": "8c3-p-32-10", "params": 500, "hidden_units": 40}]}
    manifests = {"ecnn": {"members": [{"index": i, "test_error": 0.01 * i, "val_error": 0.02} for i in range(3)],
                          "ensemble": {"test_error": 0.005, "val_error": 0.01}}}
    results = {"ecnn": [{"architecture": "8c3-p-32-10", "params": 501, "hidden_units": 41}, {}, {}], "old": [{}]}
    t = analysis.teachers(config, record, manifests, results, used=["ecnn[:2]", "ecnn", ""]).set_index("teacher")
    assert t.loc["ecnn[0]", "params"] == 501 and t.loc["ecnn[1]", "params"] == 500  # its result, else the record
    assert t.loc["ecnn", "params"] == 1501 and t.loc["ecnn", "hidden_units"] == 121
    assert t.loc["ecnn", "architecture"] == "3 x 8c3-p-32-10" and t.loc["ecnn", "test_error"] == 0.005
    assert t.loc["ecnn[:2]", "params"] == 1001 and np.isnan(t.loc["ecnn[:2]", "test_error"])  # not in a manifest
    assert t.loc["ecnn[2]", "test_error"] == 0.02
    assert np.isnan(t.loc["old", "params"]) and pd.isna(t.loc["old", "architecture"])  # nothing recorded: n/a


def test_teacher_quality_slope_and_interval_match_ols_by_hand():
    teachers = pd.DataFrame({"teacher": ["dnn", "ecnn[0]", "ecnn"], "test_error": [0.03, 0.02, 0.01]})
    # Three seeds per teacher; a better teacher gives a better student, except noise.
    errors = {"dnn": [0.040, 0.043, 0.041], "ecnn[0]": [0.031, 0.030, 0.034], "ecnn": [0.026, 0.025, 0.027]}
    frame = pd.DataFrame([row(1024, s, e, teacher=t) for t, es in errors.items() for s, e in enumerate(es)]
                         + [row(1024, 0, 0.05, target="labels", teacher="")])  # one teacher-free row: no fit
    (q,) = analysis.quality(frame, teachers).itertuples()
    x = np.repeat([0.03, 0.02, 0.01], 3)
    y = np.concatenate(list(errors.values()))
    ref = stats.linregress(x, y)
    t = stats.t.ppf(0.975, len(x) - 2)
    assert q.b == pytest.approx(ref.slope) and q.a == pytest.approx(ref.intercept)
    assert (q.b_lo, q.b_hi) == pytest.approx((ref.slope - t * ref.stderr, ref.slope + t * ref.stderr))
    assert q.teachers == ["ecnn", "ecnn[0]", "dnn"] and q.monotone and q.target == "mimic" and q.n == 9
    worse = frame.assign(test_error=np.where(frame["teacher"] == "ecnn", 0.035, frame["test_error"]))
    assert not analysis.quality(worse, teachers).iloc[0]["monotone"]  # the best teacher gave a worse student


def test_headline_means_paired_differences_and_intervals_by_hand():
    errors = {"mimic": [0.10, 0.12, 0.11], "labels-aug": [0.13, 0.13, 0.16], "labels": [0.20, 0.22, 0.21]}
    rows = [dict(arch="snn", hidden=16, bottleneck=np.nan, target=t, teacher="t" if t == "mimic" else "", seed=s,
                 test_error=e) for t, es in errors.items() for s, e in enumerate(es)]
    rows.append(dict(arch="snn", hidden=16, bottleneck=np.nan, target="mimic", teacher="other", seed=0, test_error=0.9))
    (h,) = analysis.headline(pd.DataFrame(rows), "t").to_dict("records")
    t = stats.t.ppf(0.975, 2)
    assert h["mimic"] == pytest.approx(0.11) and h["mimic_hi"] == pytest.approx(0.11 + t * 0.01 / math.sqrt(3))
    # Paired by seed: mimic - labels-aug = -0.03, -0.01, -0.05: mean -0.03, sample std 0.02.
    assert h["mimic-labels-aug"] == pytest.approx(-0.03)
    assert h["mimic-labels-aug_hi"] == pytest.approx(-0.03 + t * 0.02 / math.sqrt(3))  # above 0: within noise
    assert h["labels-aug-labels"] == pytest.approx(-0.07) and h["holds"]
    worse = pd.DataFrame([r | {"test_error": 0.5} if r["target"] == "mimic" else r for r in rows])
    assert not analysis.headline(worse, "t")["holds"].item()
