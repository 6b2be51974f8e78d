"""The results table: written with a manifest that commits it, refused with one line when damaged."""

import json

import numpy as np
import pandas as pd
import pytest

from distill import files, results
from distill.errors import UserError

CONFIG = {"name": "tiny", "data": {"name": "mnist5k"}, "teachers": [{"name": "ecnn", "arch": "cnn", "members": 2}]}


def rows() -> list[dict]:
    return [{"status": "ok", "target": "mimic", "hidden": h, "bottleneck": np.nan, "teacher": "ecnn", "seed": s,
             "val_error": 0.1, "test_error": 0.1 + s / 100, "params": 10 * h} for h in (10, 20) for s in range(2)]


def test_write_and_load_round_trip_with_the_manifest(storage):
    root = files.location(storage)
    frame = results.write(root, rows(), CONFIG)
    pd.testing.assert_frame_equal(results.load(root), frame)
    pd.testing.assert_frame_equal(results.load(root / "results.csv"), frame)
    manifest = files.read_json(root / "results.json")
    assert manifest["rows"] == 4 and manifest["config"] == CONFIG == results.config(root)
    assert manifest["files"] == {n: files.sha256((root / n).read_bytes()) for n in ("results.parquet", "results.csv")}


def test_a_table_without_manifest_loads_and_has_no_config(tmp_path):
    results.write(tmp_path, rows(), CONFIG)
    (tmp_path / "results.json").unlink()  # as sweeps wrote before the manifest existed
    assert len(results.load(tmp_path)) == 4 and results.config(tmp_path) == {}


def test_a_sweep_whose_trials_all_failed_still_has_every_column(tmp_path):
    results.write(tmp_path, [{"hidden": 10, "bottleneck": None, "target": "mimic", "teacher": "ecnn", "seed": 0,
                              "status": "failed", "reason": "diverged"}], CONFIG)
    frame = results.load(tmp_path)
    assert set(results.COLUMNS) <= set(frame) and frame["test_error"].isna().all()


def test_a_file_replaced_after_the_manifest_is_refused(tmp_path):
    results.write(tmp_path, rows(), CONFIG)
    results.load(tmp_path / "results.csv")
    (tmp_path / "results.csv").write_text(pd.DataFrame(rows()[:2]).to_csv(index=False))  # an older run's file
    with pytest.raises(UserError, match="results.csv does not match results.json: an interrupted write; run the "
                                        "sweep command again"):
        results.load(tmp_path / "results.csv")
    assert len(results.load(tmp_path)) == 4  # the parquet still matches


@pytest.mark.parametrize("damage", [lambda b: b"garbage" * 100, lambda b: b[: len(b) // 2], lambda b: b""])
def test_a_damaged_parquet_is_one_line_naming_it(tmp_path, damage):
    results.write(tmp_path, rows(), CONFIG)
    parquet = tmp_path / "results.parquet"
    parquet.write_bytes(damage(parquet.read_bytes()))
    with pytest.raises(UserError, match="results.parquet does not match results.json"):
        results.load(tmp_path)
    (tmp_path / "results.json").unlink()  # without a manifest to catch it, reading it fails
    with pytest.raises(UserError, match=r"results.parquet is not a readable results table \(.*\): it was damaged") \
            as e:
        results.load(tmp_path)
    assert "\n" not in str(e.value)


def test_a_table_without_the_columns_of_results_is_refused_by_name(tmp_path):
    pd.DataFrame(rows()).drop(columns=["test_error", "seed"]).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(UserError, match="results.parquet lacks the column.s. seed, test_error of a results table"):
        results.load(tmp_path)
    (tmp_path / "results.csv").write_bytes(b"\x00\x01garbage\n1,2\n")
    with pytest.raises(UserError, match="results.csv (lacks|is not a readable)"):
        results.load(tmp_path / "results.csv")


@pytest.mark.parametrize("text", ["{", "[]", json.dumps({"rows": 4, "files": {}})])
def test_a_damaged_manifest_is_one_line(tmp_path, text):
    results.write(tmp_path, rows(), CONFIG)
    (tmp_path / "results.json").write_text(text)
    for read in (results.load, results.config):
        with pytest.raises(UserError, match="results.json is not") as e:
            read(tmp_path)
        assert "\n" not in str(e.value)
