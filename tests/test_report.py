"""The report: every figure and table from a small handmade results directory, the table's numbers and the fit."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from distill import models, report, results
from distill.__main__ import main

D, C = 784, 10  # mnist5k
CNN_ARGS = {"channels": [8], "hidden": [32], "kernel": 3}
ECNN_MEMBERS = [0.010, 0.012, 0.014, 0.016]


def trial(hidden, bottleneck, target, teacher, seed, test_error, val_error=0.05, status="ok", lr=1e-3):
    """One row as the sweep writes it (the columns the report reads, plus a few it ignores)."""
    return {"hidden": hidden, "bottleneck": np.nan if bottleneck is None else float(bottleneck), "target": target,
            "teacher": teacher, "seed": seed, "arch": "snn", "train.lr": lr,
            "params": models.snn_params(D, hidden, C, bottleneck), "val_error": val_error, "test_error": test_error,
            "epochs": 12, "best_epoch": 4 + seed, "train_seconds": hidden / 100 + seed, "test_agreement": 0.97,
            "status": status, "trial_id": "t"}


def handmade_rows() -> list[dict]:
    """Two widths with and without a bottleneck, four targets, two teachers and a sub-ensemble, three seeds;
    a failed trial and an Optuna cell with two trials (the lower val error must win, not the lower test error)."""
    rows = []
    for hidden, k in [(100, None), (1000, None), (100, 32), (1000, 32)]:
        for seed in range(3):
            size = math.log10(models.snn_params(D, hidden, C, k))
            for target, teacher, base in [("mimic", "ecnn", 0.10), ("mimic", "dnn", 0.11), ("kd", "ecnn", 0.11),
                                          ("mimic", "ecnn[:2]", 0.105), ("labels", "", 0.14),
                                          ("labels-aug", "", 0.12)]:
                rows.append(trial(hidden, k, target, teacher, seed, base - 0.015 * size + 0.001 * seed))
    # the hand-checked cell: labels at H=1000 without bottleneck, test errors 2.6, 2.6, 3.4 %
    rows = [r for r in rows if not (r["target"] == "labels" and r["hidden"] == 1000 and np.isnan(r["bottleneck"]))]
    rows += [trial(1000, None, "labels", "", s, e) for s, e in enumerate([0.026, 0.026, 0.034])]
    rows.append(trial(1000, None, "labels", "", 0, 0.001, val_error=0.9, lr=0.1))  # worse val, better test: not chosen
    rows.append(trial(1000, None, "labels", "", 1, np.nan, val_error=np.nan, status="failed"))
    return rows


@pytest.fixture
def results_dir(tmp_path):
    return make_results_dir(tmp_path)


def make_results_dir(tmp_path):
    """A results directory as a sweep writes it: the results with their manifest (and config), teacher manifests."""
    config = {"name": "handmade", "data": {"name": "mnist5k"}, "student": {"arch": "snn", "arch_args": {}},
              "teachers": [{"name": "ecnn", "arch": "cnn", "arch_args": CNN_ARGS, "members": 4},
                           {"name": "dnn", "arch": "dnn", "arch_args": {"hidden": 64, "layers": 2}, "members": 1}]}
    results.write(tmp_path, handmade_rows(), config)
    (tmp_path / "cache").mkdir()
    members = [{"index": i, "val_error": e + 0.002, "test_error": e} for i, e in enumerate(ECNN_MEMBERS)]
    for name, member_errors, ensemble in [("ecnn", members, 0.009), ("dnn", [members[0] | {"test_error": 0.03}], 0.03)]:
        manifest = {"teacher": name, "members": member_errors, "ensemble": {"val_error": 0.02, "test_error": ensemble}}
        (tmp_path / "cache" / f"{name}.json").write_text(json.dumps(manifest))
    return tmp_path


def test_select_keeps_the_lowest_val_error_of_each_cell_and_only_finished_trials():
    frame = report.select(pd.DataFrame(handmade_rows()))
    cell = frame[(frame["target"] == "labels") & (frame["hidden"] == 1000) & frame["bottleneck"].isna()]
    assert sorted(cell["test_error"]) == [0.026, 0.026, 0.034]  # not the 0.001 of the worse-val trial
    assert (frame["status"] == "ok").all()
    assert len(frame) == len(frame.drop_duplicates(report.CELL))


def test_teacher_errors_reads_manifests_and_counts_params(results_dir):
    t = report.teacher_errors(results_dir).set_index("teacher")
    cnn = models.param_count(models.cnn((1, 28, 28), C, **CNN_ARGS))
    assert list(t.loc[[f"ecnn[{i}]" for i in range(4)], "test_error"]) == ECNN_MEMBERS
    assert t.loc["ecnn", "kind"] == "ensemble" and t.loc["ecnn", "test_error"] == 0.009
    assert t.loc["ecnn[0]", "params"] == cnn and t.loc["ecnn", "params"] == 4 * cnn
    assert t.loc["ecnn[0]", "hidden_units"] == 8 * 28 * 28 + 32  # conv ReLU maps + fc units
    assert t.loc["ecnn[0]", "architecture"] == "8c3-p-32-10"
    assert t.loc["dnn", "params"] == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert t.loc["ecnn[:2]", "params"] == 2 * cnn and np.isnan(t.loc["ecnn[:2]", "test_error"])  # not in a manifest


def test_tables_have_the_papers_columns_and_exact_numbers(results_dir):
    frame = report.select(results.load(results_dir))
    text = report.tables(frame, report.teacher_errors(results_dir), (1, 28, 28), C)
    assert "| Model | Architecture | # Param. | # Hidden units | Error % (mean ± std, n) |" in text
    # mean 2.8667 %, sample std 0.4619 %, 3 seeds
    assert "| SNN-1k | 784-1000-10 | 795,010 | 1,000 | 2.87 ± 0.46 (3) |" in text
    assert "| CNN (each member) | 8c3-p-32-10 | 50,618 | 6,304 | 1.30 ± 0.26 (4) |" in text
    assert "| ECNN | ensemble of 4 CNNs | 202,472 | 25,216 | 0.90 (1) |" in text
    assert "| DNN | 784-64-64-10 | 55,050 | 128 | 3.00 (1) |" in text
    assert "| ECNN[:2] | ensemble of 2 CNNs | 101,236 | 12,608 | n/a |" in text
    assert "| SNN-ECNN-MIMIC-100 | 784-32L-100-10 |" in text and "| SNN-ECNN-KD-1k | 784-1000-10 |" in text
    assert text.count("| SNN-1k | 784-1000-10 |") == 1  # the label-trained students once, before every teacher
    assert text.index("SNN-1k-AUG") < text.index("| ECNN |") < text.index("SNN-ECNN-KD") < text.index("SNN-ECNN-MIMIC")


def test_one_member_as_teacher_and_paper_architectures(results_dir):
    teachers = report.teacher_errors(results_dir)
    assert report.teacher_rows(teachers, "ecnn[2]") == ["| CNN (ecnn[2]) | 8c3-p-32-10 | 50,618 | 6,304 | 1.40 (1) |"]
    # the paper's CIFAR-10 student 128c-p-1200L-30k: conv ReLU maps + wide layer count, the linear 1200L does not
    assert report.describe("conv_snn", (3, 32, 32), 10, hidden=30000, bottleneck=1200) == (
        "128c5-p-1200L-30000-10", 128 * 32 * 32 + 30000)
    assert report.describe("dnn") == ("2000-2000-2000", 6000)  # no data set known: sizes of the hidden layers only


def exact(hidden_sizes, a=0.1, b=-0.02, target="mimic"):
    rows = [trial(h, None, target, "ecnn", s, 0) for h in hidden_sizes for s in range(2)]
    return pd.DataFrame([r | {"test_error": a + b * math.log10(r["params"])} for r in rows])


def test_fit_recovers_the_line_and_the_size_that_matches_the_teacher():
    frame = exact([10, 100, 1000])
    fit = report.fit_family(frame, "mimic", "ecnn")
    assert fit["a"] == pytest.approx(0.1) and fit["b"] == pytest.approx(-0.02) and fit["rmse"] < 1e-12
    assert fit["cells"] == 3 and fit["params_min"] == models.snn_params(D, 10, C)
    inside = models.snn_params(D, 300, C)
    match = report.match_size(fit, 0.1 - 0.02 * math.log10(inside))
    assert match["params"] == pytest.approx(inside) and match["extrapolated"] is False
    match = report.match_size(fit, 0.1 - 0.02 * 7)
    assert match["params"] == pytest.approx(1e7) and match["extrapolated"] is True
    assert report.match_size(fit, np.nan)["params"] is None


def test_a_fit_that_does_not_fall_with_size_never_matches():
    fit = report.fit_family(exact([10, 100], a=0.01, b=0.02), "mimic")
    assert fit["b"] == pytest.approx(0.02)
    match = report.match_size(fit, 0.001)
    assert match["params"] is None and match["extrapolated"] is False and "does not fall" in match["reason"]
    one = report.fit_family(exact([10]), "mimic")
    assert np.isnan(one["b"]) and report.match_size(one, 0.01)["params"] is None


def test_write_builds_every_figure_and_the_report(results_dir):
    path = report.write(results_dir)
    text = path.read_text()
    pngs = ["capacity-dnn.png", "capacity-ecnn.png", "capacity-ecnn-2.png", "teacher-quality.png", "bottleneck.png"]
    for name in pngs:
        data = (results_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert f"]({name})" in text  # a relative link: renders on a code-hosting site
    assert text.startswith("# Report: sweep `handmade` on mnist5k")
    assert "python -m distill report" in text and "2.87 ± 0.46 (3)" in text
    assert "**extrapolated**" in text and "is an **extrapolation** beyond the measured" in text


def test_figures_accept_a_single_teacher_and_no_bottleneck(tmp_path):
    frame = exact([10, 100])
    teachers = pd.DataFrame([{"teacher": "ecnn", "base": "ecnn", "kind": "ensemble", "members": 1, "index": np.nan,
                              "test_error": 0.02, "params": 1e6, "hidden_units": 100, "arch": "cnn"}])
    for figure in (report.capacity_figure(frame, teachers, "ecnn", tmp_path / "c.png"),
                   report.teacher_quality_figure(frame, teachers, tmp_path / "q.png"),
                   report.bottleneck_figure(frame, tmp_path / "b.png", input_dim=D)):
        assert len(figure.read_bytes()) > 10_000


@pytest.mark.parametrize("damaged", ["results.parquet", "results.json", "cache/ecnn.json"])
def test_the_report_command_on_a_damaged_file_says_so_in_one_line(results_dir, capsys, damaged):
    (results_dir / damaged).write_bytes(b"\x00garbage")
    assert main(["report", str(results_dir)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("distill: error: ") and err.count("\n") == 1 and damaged in err
    assert "Traceback" not in out + err and not (results_dir / "report.md").exists()


def test_a_report_of_results_without_manifest_has_no_config(results_dir):
    (results_dir / "results.json").unlink()  # a sweep from before the manifest: the report goes on without it
    assert report.write(results_dir).read_text().startswith(f"# Report: sweep `{results_dir.name}` on unknown data")
