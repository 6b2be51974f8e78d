"""The report: every figure and table from a small handmade results directory, laid out as a sweep writes it
(results with their config, an invocation record, member results, cache manifests), and the facts it shows."""

import functools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from distill import analysis, models, report, results
from distill.__main__ import main, summary

SHAPE, D, C = (1, 28, 28), 784, 10  # mnist5k
CNN_ARGS = {"channels": [8], "hidden": [32], "kernel": 3}
ECNN_MEMBERS = [0.010, 0.012, 0.014, 0.016]
TEACHERS = [{"name": "ecnn", "arch": "cnn", "arch_args": CNN_ARGS, "members": 4},
            {"name": "dnn", "arch": "dnn", "arch_args": {"hidden": 64, "layers": 2}, "members": 1}]
CONFIG = {"name": "handmade", "data": {"name": "mnist5k"}, "student": {"arch": "snn", "arch_args": {}},
          "teachers": TEACHERS}


def facts(arch: str, **kw) -> dict:
    """What a sweep records of a net: its paper notation, #params and #hidden units (models.describe)."""
    return _facts(arch, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items())))


@functools.cache  # ~100 rows of a few sizes: each size is built once
def _facts(arch: str, kw: tuple) -> dict:
    model = models.build(arch, SHAPE, C, **dict(kw))
    architecture, units = models.describe(model, SHAPE)
    return {"architecture": architecture, "params": models.param_count(model), "hidden_units": units}


def trial(hidden, bottleneck, target, teacher, seed, test_error, val_error=0.05, status="ok", lr=1e-3):
    """One row as the sweep writes it (the columns the report reads, plus a few it ignores)."""
    return {"hidden": hidden, "bottleneck": np.nan if bottleneck is None else float(bottleneck), "target": target,
            "teacher": teacher, "seed": seed, "arch": "snn", "train.lr": lr, **facts("snn", hidden=hidden,
                                                                                     bottleneck=bottleneck),
            "val_error": val_error, "test_error": test_error, "epochs": 12, "best_epoch": 4 + seed,
            "train_seconds": hidden / 100 + seed, "test_agreement": 0.97, "status": status, "trial_dir": "t"}


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


def record(commit: str) -> dict:
    """A runs/*.json as record.build writes it."""
    return {"command": ["distill", "run", "sweeps/handmade.py"], "config": CONFIG, "code": {"commit": commit,
            "dirty": False}, "versions": {"torch": "2.x"}, "devices": {"cpus": 2, "cuda": []},
            "data": {"name": "mnist5k", "shape": list(SHAPE), "classes": C,
                     "sizes": {"train": 4500, "val": 500, "test": 1000}},
            "teachers": [{"name": t["name"], "members": t["members"], **facts(t["arch"], **t["arch_args"])}
                         for t in TEACHERS]}


