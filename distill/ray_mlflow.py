"""`--mlflow URI`: the student sweep tracked in MLflow, through Ray's MLflow integration (a Tune callback).

- One MLflow experiment per sweep, named as the sweep (e.g. `demo-smoke`); created if missing, else reused.
- One parent run per invocation of `sweep` or `run`, named by its run record (`runs/<id>.json`, `distill.record`):
  the record itself as the artifact `record/<id>.json`, and its command, host, git commit and start time as tags.
- One run per student trial that runs, nested under it and named by its trial folder (`<job id>` or
  `<job id>/<setting>` in a search): its params are the trial's resolved settings (the row's settings columns,
  `experiment.cell_columns`) and its job id; its metrics each epoch's `val_error`, `val_ce`, `train_loss` and `lr`
  (step: the epoch); when it ends, its row (`row.json`, which `experiment.student_trial` writes in the trial folder
  and Tune never sees) adds every measured number as a metric (the row's `val_error`, the best epoch's, as
  `best_val_error`, so `val_error` stays the per-epoch history), its text as tags (`status`, `reason`,
  `model_sha256`, `trial_dir`) and the file itself as the artifact `row.json`. A trial ASHA stopped ends KILLED
  with `status` `stopped`; a diverged or errored one ends FAILED.

The URI: a local directory (a path or file:) is MLflow's file store, which MLflow 3 keeps in maintenance mode behind
`MLFLOW_ALLOW_FILE_STORE=true` (set here, for this process, only for such a URI); anything else (http(s)://,
sqlite:///..., databricks) goes to MLflow as given. The callback runs in the driver: on a cluster a directory is on
the driver's machine, so there use a tracking server. MLflow's own logging and warnings stay off the console
(unless `verbose`); a tracking failure mid-sweep prints one line and stops the tracking, never the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ray.air.integrations.mlflow import MLflowLoggerCallback

from distill import experiment, files, pipeline, ray_search
from distill.errors import UserError
from distill.pipeline import Job

# A row's numbers logged under another name, so that the per-epoch history of the same name stays per-epoch.
RENAMED = {"val_error": "best_val_error"}


def resolve(uri: str) -> str:
    """The tracking URI MLflow gets: a local directory as an absolute file: URI (its file store), else as given.
    Credentials in the URI are refused: the command line, and so the URI, goes into every run record."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        raise UserError(f"the MLflow URI {parts.scheme}://{parts.hostname}... carries credentials, which would show "
                        "in every log and run record: give them as MLFLOW_TRACKING_USERNAME and "
                        "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment instead")
    if parts.scheme not in ("", "file"):
        return uri
    path = Path(parts.path if parts.scheme == "file" else uri).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"--mlflow {uri}: {path} is a file: pass a directory (MLflow's file store) or a tracking "
                        "server URI such as http://host:5000")
    return path.as_uri()


def quiet() -> None:
    """MLflow's own log lines and warnings off the console (the console shows one progress display per phase)."""
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # Against a server, MLflow prints each ended run's URL (two lines a trial) and tqdm bars on uploads.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
    warnings.filterwarnings("ignore", message=r".*mlflow")  # raised on MLflow's behalf from another module


class Tracking:
    """Where a sweep's runs go: the tracking `uri`, the `experiment` (the sweep's name). `check()` before any
    work; `trials(root, jobs)` around each Tuner's fit."""

    def __init__(self, uri: str, experiment: str, verbose: bool = False):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise UserError("--mlflow needs MLflow: pip install -c constraints.txt -e '.[cluster]' (it brings "
                            "mlflow-skinny)") from None
        self.given, self.uri, self.experiment, self.verbose = uri, resolve(uri), experiment, verbose
        if self.uri.startswith("file:"):  # MLflow 3 refuses its file store unless asked for it
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        if not verbose:
            quiet()
        self.parent: str | None = None

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)

    def artifacts(self) -> str | None:
        """Where a new experiment keeps its artifacts: beside a SQLite database (`mlartifacts/<experiment>`; MLflow's
        default would be ./mlruns in whatever folder the driver runs in), else MLflow's choice (inside a directory
        store, or the server's)."""
        parts = urlsplit(self.uri)
        if parts.scheme != "sqlite" or parts.path in ("", "/", "/:memory:"):
            return None
        return (Path(parts.path[1:]).resolve().parent / "mlartifacts" / self.experiment).as_uri()

    def check(self) -> None:
        """The store opens and holds the sweep's experiment (created here if missing): a wrong URI or an
        unreachable server is one line before anything runs (a server gets one try of 10 s, not MLflow's retries)."""
        env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            client = self.client()
            if client.get_experiment_by_name(self.experiment) is None:
                client.create_experiment(self.experiment, artifact_location=self.artifacts())
        except Exception as e:  # MlflowException, a connection error, a bad scheme: all the user's to fix
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"--mlflow {self.given} cannot be used ({detail}): pass a directory or a reachable "
                            "tracking server URI such as http://host:5000") from None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, root: files.Location) -> str:
        """This invocation's parent run (created on the first call), its run record (re)logged: a later phase
        sees what the record learnt since (the choices of a search)."""
        client = self.client()
        record = this_record(root)
        if self.parent is None:
            experiment_id = client.get_experiment_by_name(self.experiment).experiment_id
            name = record.name.removesuffix(".json") if record is not None else time.strftime("%Y%m%dT%H%M%S")
            self.parent = client.create_run(experiment_id, run_name=name, tags={"distill.sweep": self.experiment,
                                                                                "distill.root": str(root)}).info.run_id
        if record is not None:
            facts = files.read_json(record)
            client.set_tag(self.parent, "distill.record", str(record))
            for key, value in {"command": " ".join(facts.get("command", [])), "host": facts.get("host"),
                               "started": facts.get("started"), "git_commit": facts.get("code", {}).get("commit"),
                               "git_dirty": facts.get("code", {}).get("dirty")}.items():
                if value is not None:
                    client.set_tag(self.parent, f"distill.{key}", str(value))
            client.log_text(self.parent, record.read_text(), f"record/{record.name}")
        return self.parent

    @contextlib.contextmanager
    def trials(self, root: files.Location, jobs: dict[str, Job]) -> Iterator[list]:
        """The Tune callbacks that log one Tuner's trials under this invocation's parent run, which is marked
        FINISHED, FAILED or KILLED when the Tuner returns."""
        try:
            parent = self.start(root)
        except Exception as e:  # the store was checked before any work: it went away since
            stopped(e)
            yield []
            return
        status = "FAILED"
        try:
            yield [Callback(self.uri, self.experiment, parent, jobs, str(root))]
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            with contextlib.suppress(Exception):
                self.client().set_terminated(parent, status)


