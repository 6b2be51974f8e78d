"""What an experiment runs, decided once: which teacher members are pending, which caches are stale, which
student trials remain, what is logged; an executor runs the work, in this process (`distill.local`) or on
Ray (`distill.ray_sweep.Executor`). Nothing here imports Ray.

Students live under the sweep's directory, one folder per trial, named by what decides the trial's result:
    students/<trial id>/state.pt    its checkpoint (a retried or resumed trial starts from it)
    students/<trial id>/row.json    its results row, written last: the trial is done
A trial id is readable (target, sizes, teacher, seed) and ends in a hash of the resolved student config, the
data identity and the logit-cache keys of its teachers: a changed grid, student setting or teacher gives new
ids, so a re-run trains exactly the new trials and the results hold only the current sweep's. With a search
(`SearchConfig.samples > 1`) the cell's folder holds one sub-folder per sampled setting.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Protocol

from distill import cache, experiment, files, lease, record, results
from distill.config import StudentConfig, SweepConfig, TeacherConfig, to_dict
from distill.errors import UserError
from distill.targets import TARGETS
from distill.teachers import parse

Log = Callable[[str], None]
# Every setting a search may sample (a field of SearchConfig giving its range), by where it lives in a student's
# config: "train" (TrainConfig), "arch_args" (the model's keyword) or "cell" (StudentConfig itself).
SEARCHED = {"lr": "train", "momentum": "train", "weight_decay": "train", "dropout": "arch_args",
            "temperature": "cell", "kd_weight": "cell"}


@dataclasses.dataclass(frozen=True)
class Job:
    """One cell of the student grid, resolved: what it trains and where it keeps its trial(s)."""

    id: str
    cell: StudentConfig
    teacher: str  # the teacher whose logits it learns from ("" for label targets)
    reference: str  # the teacher it is compared with (agreement)


class Executor(Protocol):
    splits: object  # the prepared data (distill.data.Splits), on the executor's device
    transfer: object  # its transfer set (distill.data.TransferSet)

    def with_data(self, sweep: SweepConfig, splits, transfer) -> Executor:
        """The same kind of executor, on the same cluster and storage, for `sweep` on other data."""

    def train_members(self, pending: list[tuple[TeacherConfig, int]]) -> None: ...

    def harvest(self, teacher: TeacherConfig, indices: list[int]) -> None:
        """Harvest members `indices` of `teacher` (trained, not yet harvested): `cache.harvest_member` each."""

    def run_students(self, jobs: list[Job], logits: dict[tuple[str, str], object],
                     done: dict[str, list[dict]], search: bool) -> list[dict]:
        """Run the jobs' remaining trials (`done`: the rows each has already), each given only the logits it uses
        (`uses`: logits[job.teacher, 'transfer'], logits[job.reference, 'test']); with `search`, the sweep's
        search samples settings within each job. Return the rows of trials that errored (kept out of storage, so
        that a re-run tries them again)."""


def teachers(sweep: SweepConfig, root: files.Location, executor: Executor, log: Log) -> None:
    """Train every member that is missing or was trained with other settings (each harvests its own logits as it
    finishes), then commit every teacher's logit cache that is missing or stale. Teachers made elsewhere
    (weights or logits) are imported first, here in the driver: their files are checked before anything trains."""
    root = files.location(root)
    made = [t for t in sweep.teachers if cache.source(t) != "trained"]
    imported(sweep, root, executor, made, log)
    pending = unfinished(sweep, root, [t for t in sweep.teachers if t not in made], "trained", log)
    done = sum(t.members for t in sweep.teachers if t not in made) - len(pending)
    if done:
        log(f"teachers: {done} members finished before with these settings, not retrained")
    if pending:
        executor.train_members(pending)
    for t in sweep.teachers:
        members, key = cache.ready(root, sweep.data, t)
        errors = ", ".join(f"{m['test_error']:.4f}" for m in members)
        log(f"teacher {t.name}: member test errors {errors}")
        if cache.cached(root, sweep.data, t, key):
            log(f"teacher {t.name}: logits cached before, not harvested again")
            continue
        # Members harvest right after training; only those trained before that (or whose harvest died) remain.
        missing = [i for i, m in enumerate(members) if cache.harvested(root, t, i, m["sha256"]) is None]
        if missing and t in made:
            for i in missing:
                cache.harvest_imported(root, sweep.data, t, i, members[i]["sha256"],
                                       cache.check_member(t, i, executor.splits, executor.transfer)[1],
                                       executor.splits, executor.transfer)
        elif missing:
            executor.harvest(t, missing)
        manifest = cache.publish(root, sweep.data, t, key, members, executor.splits)
        log(f"teacher {t.name}: ensemble test error {manifest['ensemble']['test_error']:.4f}; "
            f"logits of {manifest['shapes']['transfer'][1]} transfer inputs cached")


def unfinished(sweep: SweepConfig, root: files.Location, teachers: list[TeacherConfig], verb: str,
               log: Log) -> list[tuple[TeacherConfig, int]]:
    """The members of `teachers` not finished with the sweep's settings (`verb`: "trained" or "imported"); each
    one finished with other settings is logged, as it is done again."""
    pending = []
    for t in teachers:
        for i in range(t.members):
            result, why = cache.member_result(root, sweep.data, t, i)
            if result is None:
                pending.append((t, i))
                if why != "not trained yet":
                    again = "training it again" if verb == "trained" else "importing it again"
                    log(f"teacher {t.name}[{i}]: {why.replace('trained', verb)}: {again}")
    return pending


def imported(sweep: SweepConfig, root: files.Location, executor: Executor, made: list[TeacherConfig],
             log: Log) -> None:
    """Import the members of teachers made elsewhere (`made`) that are missing or whose file changed: every such
    member's file is read and checked against the data (keys, shapes, class and row counts) before the first is
    imported, so a wrong file is one line before any work. In the driver, not on workers: loading weights and one
    pass over the data is all an import costs, and the user's module need only be importable here."""
    pending = unfinished(sweep, root, made, "imported", log)
    for t, i in pending:
        cache.check_member(t, i, executor.splits, executor.transfer)
    for t, i in pending:
        result = cache.import_member(root, sweep.data, t, i, executor.splits, executor.transfer)
        log(f"teacher {t.name}[{i}]: imported {result['source']} from {result['file']} (sha256 "
            f"{result['sha256'][:12]}): test error {result['test_error']:.4f}")


