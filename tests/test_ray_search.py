"""All searched cells in one Tuner (`distill.ray_search`): each cell gets exactly its own budget of Optuna
suggestions, hears only its own trials' scores, and is stopped early only against trials of its own cell.
Plain objects, no Ray cluster."""

from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from distill import ray_search
from distill.config import DataConfig, SearchConfig, SweepConfig

SWEEP = SweepConfig(name="cells", data=DataConfig(name="digits"), targets=("labels",), student_teachers=(),
                    search=SearchConfig(samples=3, lr=(1e-3, 1e-1)))


def test_each_cell_gets_its_budget_and_its_own_scores():
    searches = {job: ray_search.optuna_search(SWEEP, [], "labels") for job in ("a", "b")}
    cells = ray_search.Cells(searches, {"a": 3, "b": 1})
    suggested = [cells.suggest(f"t{i}") for i in range(4)]
    assert sorted(s["job"] for s in suggested) == ["a", "a", "a", "b"]
    assert all(1e-3 <= s["lr"] <= 1e-1 for s in suggested)
    assert cells.suggest("t4") == Searcher.FINISHED
    for i, s in enumerate(suggested):
        cells.on_trial_complete(f"t{i}", {"val_error": 0.1 * i, "job": s["job"], "lr": s["lr"]})
    # Each cell's Optuna study holds exactly its own finished trials.
    told = {job: len(search._ot_study.get_trials()) for job, search in searches.items()}
    assert told == {"a": 3, "b": 1}


def test_a_trial_is_stopped_only_against_its_own_cell():
    asha = ray_search.CellAsha(grace=1, max_t=10)

    def trial(i, job):
        return SimpleNamespace(trial_id=f"t{i}", config={"job": job})

    good = [trial(i, "mimic") for i in range(4)]  # four mimic trials at val error 0.01 each
    for t in good:
        asha.on_trial_add(None, t)
        assert asha.on_trial_result(None, t, {"training_iteration": 1, "val_error": 0.01}) == TrialScheduler.CONTINUE
    labels = trial(9, "labels")  # far worse than every mimic trial, but the first of its own cell
    asha.on_trial_add(None, labels)
    assert asha.on_trial_result(None, labels, {"training_iteration": 1, "val_error": 0.5}) == TrialScheduler.CONTINUE
    # The same trial in the mimic cell would have been stopped: the comparison is real.
    worse = trial(10, "mimic")
    asha.on_trial_add(None, worse)
    assert asha.on_trial_result(None, worse, {"training_iteration": 1, "val_error": 0.5}) == TrialScheduler.STOP


def test_a_kd_cell_samples_its_temperature_log_uniformly_and_its_weight_in_range():
    sweep = SweepConfig(name="kd", data=DataConfig(name="digits"), targets=("kd",), student_teachers=("t",),
                        search=SearchConfig(samples=8, temperature=(1.0, 16.0), kd_weight=(0.2, 0.8)))
    search = ray_search.optuna_search(sweep, [], "kd")
    suggested = [search.suggest(f"t{i}") for i in range(8)]
    assert all(set(s) == {"temperature", "kd_weight"} for s in suggested)
    assert all(1.0 <= s["temperature"] <= 16.0 and 0.2 <= s["kd_weight"] <= 0.8 for s in suggested)
    assert search._space["temperature"].log and not search._space["kd_weight"].log
