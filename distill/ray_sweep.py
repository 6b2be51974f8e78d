"""Ray Tune adapter: the student sweep over width x bottleneck x target x teacher x seed.

With `search.samples == 1` every cell trains once with its config's settings, all cells in one Tune
grid (as many at once as the resources allow, no early stopping: every cell is a point on a curve).
With more samples, Optuna searches lr / momentum / weight decay within each cell (one Tuner per cell,
since Optuna cannot search inside a grid) and ASHA stops a cell's poor trials early.

The data, the transfer set and every teacher's per-member logits go into the object store once; trials
read them as zero-copy views (`distill.ray_shared`). Each trial is `distill.experiment.run_student`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import psutil
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from distill import cache, experiment, io, ray_shared, results
from distill.config import SweepConfig
from distill.errors import UserError
from distill.train import Diverged

CELL_KEYS = ("hidden", "bottleneck", "target", "teacher", "seed")
SEARCHED = ("lr", "momentum", "weight_decay")


def student_trial(config: dict, data, sweep: SweepConfig) -> None:
    """One student: train, report every epoch, then the result row.

    The trial keeps its own checkpoint, `state.pt` in its trial directory, written atomically: a retried
    trial and a trial of a resumed sweep start from it. (Tune's checkpoints are pruned as new ones arrive,
    and a driver killed between a prune and its next state snapshot leaves a snapshot that names a deleted
    checkpoint, which Tune then refuses to restore.)"""
    cell = sweep.cell(*(config["cell"][k] for k in CELL_KEYS))
    searched = {k: config[k] for k in SEARCHED if k in config}
    cell = dataclasses.replace(cell, train=dataclasses.replace(cell.train, **searched))
    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    private = psutil.Process().memory_full_info().uss  # before the data: the process's own runtime
    device = "cuda" if sweep.gpus_per_trial > 0 and torch.cuda.is_available() else "cpu"
    splits, transfer, per_member = ray_shared.get(data, device)
    members = {t.name: t.members for t in sweep.teachers}
    # The trial's directory in the sweep's storage (local or s3://...), where a retry on any node finds it.
    storage = tune.get_context().get_storage()
    saved = io.Location.on(storage.storage_filesystem, storage.trial_fs_path) / "state.pt"
    resume = io.torch_load(saved, map_location=device, weights_only=False) if saved.exists() else None

    def report(row: dict, state: Callable[[], dict]) -> None:
        if row["epoch"] % sweep.checkpoint_every == 0:
            io.write_bytes(saved, io.torch_bytes(state()))
        tune.report(row)

    try:
        row = experiment.run_student(cell, splits, transfer, cache.teacher_logits(per_member, members, cell.teacher),
                                     cache.teacher_logits(per_member, members, sweep.reference(cell)), report, resume)
    except Diverged as e:  # a finished, failed trial with its reason: Optuna gets a finite worst score
        tune.report({"val_error": 1.0, "status": "failed", "reason": str(e)})
        return
    # What this trial added to its process (model, optimizer, batches, allocator caches, and any copy of
    # the shared data, which should be none): the figure the memory benchmark sums over concurrent trials.
    row["trial_private_mib"] = (psutil.Process().memory_full_info().uss - private) / 2**20
    tune.report({**row, "status": "ok"})


def sweep_students(sweep: SweepConfig, root: io.Where, splits, transfer, per_member: dict,
                   log: Callable[[str], None] = print):
    """Run the sweep, write results.parquet / results.csv under `root`, return the DataFrame."""
    payload = ray_shared.pack(splits, transfer, per_member)  # with_parameters puts it in the store once
    trainable = tune.with_resources(tune.with_parameters(student_trial, data=payload, sweep=sweep),
                                    {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})
    cells = [{"hidden": c.hidden, "bottleneck": c.bottleneck, "target": c.target, "teacher": c.teacher,
              "seed": c.train.seed} for c in sweep.cells()]
    root = io.location(root)
    storage = root / "ray"
    if sweep.search.samples == 1:
        progress = Progress(len(cells))
        grids = [tuner(trainable, "students", storage, {"cell": tune.grid_search(cells)}, sweep, False,
                       progress).fit()]
    else:
        grids = []
        for i, cell in enumerate(cells):
            progress = Progress(sweep.search.samples, prefix=f"cell {i + 1}/{len(cells)}: ")
            grids.append(tuner(trainable, f"students-cell-{i}", storage, {"cell": cell, **search_space(sweep)},
                               sweep, True, progress).fit())
            log(f"cell {i + 1}/{len(cells)} done: {cell}")
    rows = [row(r, storage) for grid in grids for r in grid]
    frame = results.write(root, rows)
    log(f"{len(frame)} trials, {int((frame['status'] != 'ok').sum())} failed; results in {root / 'results.parquet'}")
    return frame


def console(line: str) -> None:
    print(line, flush=True)


class Progress(tune.Callback):
    """One console line per finished trial: trials done of total, and the best val error so far.

    Tune pickles its callbacks with the run (to resume it), so this holds a prefix, not a log function."""

    def __init__(self, total: int, prefix: str = ""):
        self.total, self.prefix, self.done, self.best = total, prefix, 0, None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finish(trial, trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finish(trial, {"status": "failed"})

    def finish(self, trial, result: dict) -> None:
        self.done += 1
        if result.get("status") == "ok" and (self.best is None or result["val_error"] < self.best[0]):
            cell = trial.config["cell"]
            self.best = (result["val_error"], f"{cell['target']} H={cell['hidden']} k={cell['bottleneck']}")
        best = f"; best val error so far {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        console(f"{self.prefix}students: {self.done}/{self.total} trials finished{best}")


def search_space(sweep: SweepConfig) -> dict:
    s = sweep.search
    space = {"lr": s.lr and tune.loguniform(*s.lr), "momentum": s.momentum and tune.uniform(*s.momentum),
             "weight_decay": s.weight_decay and tune.loguniform(*s.weight_decay)}
    return {k: v for k, v in space.items() if v is not None}


def tuner(trainable, name: str, storage: io.Location, space: dict, sweep: SweepConfig, searched: bool,
          progress: Progress) -> tune.Tuner:
    """A new Tuner, or the interrupted one of the same name resumed (finished trials are kept, not re-run)."""
    run_dir = storage / name
    path = str(run_dir)
    # A run killed before Tune wrote any trial state has nothing to resume (and may hold a half-written
    # tuner.pkl): it starts afresh.
    started = bool(run_dir.glob("experiment_state-*.json"))
    if started and tune.Tuner.can_restore(path):
        try:
            return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        except Exception as e:  # e.g. a run that died while Tune was still writing its first state
            reason = (str(e).strip().splitlines() or [""])[0]
            raise UserError(f"cannot resume the interrupted sweep in {path} ({type(e).__name__}: {reason}): "
                            "delete that directory to run the sweep afresh") from None
    # reuse_actors: a finished trial's process takes the next trial (no new process importing torch).
    config = tune.TuneConfig(num_samples=1, max_concurrent_trials=sweep.search.concurrency, reuse_actors=True)
    if searched:
        config = tune.TuneConfig(
            metric="val_error", mode="min", num_samples=sweep.search.samples,
            max_concurrent_trials=sweep.search.concurrency, search_alg=OptunaSearch(seed=0), reuse_actors=True,
            scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=sweep.search.grace_epochs,
                                    max_t=sweep.student.train.epochs + 1))
    return tune.Tuner(trainable, param_space=space, tune_config=config, run_config=tune.RunConfig(
        name=name, storage_path=str(storage), verbose=1, callbacks=[progress],
        failure_config=tune.FailureConfig(max_failures=sweep.trial_retries)))


TUNE_KEYS = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "date", "time_this_iter_s",
             "pid", "hostname", "node_ip", "config", "time_since_restore", "iterations_since_restore",
             "experiment_tag", "should_checkpoint"}


def row(result, storage: io.Location) -> dict:
    """One results row from a Tune result: its last report, or the cell and the failure's reason.

    trial_dir is the trial's directory as a location our io opens (Tune's result.path drops the URI's scheme
    and options): the sweep's storage / experiment / trial."""
    parts = result.path.rstrip("/").rsplit("/", 2)
    trial_dir = str(storage / parts[-2] / parts[-1])
    cell = result.config["cell"]
    searched = {f"train.{k}": result.config[k] for k in SEARCHED if k in result.config}
    if result.error is not None:
        return {**cell, **searched, "status": "failed", "reason": str(result.error).strip().splitlines()[-1],
                "trial_dir": trial_dir}
    metrics = {k: v for k, v in (result.metrics or {}).items() if k not in TUNE_KEYS}
    metrics.setdefault("status", "stopped")  # ASHA stopped it before it reported a final row
    return {**cell, **searched, **metrics, "trial_dir": trial_dir}