def realigned(sweep: SweepConfig, root: files.Location, executor: Executor, log: Log,
              record_path: files.Location) -> Executor:
    """DataConfig(realign=True), the paper's forced alignment, one pass: member 0 of the first teacher trains on
    the data set's own state targets (equal thirds of each phone), its train-frame logits realign the 3 states
    inside every transcribed phone (`experiment.realigned_targets`), and every member and student then trains
    on those. The aligner is a member like any other (`<teacher>-aligner`, cached, resumed); its alignment is
    kept under `alignment/`, named by the aligner's cache key, and named in the run record."""
    splits = executor.splits
    if getattr(splits, "train_segments", None) is None:
        raise UserError(f"DataConfig(realign=True) needs a speech data set with transcriptions (timit, "
                        f"timit-shaped), not {sweep.data.name!r}: drop realign")
    plain = dataclasses.replace(sweep.data, realign=False)
    aligner = dataclasses.replace(sweep.teachers[0], name=f"{sweep.teachers[0].name}-aligner", members=1)
    aligning = dataclasses.replace(sweep, data=plain, teachers=(aligner,))
    teachers(aligning, root, executor.with_data(aligning, splits, executor.transfer), log)
    key = cache.expected_key(root, plain, aligner)
    path = root / "alignment" / f"{key[:16]}.pt"
    if not path.exists():
        logits = cache.mean_logits(root, plain, aligner, [0], "transfer")[:len(splits.train_y)]  # the train frames
        targets = experiment.realigned_targets(splits, logits)  # (N_train,)
        files.write_bytes(path, files.torch_bytes({"key": key, "targets": targets}))
    saved = files.torch_load(path)
    if saved["key"] != key or saved["targets"].shape != splits.train_y.shape:
        raise UserError(f"the alignment {path} is not {aligner.name}'s for this data: delete it and run again")
    targets = saved["targets"].to(splits.train_y.device)
    moved = float((targets != splits.train_y).float().mean())
    log(f"alignment: {moved:.1%} of the train frames changed state under {aligner.name} (phones kept); "
        f"every net trains on it")
    record.add(record_path, "alignment", {"aligner": aligner.name, "key": key, "file": str(path),
                                          "frames_changed": moved})
    return executor.with_data(sweep, dataclasses.replace(splits, train_y=targets), executor.transfer)


