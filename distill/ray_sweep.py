"""Ray executor: teacher members through Ray Train (`distill.ray_teachers`), student trials through Ray Tune.

The pipeline (`distill.pipeline`) decides what runs; this module only places it on the cluster. With
`search.samples == 1` every pending job trains once with its config's settings, all in one Tune grid (as many
at once as the resources allow, no early stopping: every cell is a point on a curve). With more samples,
Optuna searches the settings `pipeline.space` names within each cell (all cells in one Tuner, each with its
own search and its own ASHA, `distill.ray_search`; warm-started with the cell's finished trials after an
interruption) and ASHA stops poor trials.

Each trial is `distill.experiment.student_trial` in its own directory of the sweep's storage (local or a
bucket), where a retry on any node finds its checkpoint and where it writes its row; Tune hears only each
epoch's val error. The data and the transfer set go into the object store once, and each teacher's mean logits
on each split as objects of their own; a trial reads its data and its two as zero-copy views
(`distill.ray_shared`).
"""

from __future__ import annotations

import time

import torch
from ray import tune

from distill import experiment, files, pipeline, progress, ray_search, ray_shared, ray_teachers
from distill.config import SweepConfig, TeacherConfig
from distill.pipeline import Job


class Executor:
    """Members through Ray Train, students through Ray Tune, on the cluster at `address` (default
    $RAY_ADDRESS, else a local Ray), which is joined when the first work arrives. `verbose`: Ray's worker logs
    and Tune's tables on the console too (else in Ray's log folder, named in one line). `mlflow`: a tracking URI
    (or a `ray_mlflow.Tracking`) where every student trial is logged, checked here."""

    def __init__(self, sweep: SweepConfig, root: files.Where, splits, transfer, log: pipeline.Log = print,
                 address: str | None = None, verbose: bool = False, mlflow=None):
        self.sweep, self.root, self.splits, self.transfer, self.log = sweep, files.location(root), splits, transfer, log
        self.address, self.verbose, self._data = address, verbose, None
        if isinstance(mlflow, str):  # a tracking URI (`distill.ray_mlflow`): every student trial logged there
            from distill import ray_mlflow

            mlflow = ray_mlflow.Tracking(mlflow, sweep.name, verbose)
            mlflow.check()
        self.mlflow = mlflow  # a ray_mlflow.Tracking, or None

    def with_data(self, sweep: SweepConfig, splits, transfer) -> Executor:
        return Executor(sweep, self.root, splits, transfer, self.log, self.address, self.verbose, self.mlflow)

    def data(self):
        if self._data is None:  # one object-store copy of the data for every member and harvest
            ray_shared.init(self.address, log=self.log, verbose=self.verbose)
            self._data = ray_shared.put(self.splits, self.transfer)
        return self._data

    def train_members(self, pending: list[tuple[TeacherConfig, int]]) -> None:
        t0 = time.perf_counter()
        ray_teachers.train_members(self.sweep, self.root, pending, self.data(), self.log)
        self.log(f"teachers: trained {len(pending)} members in {time.perf_counter() - t0:.0f} s")

    def harvest(self, teacher: TeacherConfig, indices: list[int]) -> None:
        ray_teachers.harvest(self.root, self.sweep.data, teacher, indices, self.data())

    def run_students(self, jobs: list[Job], logits: dict, done: dict[str, list[dict]], search: bool) -> list[dict]:
        if self.mlflow is None:
            return self.tune_students(jobs, logits, done, search)
        # --mlflow: every trial a run under this invocation's parent run (`distill.ray_mlflow`).
        with self.mlflow.trials(self.root, {j.id: j for j in jobs}) as tracked:
            return self.tune_students(jobs, logits, done, search, tracked)

    def tune_students(self, jobs: list[Job], logits: dict, done: dict[str, list[dict]], search: bool,
                      callbacks: list = ()) -> list[dict]:
        sweep = self.sweep
        data = self.data()
        # Each teacher's mean logits per split as an object of its own: a trial fetches only the two it uses.
        refs = ray_shared.put_logits(logits)
        trainable = tune.with_resources(
            tune.with_parameters(student_trial, data=data, logits=refs, jobs={j.id: j for j in jobs}, sweep=sweep,
                                 root=str(self.root)),
            {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})
        storage, stamp = self.root / "ray", time.strftime("%Y%m%d-%H%M%S")
        if not search:
            grid = tuner(trainable, f"students-{stamp}", storage, {"job": tune.grid_search([j.id for j in jobs])},
                         sweep, None, Progress(len(jobs)), verbose=self.verbose, callbacks=callbacks).fit()
            return ended(grid, {j.id: j for j in jobs}, self.root)
        # Every cell's search in one Tuner: the cores stay busy across cells (`ray_search`).
        left = {j.id: sweep.search.samples - len(done[j.id]) for j in jobs if sweep.search.samples > len(done[j.id])}
        search_alg = ray_search.Cells({j.id: ray_search.optuna_search(sweep, done[j.id], j.cell.target)
                                       for j in jobs if j.id in left}, left)
        grid = tuner(trainable, f"students-{stamp}-search", storage, {}, sweep, search_alg,
                     Progress(sum(left.values())), sum(left.values()), self.verbose, callbacks).fit()
        return ended(grid, {j.id: j for j in jobs}, self.root)