@pytest.fixture
def results_dir(tmp_path):
    return make_results_dir(tmp_path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """(the directory, report.md's text) of the handmade run, written once: drawing the figures takes seconds."""
    root = make_results_dir(tmp_path_factory.mktemp("written"))
    return root, report.write(root).read_text()


def make_results_dir(tmp_path):
    """A results directory as a sweep writes it: the results with their manifest (and config), two invocation
    records (the newer wrote the results), each member's result and each teacher's cache manifest."""
    results.write(tmp_path, handmade_rows(), CONFIG)
    (tmp_path / "runs").mkdir()
    for name, commit in [("20240101T000000-old-1.json", "0ld0ld"), ("20240102T000000-host-2.json", "cafe1234")]:
        (tmp_path / "runs" / name).write_text(json.dumps(record(commit)))
    (tmp_path / "cache").mkdir()
    members = [{"index": i, "val_error": e + 0.002, "test_error": e} for i, e in enumerate(ECNN_MEMBERS)]
    for t, member_errors, ensemble in [(TEACHERS[0], members, 0.009), (TEACHERS[1], [members[0] | {"test_error": 0.03}],
                                                                        0.03)]:
        manifest = {"teacher": t["name"], "members": member_errors,
                    "ensemble": {"val_error": 0.02, "test_error": ensemble}}
        (tmp_path / "cache" / f"{t['name']}.json").write_text(json.dumps(manifest))
        for m in member_errors:
            member = tmp_path / "teachers" / t["name"] / f"member-{m['index']}"
            member.mkdir(parents=True)
            (member / "result.json").write_text(json.dumps({"index": m["index"], "teacher": t, **m,
                                                            **facts(t["arch"], **t["arch_args"])}))
    return tmp_path


def test_load_reads_teacher_facts_from_member_results_and_errors_from_manifests(results_dir):
    run = analysis.load(results_dir)
    t = run.teachers.set_index("teacher")
    assert run.record["code"]["commit"] == "cafe1234" and run.config == CONFIG  # the newest record
    assert list(t.loc[[f"ecnn[{i}]" for i in range(4)], "test_error"]) == ECNN_MEMBERS
    assert t.loc["ecnn", "kind"] == "ensemble" and t.loc["ecnn", "test_error"] == 0.009
    assert t.loc["ecnn[0]", "params"] == 50_618 and t.loc["ecnn", "params"] == 4 * 50_618
    assert t.loc["ecnn[0]", "hidden_units"] == 8 * 28 * 28 + 32  # conv ReLU maps + fc units
    assert t.loc["ecnn[0]", "architecture"] == "8c3-p-32-10" and t.loc["ecnn", "architecture"] == "4 x 8c3-p-32-10"
    assert t.loc["dnn", "params"] == 784 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    assert t.loc["ecnn[:2]", "params"] == 2 * 50_618 and np.isnan(t.loc["ecnn[:2]", "test_error"])  # not in a manifest


def test_tables_have_the_papers_columns_and_exact_numbers(results_dir):
    run = analysis.load(results_dir)
    text = report.tables(analysis.select(run.trials), run.teachers)
    assert "| Model | Architecture | # Param. | # Hidden units | Error % (mean ± std, n) |" in text
    # mean 2.8667 %, sample std 0.4619 %, 3 seeds
    assert "| SNN-1k | 784-1000-10 | 795,010 | 1,000 | 2.87 ± 0.46 (3) |" in text
    assert "| CNN (each member) | 8c3-p-32-10 | 50,618 | 6,304 | 1.30 ± 0.26 (4) |" in text
    assert "| ECNN | ensemble of 4 CNNs | 202,472 | 25,216 | 0.90 (1) |" in text
    assert "| DNN | 784-64-64-10 | 55,050 | 128 | 3.00 (1) |" in text
    assert "| ECNN[:2] | ensemble of 2 CNNs | 101,236 | 12,608 | n/a |" in text
    assert "| SNN-ECNN-MIMIC-100 | 784-32L-100-10 |" in text and "| SNN-ECNN-KD-1k | 784-1000-10 |" in text
    assert text.count("| SNN-1k | 784-1000-10 |") == 1  # the label-trained students once, before every teacher
    # The paper's CIFAR-10 student: its architecture in its name, not an "SNN" of the same width.
    assert report.model_name("mimic", "ecnn", 30_000, "conv_snn") == "CONV-SNN-ECNN-MIMIC-30k"
    assert text.index("SNN-1k-AUG") < text.index("| ECNN |") < text.index("SNN-ECNN-KD") < text.index("SNN-ECNN-MIMIC")


def test_one_member_as_teacher(results_dir):
    teachers = analysis.load(results_dir).teachers
    assert report.teacher_rows(teachers, "ecnn[2]") == ["| CNN (ecnn[2]) | 8c3-p-32-10 | 50,618 | 6,304 | 1.40 (1) |"]


def test_write_builds_every_figure_and_the_report(written):
    results_dir, text = written
    pngs = ["capacity-dnn.png", "capacity-ecnn.png", "capacity-ecnn-2.png", "teacher-quality.png", "bottleneck.png"]
    for name in pngs:
        data = (results_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        assert f"]({name})" in text  # a relative link: renders on a code-hosting site
    assert text.startswith("# Report: sweep `handmade` on mnist5k")
    assert "python -m distill report" in text and "2.87 ± 0.46 (3)" in text
    assert "commit cafe1234" in text and "input (1, 28, 28), 10 classes, train/val/test 4,500/500/1,000" in text
    assert "**extrapolated**" in text and "is an **extrapolation** beyond the measured" in text


def test_the_report_shows_the_fit_with_its_intervals_and_the_size_to_match_with_its_interval(written):
    results_dir, text = written
    frame = analysis.select(results.load(results_dir))
    fit = analysis.fit(frame, "mimic", "ecnn")
    # seeds add 0, 0.1, 0.2 points at every size: slope -1.5 points per decade exactly, with a residual spread
    assert fit["b"] == pytest.approx(-0.015) and fit["n"] == 12 and fit["b_lo"] < fit["b"] < fit["b_hi"]
    ci = f"{100 * fit['b']:.2f} ({100 * fit['b_lo']:.2f} to {100 * fit['b_hi']:.2f})"
    assert "| mimic (L2 on logits) | 4 | 12 | " in text and ci in text
    match = analysis.match(fit, 0.009)
    assert match["lo"] < match["params"] < match["hi"]
    assert f"{report.human(match['params'])} (95% interval {report.human(match['lo'])}–{report.human(match['hi'])}; " \
           "**extrapolated**" in text
    assert "Fieller" in text and "t distribution" in text  # the method is stated


def test_a_data_set_the_report_never_heard_of_shows_the_teachers_architectures(results_dir):
    results.write(results_dir, handmade_rows(), CONFIG | {"data": {"name": "timit"}})  # not in any table of sizes
    run = analysis.load(results_dir)
    text = report.tables(analysis.select(run.trials), run.teachers)
    assert "| CNN (each member) | 8c3-p-32-10 | 50,618 | 6,304 |" in text and "| DNN | 784-64-64-10 | 55,050 |" in text


def test_facts_an_older_run_did_not_record_are_na_not_guessed(results_dir):
    for member in (results_dir / "teachers").glob("*/member-*/result.json"):
        old = json.loads(member.read_text())
        member.write_text(json.dumps({k: v for k, v in old.items() if k not in ("architecture", "params",
                                                                                  "hidden_units")}))
    teachers = analysis.load(results_dir).teachers.set_index("teacher")
    assert teachers.loc["ecnn[0]", "params"] == 50_618  # the record's facts stand in
    for path in (results_dir / "runs").glob("*.json"):
        path.unlink()
    rows = [{k: v for k, v in r.items() if k not in ("architecture", "hidden_units")} for r in handmade_rows()]
    results.write(results_dir, rows, CONFIG)
    run = analysis.load(results_dir)
    text = report.tables(analysis.select(run.trials), run.teachers)
    assert "| CNN (each member) | n/a | n/a | n/a | 1.30 ± 0.26 (4) |" in text
    assert "| SNN-1k | n/a | 795,010 | n/a | 2.87 ± 0.46 (3) |" in text
    assert report.provenance(run).startswith("No invocation record")


def test_figures_accept_a_single_teacher_and_no_bottleneck(tmp_path):
    frame = pd.DataFrame([trial(h, None, "mimic", "ecnn", s, 0.1 - 0.01 * math.log10(h)) for h in (10, 100)
                          for s in range(2)])
    teachers = pd.DataFrame([{"teacher": "ecnn", "base": "ecnn", "kind": "ensemble", "members": 1, "index": np.nan,
                              "test_error": 0.02, "params": 1e6, "hidden_units": 100, "arch": "cnn"}])
    for figure in (report.capacity_figure(frame, teachers, "ecnn", tmp_path / "c.png"),
                   report.teacher_quality_figure(frame, teachers, tmp_path / "q.png"),
                   report.bottleneck_figure(frame, tmp_path / "b.png", input_dim=D)):
        assert len(figure.read_bytes()) > 10_000


@pytest.mark.parametrize("damaged", ["results.parquet", "results.json", "cache/ecnn.json",
                                     "runs/20240102T000000-host-2.json", "teachers/ecnn/member-1/result.json"])
def test_the_report_command_on_a_damaged_file_says_so_in_one_line(results_dir, capsys, damaged):
    (results_dir / damaged).write_bytes(b"\x00garbage")
    assert main(["report", str(results_dir)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("distill: error: ") and err.count("\n") == 1 and damaged in err
    assert "Traceback" not in out + err and not (results_dir / "report.md").exists()


def test_a_report_of_results_without_manifest_has_no_config(results_dir):
    (results_dir / "results.json").unlink()  # a sweep from before the manifest: the report goes on without it
    assert report.write(results_dir).read_text().startswith(f"# Report: sweep `{results_dir.name}` on unknown data")


def test_the_console_summary_is_the_cells_of_the_selected_trials():
    text = summary(pd.DataFrame(handmade_rows()))
    head = text.splitlines()[0].split()
    assert head[:4] == ["params", "test_error", "sd", "n"] and "agreement" in head and "per" not in head  # images
    # labels at H=1000 without bottleneck: 2.87 ± 0.46 % over 3 seeds; the worse-val trial (0.001) is not averaged in
    assert re.search(r"\n\s+1000\s+0\s+795010\s+0\.0287\s+0\.0046\s+3\s", text)
    assert summary(pd.DataFrame([trial(10, None, "labels", "", 0, np.nan, status="failed")])) == "no trial finished"


def test_the_report_compares_mimic_with_both_label_baselines_per_shape(written):
    _, text = written
    section = text[text.index("## Mimic against labels"):text.index("## Tables")]
    assert "mimicking `ecnn`" in section and "| mimic < labels-aug < labels |" in section
    # H=1000 without bottleneck: mimic 8.6-8.8 % < labels-aug 10.6-10.8 % < labels 2.6/2.6/3.4 %: does not hold.
    assert "- snn H=1000: **mimic < labels-aug < labels does not hold**" in section