def teacher_keys(sweep: SweepConfig, root: files.Location) -> dict[str, str]:
    """Each teacher's logit-cache key (its members must be finished with the sweep's settings), computed once
    per phase: each costs a read and hash of every member's weights."""
    return {t.name: cache.expected_key(root, sweep.data, t) for t in sweep.teachers}


def jobs(sweep: SweepConfig, root: files.Location, keys: dict[str, str] | None = None) -> list[Job]:
    """Every cell of the grid as a job, its id hashing what decides its result: the teachers' cache keys
    (`keys`, by teacher name; `teacher_keys` when not given)."""
    keys = teacher_keys(sweep, root) if keys is None else keys
    return [job(sweep, cell, keys) for cell in sweep.cells()]


def job(sweep: SweepConfig, cell: StudentConfig, keys: dict[str, str]) -> Job:
    """The job of one resolved cell: readable name + hash of (cell, data identity, its teachers' cache keys)."""
    members = {t.name: t.members for t in sweep.teachers}

    def key(name: str) -> str | None:
        return keys[parse(name, members)[0]] if name else None

    reference = sweep.reference(cell)
    identity = {"cell": to_dict(cell), "data": cache.data_identity(sweep.data), "teacher": key(cell.teacher),
                "reference": key(reference)}
    arch = "" if cell.arch == "snn" else f"{cell.arch}-"
    name = f"{cell.target}-{arch}h{cell.hidden}-k{cell.bottleneck or 0}-{cell.teacher or 'labels'}-s{cell.train.seed}"
    if cell.transfer_views is not None:  # its transfer set: the train inputs and this many views of each
        name += f"-v{cell.transfer_views}"
    return Job(f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{files.digest(identity)[:8]}", cell, cell.teacher,
               reference)


def trial_dir(root: files.Location, job: Job, searched: dict | None = None) -> files.Location:
    """Where a trial of `job` lives; a searched trial gets a sub-folder per sampled setting."""
    d = files.location(root) / "students" / job.id
    return d / files.digest(searched)[:12] if searched else d


def finished(root: files.Location, job: Job, searched: bool) -> list[dict]:
    """The rows of `job`'s finished trials (row.json present)."""
    d = trial_dir(root, job)
    dirs = [c for c in d.glob("*") if c.is_dir()] if searched else [d]
    return [files.read_json(t / "row.json") for t in dirs if (t / "row.json").exists()]


