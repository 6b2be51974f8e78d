"""Ray Tune adapter: every searched cell's Optuna search in one Tuner, each cell with its own budget and its
own ASHA.

Optuna cannot search inside a grid, and one Tuner per cell leaves cores idle: at the end of every cell its
last trials run alone, and every Tuner costs seconds to start (the demo's 6 searched cells, 3 samples each,
on 2 cores: 259 s, of which about 100 s idle). Here one Tuner holds them all: `Cells` asks each cell's
OptunaSearch (the cell with most samples left first, so that the cells finish together), and `CellAsha` keeps
one ASHA per cell, so a trial is only ever stopped by comparison with trials of its own cell (a label-trained
student is never stopped because mimic students reach a lower val error). What each cell searches is the
pipeline's decision (`pipeline.space`).
"""

from __future__ import annotations

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from distill import pipeline
from distill.config import SweepConfig

METRIC, MODE = "val_error", "min"
# What a trial reports to Tune each epoch (of `train.fit`'s epoch metrics): the schedulers read val_error, and
# `--mlflow` logs the others too (`distill.ray_mlflow`).
EPOCH = ("epoch", "train_loss", "val_error", "val_ce", "lr")


def sampled(config: dict) -> dict:
    """The settings a search sampled for a trial, from its Tune config ({} in a grid)."""
    return {k: config[k] for k in pipeline.SEARCHED if k in config}


def optuna_search(sweep: SweepConfig, done: list[dict], target: str) -> OptunaSearch:
    """Optuna over the cell's ranges (`pipeline.space`), told the scores of the cell's trials that finished
    before (an interrupted sweep warm-starts from them)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created: one per searched cell
    s = sweep.search
    dist = optuna.distributions
    ranges = {"lr": s.lr and dist.FloatDistribution(*s.lr, log=True),
              "momentum": s.momentum and dist.FloatDistribution(*s.momentum),
              "weight_decay": s.weight_decay and dist.FloatDistribution(*s.weight_decay, log=True),
              "dropout": s.dropout and dist.FloatDistribution(*s.dropout),
              "temperature": s.temperature and dist.FloatDistribution(*s.temperature, log=True),
              "kd_weight": s.kd_weight and dist.FloatDistribution(*s.kd_weight)}
    space = {k: ranges[k] for k in pipeline.space(sweep, target)}
    points = [pipeline.setting(row, list(space)) for row in done]
    rewards = [row["val_error"] if row.get("status") == "ok" else 1.0 for row in done]
    return OptunaSearch(space=space, metric=METRIC, mode=MODE, seed=len(done),
                        points_to_evaluate=points or None, evaluated_rewards=rewards or None)


class Cells(Searcher):
    """One Optuna search per cell (`job` id -> its search and samples left); each suggestion is one cell's,
    tagged with its job id, and each result goes back to the cell's own search."""

    def __init__(self, searches: dict[str, OptunaSearch], left: dict[str, int]):
        super().__init__(metric=METRIC, mode=MODE)
        self.searches, self.left, self.owner = searches, dict(left), {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # each cell's search has its space, metric and mode already

    def suggest(self, trial_id: str) -> dict | None:
        for job in sorted(self.left, key=lambda j: -self.left[j]):  # most left first
            if self.left[job] <= 0:
                continue
            config = self.searches[job].suggest(trial_id)
            if isinstance(config, dict):
                self.left[job] -= 1
                self.owner[trial_id] = job
                return {**config, "job": job}
        return Searcher.FINISHED if not any(v > 0 for v in self.left.values()) else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searches[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searches[self.owner.pop(trial_id)].on_trial_complete(trial_id, result, error)


class CellAsha(FIFOScheduler):
    """One ASHA per cell: a trial's rungs hold only trials of its own cell."""

    def __init__(self, grace: int, max_t: int):
        super().__init__()
        self.grace, self.max_t, self.cells = grace, max_t, {}

    def asha(self, trial) -> ASHAScheduler:
        job = trial.config["job"]
        if job not in self.cells:
            self.cells[job] = ASHAScheduler(metric=METRIC, mode=MODE, time_attr="training_iteration",
                                            grace_period=self.grace, max_t=self.max_t)
        return self.cells[job]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self.asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.asha(trial).on_trial_remove(tune_controller, trial)
