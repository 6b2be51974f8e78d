"""`--mlflow`: a tiny sweep through Ray Tune logged to a local MLflow file store, read back with MLflow's client."""

import json

import pytest

from distill import files, results
from distill.__main__ import main

mlflow = pytest.importorskip("mlflow")

SWEEP = """
from distill.config import DataConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig


def get_config(variant):
    return SweepConfig(name="tracked", data=DataConfig(name="digits", val_size=200, views=0), hidden=(16, 32),
                       targets=("labels",), student_teachers=(),
                       student=StudentConfig(hidden=16, train=TrainConfig(lr=0.05, batch_size=64, epochs=3)))
"""


def test_every_trial_and_the_run_record_reach_mlflow(ray_local, tmp_path, capsys):
    (tmp_path / "tracked.py").write_text(SWEEP)
    store = tmp_path / "mlruns"
    assert main(["sweep", str(tmp_path / "tracked.py"), "--storage", str(tmp_path / "results"),
                 "--mlflow", str(store)]) == 0
    console = capsys.readouterr()
    root = files.location(tmp_path / "results" / "tracked")
    frame = results.load(root)
    client = mlflow.MlflowClient(store.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])  # the sweep's name
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = {r.data.tags["trial_dir"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(runs) == 3 and sorted(trials) == sorted(frame["trial_dir"])

    for _, row in frame.iterrows():
        run = trials[row["trial_dir"]]
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "ok"
        params = run.data.params  # the trial's resolved settings, as the row's settings columns
        assert (params["hidden"], params["target"], params["train.lr"], params["seed"]) == (
            str(row["hidden"]), "labels", "0.05", "0")
        history = client.get_metric_history(run.info.run_id, "val_error")  # one point per epoch, step = epoch
        assert sorted(m.step for m in history) == list(range(1, row["epochs"] + 1))
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == row["epochs"]
        # The row (row.json, which Tune never sees): its scores as metrics, the file as an artifact.
        assert run.data.metrics["test_error"] == pytest.approx(row["test_error"])
        assert run.data.metrics["best_val_error"] == pytest.approx(row["val_error"]) == min(m.value for m in history)
        assert run.data.metrics["params"] == row["params"] and run.data.tags["model_sha256"] == row["model_sha256"]
        logged = client.download_artifacts(run.info.run_id, "row.json", str(tmp_path))
        assert json.load(open(logged)) == files.read_json(files.location(row["trial_dir"]) / "row.json")

    # The parent run is the invocation: its run record as an artifact, its command and commit as tags.
    (record,) = (root / "runs").glob("*.json")
    assert parent.info.run_name == record.name.removesuffix(".json") and parent.info.status == "FINISHED"
    assert parent.data.tags["distill.command"].startswith("distill sweep")
    logged = client.download_artifacts(parent.info.run_id, f"record/{record.name}", str(tmp_path))
    assert json.load(open(logged)) == files.read_json(record)
    # Quiet: nothing of MLflow's on the console.
    text = console.out + console.err
    assert "mlflow" not in text.lower() and "warning" not in text.lower() and "Traceback" not in text


def test_mlflow_is_refused_where_it_cannot_work(tmp_path, capsys):
    run = ["run", "sweeps/demo.py", "--variant", "smoke", "--storage", str(tmp_path)]
    # No Ray Tune, no Tune callback: refused in one line before any work.
    assert main([*run, "--local", "--mlflow", str(tmp_path / "mlruns")]) == 2
    assert "drop --local" in capsys.readouterr().err
    # Credentials in the URI would be written into every run record.
    assert main([*run, "--mlflow", "http://me:secret@127.0.0.1:5000"]) == 2
    assert "MLFLOW_TRACKING_PASSWORD" in capsys.readouterr().err
    # A server that is not there: one line, at once.
    assert main([*run, "--mlflow", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distill: error: --mlflow http://127.0.0.1:9 cannot be used") and err.count("\n") == 1
    assert not (tmp_path / "demo-smoke" / "runs").exists()  # nothing was written