def students(sweep: SweepConfig, root: files.Location, executor: Executor, log: Log,
             keys: dict[str, str] | None = None, record_path: files.Location | None = None):
    """Run every trial that has not finished, then collect every row of this sweep's jobs into the results.
    `keys`: the teachers' cache keys, if the caller has them (`teacher_keys`).

    With a search and `per_seed=False` (the fair protocol) each target and student shape is searched once, on
    the first seed (and, for teacher targets, the first of `student_teachers`); the setting chosen there by val
    error is written to `choices.json` (and the run record at `record_path`), and the shape's other seeds and
    teachers train once with it."""
    root, searched = files.location(root), sweep.search.samples > 1
    keys = teacher_keys(sweep, root) if keys is None else keys
    todo = jobs(sweep, root, keys)
    protocol = searched and not sweep.search.per_seed
    first = [j for j in todo if not protocol or searched_first(sweep, j)]
    formed: dict = {}

    def logits() -> dict:  # formed once, and only if some trial is left to run
        if not formed:
            formed.update(cache.teacher_logits(root, sweep.data, sweep.teachers, uses(todo), keys))
        return formed

    done, errored = run_jobs(sweep, root, executor, first, logits, searched, log)
    if protocol:
        choices, fixed = chosen(sweep, first, done, todo, keys, log)
        files.write_json(root / "choices.json", choices)
        if record_path is not None:
            record.add(record_path, "choices", choices)
        more, errored_more = run_jobs(sweep, root, executor, fixed, logits, False, log)
        done, errored = done | more, errored + errored_more
    rows = [row for rows_ in done.values() for row in rows_] + errored
    frame = results.write(root, rows, to_dict(sweep))
    failed = int((frame["status"] != "ok").sum()) if len(frame) else 0
    log(f"students: {len(frame)} trials, {failed} not finished ok; results in {root / 'results.parquet'}")
    return frame


def run_jobs(sweep: SweepConfig, root: files.Location, executor: Executor, todo: list[Job],
             logits: Callable[[], dict], searched: bool, log: Log) -> tuple[dict[str, list[dict]], list[dict]]:
    """Run the trials of `todo` that have not finished (a searched job: until it has `samples` rows), with the
    teachers' mean logits from `logits()`; returns every job's finished rows by job id, and the rows of trials
    that errored."""
    want = sweep.search.samples if searched else 1
    done = {j.id: finished(root, j, searched) for j in todo}
    pending = [j for j in todo if len(done[j.id]) < want]
    if len(pending) < len(todo):
        log(f"students: {len(todo) - len(pending)} of {len(todo)} cells finished before with these settings, kept")
    if not pending:
        return done, []
    errored = executor.run_students(pending, logits(), {j.id: done[j.id] for j in pending}, searched)
    return done | {j.id: finished(root, j, searched) for j in pending}, errored  # only jobs that ran have new rows


def space(sweep: SweepConfig, target: str) -> list[str]:
    """The settings a search samples for a student of `target`, of those given a range: the train settings, the
    hidden dropout for label targets (a teacher's logits need no dropout to regularise them), and the settings
    the target's own loss reads (KD's temperature and weight)."""
    entry = TARGETS[target]
    wanted = {"train": True, "arch_args": not entry.teacher}
    return [k for k, where in SEARCHED.items() if getattr(sweep.search, k) is not None
            and (k in entry.settings if where == "cell" else wanted[where])]


def setting(row: dict, names: list[str]) -> dict:
    """The searched settings a finished row was trained with ({'lr': ..., 'dropout': ...})."""
    column = {"train": "train.{}", "arch_args": "arch_args.{}", "cell": "{}"}
    return {k: row.get(column[SEARCHED[k]].format(k), 0.0) for k in names}  # a missing dropout: none, 0.0


def searched_first(sweep: SweepConfig, job: Job) -> bool:
    """Whether the protocol searches this job: the first seed, and the first student teacher (teacher targets)."""
    return job.cell.train.seed == sweep.seeds[0] and job.cell.teacher in ("", *sweep.student_teachers[:1])


def choose(rows: list[dict]) -> dict | None:
    """The finished trial of lowest val error (ties: the first): the protocol's choice. Test error is never read."""
    ok = [r for r in rows if r.get("status") == "ok"]
    return min(ok, key=lambda r: r["val_error"]) if ok else None


