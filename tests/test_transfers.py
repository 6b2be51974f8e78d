"""Transfer-set size as a grid axis (`DataConfig.transfers`): each recipe's students learn on the train inputs and
v augmented views of each, from the teacher's logits on exactly those inputs; the teachers train on their own
views only; the report has a row per recipe, and the gap each recovers is checked by hand. The pipeline runs
in-process (no Ray): about 15 s."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from distill import analysis, cache, data, experiment, local, pipeline, report
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig, validate
from distill.errors import UserError
from distill.train import TrainConfig, infer

TEACHER = TeacherConfig(name="t", arch="cnn", arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
SWEEP = SweepConfig(name="tr", data=DataConfig(name="digits", val_size=200, views=1, transfers=(0, 2)),
                    teachers=(TEACHER,), hidden=(16,), targets=("mimic", "labels-aug", "labels"),
                    student_teachers=("t",), seeds=(0, 1),
                    student=StudentConfig(hidden=16, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=2)))


def test_a_smaller_recipe_is_the_start_of_a_larger_one_exactly():
    splits, _ = experiment.prepare(DataConfig(name="digits", val_size=200, views=0))
    big, small = data.transfer_set(splits, 3), data.transfer_set(splits, 2)
    part = big.recipe(2)
    assert torch.equal(part.x.stored, small.x.stored) and torch.equal(part.source, small.source)
    assert part.views == 2 and len(big.recipe(0).x) == len(splits.train_x)
    with pytest.raises(UserError, match="list it in DataConfig.transfers"):
        small.recipe(3)


def test_cells_run_on_every_recipe_but_train_input_students_once():
    cells = SWEEP.cells()
    views = sorted((c.target, c.transfer_views, c.train.seed) for c in cells if c.target != "labels")
    assert views == sorted((t, v, s) for t in ("mimic", "labels-aug") for v in (0, 2) for s in (0, 1))
    assert [c.transfer_views for c in cells if c.target == "labels"] == [None, None]
    assert dataclasses.replace(SWEEP.data, transfers=()).student_views() == (1,)
    for bad, message in (((0, 0), "has 0 twice"), ((-1,), "views >= 0 each")):
        with pytest.raises(UserError, match=message):
            validate(dataclasses.replace(SWEEP, data=dataclasses.replace(SWEEP.data, transfers=bad)))


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("tr") / "tr"
    splits, transfer = experiment.prepare(SWEEP.data)
    executor = local.Executor(SWEEP, root, splits, transfer, print)
    pipeline.teachers(SWEEP, root, executor, print)
    return root, splits, transfer, pipeline.students(SWEEP, root, executor, print)


def test_each_recipe_learns_from_the_teachers_logits_on_its_own_inputs(swept):
    root, splits, transfer, frame = swept
    n = len(splits.train_x)
    assert transfer.views == 2 and transfer.teacher_views == 1  # the largest recipe is harvested
    member = cache.member_result(root, SWEEP.data, TEACHER, 0)[0]
    assert member["identity"]["data"]["views"] == 1 and "transfers" not in member["identity"]["data"]
    x, y, _ = experiment.member_task(TEACHER, 0, splits, transfer)
    assert len(x) == len(y) == 2 * n  # the teachers train on their own view only
    model = cache.load_member(root, TEACHER, 0, splits)
    harvested = cache.mean_logits(root, SWEEP.data, TEACHER, [0], "transfer")
    for views in (0, 2):
        own = data.transfer_set(splits, views)  # the recipe built on its own
        cell = next(c for c in SWEEP.cells() if c.target == "mimic" and c.transfer_views == views)
        xs, target, _ = experiment.student_task(cell, splits, transfer, harvested)
        assert torch.equal(target, harvested[:len(own.source)]) and len(xs) == (1 + views) * n
        assert torch.allclose(target.float(), infer(model, own.x).half().float(), atol=1e-2)
    ok = frame[frame["status"] == "ok"]
    sizes = ok.fillna({"transfer_views": -1}).groupby(["target", "transfer_views"])["transfer_size"].agg(
        ["first", "count"])
    assert sizes.to_dict("index") == {("labels", -1): {"first": n, "count": 2},
                                      ("labels-aug", 0): {"first": n, "count": 2},
                                      ("labels-aug", 2): {"first": 3 * n, "count": 2},
                                      ("mimic", 0): {"first": n, "count": 2},
                                      ("mimic", 2): {"first": 3 * n, "count": 2}}


def test_the_report_has_a_row_per_recipe_and_the_figure(swept):
    root = swept[0]
    text = report.write(root).read_text()
    section = text.split("## Transfer-set size")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| snn H=16")]
    assert [r.split("|")[2].strip() for r in rows] == ["0", "2"]
    assert "the logits add" in section and (root / "transfer.png").exists()
    assert "On the largest transfer set (2 augmented views" in text


def test_gap_recovered_against_both_baselines_by_hand():
    # H=8, one recipe, two seeds; the teacher's test error is 0.02.
    rows = [dict(target=t, teacher=te, arch="snn", hidden=8, bottleneck=np.nan, transfer_views=v, seed=s,
                 test_error=e, transfer_size=n, test_agreement=0.9)
            for t, te, v, n, errs in (("labels", "", np.nan, 100, (0.10, 0.12)),
                                      ("labels-aug", "", 3.0, 400, (0.06, 0.05)),
                                      ("mimic", "t", 3.0, 400, (0.04, 0.035)))
            for s, e in enumerate(errs)]
    teachers = pd.DataFrame([dict(teacher="t", test_error=0.02)])
    g = analysis.gaps(pd.DataFrame(rows), teachers, "t").iloc[0]
    labels = np.array([(0.10 - 0.04) / (0.10 - 0.02), (0.12 - 0.035) / (0.12 - 0.02)])  # 0.75, 0.85
    aug = np.array([(0.06 - 0.04) / (0.06 - 0.02), (0.05 - 0.035) / (0.05 - 0.02)])  # 0.5, 0.5: no spread
    t = 12.706204736  # t(0.975, 1 degree of freedom)
    assert g["gap_labels"] == pytest.approx(0.8) and g["gap_aug"] == pytest.approx(0.5)
    half = t * labels.std(ddof=1) / np.sqrt(2)
    assert (g["gap_labels_lo"], g["gap_labels_hi"]) == pytest.approx((0.8 - half, 0.8 + half))
    assert (g["gap_aug_lo"], g["gap_aug_hi"]) == pytest.approx((aug.mean(), aug.mean()))
    diff = np.array([0.02, 0.015])
    assert g["logits_add"] == pytest.approx(0.0175)
    assert g["logits_add_hi"] - g["logits_add"] == pytest.approx(t * diff.std(ddof=1) / np.sqrt(2))
    assert (g["inputs"], g["agreement"], g["teacher_error"]) == (400, pytest.approx(0.9), 0.02)
    # Seed 0's labels-aug as good as the teacher (0.02): no gap to recover, so that share is n/a, not an infinite
    # ratio (0.01 / 0); the share against labels, whose baseline is worse than the teacher, is still a number.
    rows[2]["test_error"], rows[4]["test_error"] = 0.02, 0.03
    g = analysis.gaps(pd.DataFrame(rows), teachers, "t").iloc[0]
    assert np.isnan(g["gap_aug"]) and g["gap_labels"] == pytest.approx(((0.10 - 0.03) / 0.08 + 0.85) / 2)


def test_a_trial_gets_only_its_recipes_inputs_and_logits_from_the_store():
    from distill import ray_shared

    splits, transfer = experiment.prepare(SWEEP.data)
    payload = ray_shared.pack(splits, transfer)
    n = len(splits.train_x)
    for views in (0, 2, None):
        _, got = ray_shared.get(payload, "cpu", views)
        want = transfer if views is None else transfer.recipe(views)
        assert len(got.x) == len(want.x) and torch.equal(got.x[:], want.x[:]) and torch.equal(got.source, want.source)
    logits = torch.arange(3 * n * 2, dtype=torch.float16).reshape(3 * n, 2)
    refs = {("t", "transfer"): logits.numpy(), ("t", "test"): logits[:5].numpy()}
    got = ray_shared.get_logits(refs, [("t", "transfer"), ("t", "test")], "cpu", rows=n)
    assert torch.equal(got["t", "transfer"], logits[:n]) and len(got["t", "test"]) == 5


def test_the_protocol_table_tells_the_recipes_searched_apart():
    # One search per recipe: without its views column the three mimic rows of a shape would read alike.
    choice = dict(target="mimic", teacher="t", arch="snn", hidden=16, bottleneck=None, seed=0, samples=3,
                  settings={"lr": 0.001}, val_error=0.05)
    lines = report.protocol_section([choice | {"transfer_views": 0}, choice | {"transfer_views": 2},
                                     choice | {"target": "labels", "teacher": "", "transfer_views": None}])
    rows = [line.split(" | ")[2] for line in lines if line.startswith("| mimic") or line.startswith("| labels")]
    assert rows == ["0", "2", "n/a"]