def student_trial(config: dict, data, logits: dict, jobs: dict[str, Job], sweep: SweepConfig, root: str) -> None:
    """One student trial: the core's `student_trial` in its directory; each epoch's val error goes to Tune.
    `data`: the store's data payload; `logits`: {(teacher, split): object ref}, of which it fetches its own."""
    job, searched = jobs[config["job"]], ray_search.sampled(config)
    cell = pipeline.searched_cell(job, searched)
    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    device = "cuda" if sweep.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    splits, transfer = ray_shared.get(data, device, cell.transfer_views)  # only the transfer set it learns on
    mine = ray_shared.get_logits(logits, pipeline.needs(job), device, len(transfer.source))
    teacher, reference = pipeline.given(job, mine)
    row = experiment.student_trial(
        cell, splits, transfer, teacher, reference, pipeline.trial_dir(root, job, searched),
        sweep.checkpoint_every, on_epoch=lambda m: tune.report({k: m[k] for k in ray_search.EPOCH}))
    # Optuna needs a finite score for every finished trial: a diverged one counts as the worst (Tune only).
    tune.report({"val_error": row.get("val_error", 1.0), "status": row["status"]})


def ended(grid: tune.ResultGrid, jobs: dict[str, Job], root: files.Location) -> list[dict]:
    """Rows for the trials that wrote none: stopped early by ASHA (kept on disk: that decision is final), or
    errored after every retry (returned, not kept: a re-run tries them again)."""
    errored = []
    for result in grid:
        job, searched = jobs[result.config["job"]], ray_search.sampled(result.config)
        trial, cell = pipeline.trial_dir(root, job, searched), pipeline.searched_cell(job, searched)
        if (trial / "row.json").exists():
            continue
        if result.error is not None:
            reason = (str(result.error).strip().splitlines() or ["unknown error"])[-1]
            errored.append(experiment.ended_row(cell, trial, "failed", reason))
        else:
            epoch = (result.metrics or {}).get("epoch", 0)
            files.write_json(trial / "row.json", experiment.ended_row(
                cell, trial, "stopped", f"stopped early by ASHA after epoch {epoch}"))
    return errored


class Progress(tune.Callback):
    """The students' progress display (`distill.progress`): trials done of total, running, failed, the best val
    error so far, the time left. Tune pickles its callbacks with the run: this holds no stream or function of
    the driver's."""

    def __init__(self, total: int):
        self.display = progress.Progress("students", total)
        self.running, self.done, self.failed, self.best = 0, 0, 0, None

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running += 1
        self.show()

    def on_trial_recover(self, iteration, trials, trial, **info):
        # Its process died (e.g. its node was lost) and it waits to be retried: Tune starts it again
        # (on_trial_start), so it runs no more until then.
        self.running = max(0, self.running - 1)
        self.show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finish(trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finish({"status": "failed"})

    def finish(self, result: dict) -> None:
        self.running, self.done = max(0, self.running - 1), self.done + 1
        self.failed += result.get("status") == "failed"
        if result.get("status") == "ok" and (self.best is None or result["val_error"] < self.best):
            self.best = result["val_error"]
        self.show()

    def show(self) -> None:
        self.display.update(self.done, f"{self.running} running", self.failed, self.best)


def tuner(trainable, name: str, storage: files.Location, space: dict, sweep: SweepConfig,
          search: ray_search.Cells | None, shown: Progress, samples: int = 1, verbose: bool = False,
          callbacks: list | tuple = ()) -> tune.Tuner:
    """A fresh Tuner per invocation: what finished before is already on disk, and an interrupted trial resumes
    from its own checkpoint, so Tune's pickled experiment state is never restored."""
    # reuse_actors: a finished trial's process takes the next trial (no new process importing torch).
    config = tune.TuneConfig(num_samples=1, max_concurrent_trials=sweep.search.concurrency, reuse_actors=True)
    if search is not None:
        config = tune.TuneConfig(
            num_samples=samples, max_concurrent_trials=sweep.search.concurrency, search_alg=search,
            reuse_actors=True, scheduler=ray_search.CellAsha(sweep.search.grace_epochs, sweep.student.train.epochs + 1))
    return tune.Tuner(trainable, param_space=space, tune_config=config, run_config=tune.RunConfig(
        # Tune's own tables only with --verbose: the console shows `shown`, one display for the phase.
        name=name, storage_path=str(storage), verbose=1 if verbose else 0, callbacks=[shown, *callbacks],
        failure_config=tune.FailureConfig(max_failures=sweep.trial_retries)))