def this_record(root: files.Location) -> files.Location | None:
    """The run record this process wrote under `root` (`record.write` names it <time>-<host>-<pid>.json): the
    latest, for a notebook that runs the sweep more than once."""
    mine = (files.location(root) / "runs").glob(f"*-{socket.gethostname()}-{os.getpid()}.json")
    return mine[-1] if mine else None


def stopped(error: BaseException) -> None:
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    print(f"mlflow: tracking stopped ({detail}); the sweep goes on", file=sys.stderr)


class Callback(MLflowLoggerCallback):
    """Ray's MLflow logger with distill's trial facts: Ray's sets up the experiment and creates the runs; this
    names each run by its trial folder, logs the resolved settings as params and the epoch metrics with the
    epoch as step, and when a trial ends logs its row.json (which Tune never sees). Runs in the driver."""

    def __init__(self, uri: str, experiment: str, parent: str, jobs: dict[str, Job], root: str):
        super().__init__(uri, experiment_name=experiment, tags={"mlflow.parentRunId": parent})
        self.jobs, self.root, self.broken = jobs, root, False

    def setup(self, *args, **kwargs):
        self.guard(super().setup, *args, **kwargs)

    def guard(self, fn, *args, **kwargs) -> None:
        """A tracking failure (a server gone) prints one line and ends the tracking, not the sweep."""
        if self.broken:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:
            self.broken = True
            stopped(e)

    def trial(self, trial) -> tuple[Job, dict, files.Location]:
        job, searched = self.jobs[trial.config["job"]], ray_search.sampled(trial.config)
        return job, searched, pipeline.trial_dir(self.root, job, searched)

    def client(self):
        return self.mlflow_util._get_client()

    def log_trial_start(self, trial):
        self.guard(self._start, trial)

    def _start(self, trial) -> None:
        if trial in self._trial_runs:  # retried after its process died: the same run goes on
            return
        from mlflow.entities import Param

        job, searched, trial_dir = self.trial(trial)
        name = job.id + (f"/{trial_dir.name}" if searched else "")
        run = self.mlflow_util.start_run(run_name=name, tags={
            **self.tags, "trial_name": str(trial), "job": job.id, "trial_dir": str(trial_dir)})
        self._trial_runs[trial] = run.info.run_id
        params = {"job": job.id, **experiment.cell_columns(pipeline.searched_cell(job, searched))}
        batch = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(batch), 100):  # a server takes at most 100 params a call
            self.client().log_batch(run.info.run_id, params=batch[i:i + 100])

    def log_trial_result(self, iteration, trial, result):
        self.guard(self._result, trial, result)

    def _result(self, trial, result: dict) -> None:
        # Each epoch's report; the trial's last report (it has the status) is its row, logged at its end.
        if trial not in self._trial_runs or "status" in result or "epoch" not in result:
            return
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(result["epoch"])
        self.client().log_batch(self._trial_runs[trial], metrics=[
            Metric(k, float(result[k]), now, step) for k in ray_search.EPOCH if k != "epoch" and k in result])

    def log_trial_end(self, trial, failed: bool = False):
        self.guard(self._end, trial, failed)

    def _end(self, trial, failed: bool) -> None:
        run_id = self._trial_runs.pop(trial, None)
        if run_id is None:
            return
        from mlflow.entities import Metric, RunTag

        client = self.client()
        job, searched, trial_dir = self.trial(trial)
        path = trial_dir / "row.json"
        row = files.read_json(path) if path.exists() else None
        if row is None:  # stopped by ASHA (ray_sweep.ended writes its row after the Tuner), or errored
            client.set_tag(run_id, "status", "failed" if failed else "stopped")
            client.set_terminated(run_id, "FAILED" if failed else "KILLED")
            return
        settings = set(experiment.cell_columns(pipeline.searched_cell(job, searched)))
        now, metrics, tags = int(time.time() * 1000), [], []
        for key, value in row.items():
            if key in settings or value is None:
                continue
            if isinstance(value, bool | int | float):
                if math.isfinite(value):
                    metrics.append(Metric(RENAMED.get(key, key), float(value), now, 0))
            else:
                tags.append(RunTag(key, str(value)[:5000]))
        client.log_batch(run_id, metrics=metrics, tags=tags)
        client.log_text(run_id, path.read_text(), "row.json")
        client.set_terminated(run_id, "FAILED" if failed or row.get("status") != "ok" else "FINISHED")