def chosen(sweep: SweepConfig, first: list[Job], done: dict[str, list[dict]], todo: list[Job],
           keys: dict[str, str], log: Log) -> tuple[list[dict], list[Job]]:
    """(each searched shape's choice, the other seeds' and teachers' jobs with it)."""
    def cell_key(cell: StudentConfig) -> str:  # a target and student shape: the cell without seed and teacher
        return files.digest(to_dict(dataclasses.replace(cell, teacher="", train=dataclasses.replace(cell.train,
                                                                                                   seed=0))))

    picks, choices = {}, []
    for j in first:
        best, names = choose(done[j.id]), space(sweep, j.cell.target)
        if best is None:
            log(f"students: {j.id}: no search trial finished: its other seeds do not run")
            continue
        picks[cell_key(j.cell)] = setting(best, names)
        choices.append({"job": j.id, "target": j.cell.target, "teacher": j.cell.teacher, "hidden": j.cell.hidden,
                        "bottleneck": j.cell.bottleneck, "arch": j.cell.arch,
                        "transfer_views": j.cell.transfer_views, "seed": j.cell.train.seed,
                        "samples": len(done[j.id]), "settings": picks[cell_key(j.cell)],
                        "val_error": best["val_error"], "trial_dir": best["trial_dir"]})
    fixed = [job(sweep, searched_cell(j, picks[cell_key(j.cell)]), keys) for j in todo
             if j not in first and cell_key(j.cell) in picks]
    return choices, fixed


def needs(job: Job) -> list[tuple[str, str]]:
    """The (teacher name, split) mean logits a job receives: its teacher's on the transfer set (to learn from) and
    its reference's on test (to be compared with); nothing else of a teacher reaches it."""
    return [k for k in ((job.teacher, "transfer"), (job.reference, "test")) if k[0]]


def uses(todo: list[Job]) -> dict[str, set[str]]:
    """Which teachers' mean logits the jobs need, and on which splits (`needs`, gathered)."""
    out: dict[str, set[str]] = {}
    for job in todo:
        for name, split in needs(job):
            out.setdefault(name, set()).add(split)
    return out


def given(job: Job, logits: dict[tuple[str, str], object]) -> tuple[object | None, object | None]:
    """(what the job learns from, what it is compared with) of `logits` keyed as `uses` says; None where unused."""
    return logits.get((job.teacher, "transfer")) if job.teacher else None, \
        logits.get((job.reference, "test")) if job.reference else None


def searched_cell(job: Job, searched: dict) -> StudentConfig:
    """The job's cell with one sampled setting of a search ({'lr': ..., 'dropout': ...}; {} without one)."""
    where = {w: {k: v for k, v in searched.items() if SEARCHED[k] == w} for w in ("train", "arch_args", "cell")}
    return dataclasses.replace(job.cell, **where["cell"], train=dataclasses.replace(job.cell.train, **where["train"]),
                               arch_args={**job.cell.arch_args, **where["arch_args"]})


def run(sweep: SweepConfig, root: files.Where, executor: Executor, command: str = "run", log: Log = print,
        argv: list[str] | None = None):
    """A sweep command, as `python -m distill` runs it and a notebook can: `teachers` trains and harvests,
    `sweep` trains the students (their teachers must be harvested), `run` does both. Returns the results
    frame (None for `teachers`).

    It holds the sweep's lease throughout (one driver per sweep), and writes this invocation's record
    (`runs/`) once its checks passed, before any work."""
    root = files.location(root)
    with lease.hold(root, " ".join(argv or ["distill", command, sweep.name]), log=log):
        # For `sweep`, teachers that are missing or trained with other settings fail here, before anything runs.
        keys = teacher_keys(sweep, root) if command == "sweep" else None
        path = record.write(root, sweep, argv or ["distill", command, sweep.name], executor.splits)
        if sweep.data.realign:
            executor = realigned(sweep, root, executor, log, path)
        if command in ("teachers", "run"):
            teachers(sweep, root, executor, log)
        return students(sweep, root, executor, log, keys, path) if command in ("sweep", "run") else None
