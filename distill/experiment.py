"""The steps of an experiment in plain PyTorch: prepare data, train a teacher member, harvest its logits,
train and evaluate one student. The Ray adapters call exactly these; `run_local` chains them in-process.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import psutil
import torch
from torch import nn

from distill import data, files, losses, models, speech
from distill.config import DataConfig, StudentConfig, TeacherConfig, to_dict
from distill.errors import UserError
from distill.targets import TARGETS
from distill.train import Diverged, Fit, Report, agreement, error, fit, infer, logit_rmse

SPLITS = ("transfer", "val", "test")


def prepare(config: DataConfig, device: str | torch.device = "cpu") -> tuple[data.Splits, data.TransferSet]:
    splits = data.load(config.name, config.root, val_size=config.val_size, seed=config.seed, device=device,
                       args=dict(config.args), compact=config.compact)
    return splits, data.transfer_set(splits, config.views, shift=config.shift, seed=config.seed)


def build_member(teacher: TeacherConfig, index: int, splits: data.Splits) -> nn.Module:
    torch.manual_seed(teacher.train.seed + index)  # member i's initialisation
    return models.build(teacher.arch, splits.shape, splits.classes, **teacher.arch_args)


def teacher_facts(teacher: TeacherConfig, splits: data.Splits) -> dict:
    """A teacher's architecture in the paper's notation, #params and #hidden units of one member, and its size."""
    with torch.device("meta"):  # counts without allocating
        model = build_member(teacher, 0, splits)
    return {"name": teacher.name, **models.facts(model, splits.shape), "members": teacher.members}


def member_task(teacher: TeacherConfig, index: int, splits: data.Splits, transfer: data.TransferSet,
                rank: int = 0, world: int = 1):
    """Member `index`'s (inputs, labels, train config): cross-entropy on the augmented transfer set.

    With `world` data-parallel workers, worker `rank` takes every world-th input, all shards cut to the
    same length so that every worker runs the same number of steps (DDP needs that).
    """
    x, y = transfer.x, splits.train_y[transfer.source]
    if world > 1:
        shard = torch.arange(rank, len(x) // world * world, world, device=y.device)
        x, y = x.take(shard), y[shard]
    return x, y, dataclasses.replace(teacher.train, seed=teacher.train.seed + index)


def train_member(teacher: TeacherConfig, index: int, splits: data.Splits, transfer: data.TransferSet,
                 report: Report | None = None, resume: dict | None = None,
                 wrap: Callable[[nn.Module], nn.Module] | None = None, rank: int = 0,
                 world: int = 1) -> tuple[nn.Module, Fit]:
    """Train ensemble member `index` (seed = train.seed + index) by cross-entropy on the augmented inputs.

    Data-parallel training (Ray Train) passes `wrap` (DDP; it also places the model) and its worker's
    `rank` of `world`; the returned model is the plain one, unwrapped."""
    model = build_member(teacher, index, splits).to(splits.train_x.device)
    trained = wrap(model) if wrap is not None else model
    x, y, config = member_task(teacher, index, splits, transfer, rank, world)
    result = fit(trained, x, y, losses.cross_entropy, (splits.val_x, splits.val_y), config, report, resume)
    return getattr(trained, "module", trained), result


def harvest(model: nn.Module, splits: data.Splits, transfer: data.TransferSet, dtype: torch.dtype,
            batch_size: int = 1024) -> dict[str, torch.Tensor]:
    """One member's logits on every split the students need: {'transfer', 'val', 'test'} -> (N, C) in `dtype`
    (fp16 for a compact cache: half the bytes, converted back per batch)."""
    xs = {"transfer": transfer.x, "val": splits.val_x, "test": splits.test_x}
    return {split: infer(model, xs[split], batch_size, dtype) for split in SPLITS}


def student_task(cell: StudentConfig, splits: data.Splits, transfer: data.TransferSet,
                 teacher: torch.Tensor | None):
    """What a student learns from: (inputs, targets, loss) for its target (distill.targets).
    `teacher`: its teacher's logits on the transfer set (N_transfer, C), None for label targets."""
    target = TARGETS[cell.target]
    n = len(splits.train_x)  # the transfer set starts with the train inputs themselves
    x = splits.train_x if target.inputs == "train" else transfer.x
    if not target.teacher:  # labels; on the transfer set each view carries its source image's label
        y = splits.train_y if target.inputs == "train" else splits.train_y[transfer.source]
    elif teacher is None:
        raise UserError(f"target {cell.target!r} needs teacher logits: run `distill teachers` first")
    else:
        y = teacher[:n] if target.inputs == "train" else teacher
    return x, y, lambda out, t: target.loss(out, t, cell.temperature)


def build_student(cell: StudentConfig, splits: data.Splits) -> nn.Module:
    torch.manual_seed(cell.train.seed)
    return models.build(cell.arch, splits.shape, splits.classes, hidden=cell.hidden,
                        bottleneck=cell.bottleneck, **cell.arch_args)


def cell_columns(cell: StudentConfig) -> dict:
    """A row's settings: one column per setting of the resolved student config, the seed once (`seed`)."""
    columns = flatten(to_dict(cell))
    columns["seed"] = columns.pop("train.seed")
    return columns


def run_student(cell: StudentConfig, splits: data.Splits, transfer: data.TransferSet,
                teacher: torch.Tensor | None, reference: torch.Tensor | None,
                report: Report | None = None, resume: dict | None = None) -> dict:
    """Train one student and return its result row: config, #params, errors, agreement, time.

    `teacher` holds the transfer-set logits the student learns from (mimic, kd), (N_transfer, C); `reference`
    the test logits (N_test, C) of the teacher it is compared with (agreement, logit RMSE), so that
    label-trained students are measured the same way. These are all a student receives of its teachers.
    """
    x, target, loss = student_task(cell, splits, transfer, teacher)
    model = build_student(cell, splits).to(splits.train_x.device)
    t0 = time.perf_counter()
    result = fit(model, x, target, loss, (splits.val_x, splits.val_y), cell.train, report=report, resume=resume)
    val, test = infer(model, splits.val_x), infer(model, splits.test_x)
    row = {**cell_columns(cell), "status": "ok", **models.facts(model, splits.shape), "transfer_size": len(x),
           "val_error": error(val, splits.val_y),
           "test_error": error(test, splits.test_y), "epochs": result.epochs,
           "best_epoch": result.best_epoch, "resumed_from": result.resumed_from, "train_seconds": result.seconds,
           "started_at": result.started_at, "wall_seconds": time.perf_counter() - t0}
    if reference is not None:
        row["test_agreement"] = agreement(test, reference)
        row["test_logit_rmse"] = logit_rmse(test, reference.float())
    return {**row, **speech_scores(splits, {"val": val, "test": test})}


def student_trial(cell: StudentConfig, splits: data.Splits, transfer: data.TransferSet,
                  teacher: torch.Tensor | None, reference: torch.Tensor | None,
                  trial_dir: files.Location, checkpoint_every: int = 1,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """One student in its own directory: resumed from its checkpoint there (state.pt) if it has one,
    checkpointed every `checkpoint_every` epochs, its row written there last (row.json marks it done).

    A diverged trial is finished too: its row has status "failed" and the reason, and no scores. `on_epoch`
    gets each epoch's metrics (the Ray adapter forwards them to Tune)."""
    saved = trial_dir / "state.pt"
    resume = files.torch_load(saved, map_location=splits.train_x.device) if saved.exists() else None
    private = psutil.Process().memory_full_info().uss  # the process's own memory before this trial's

    def report(metrics: dict, state: Callable[[], dict]) -> None:
        if metrics["epoch"] % checkpoint_every == 0:
            files.write_bytes(saved, files.torch_bytes(state()))
        if on_epoch is not None:
            on_epoch(metrics)

    try:
        row = run_student(cell, splits, transfer, teacher, reference, report, resume)
        # What this trial added to its process (model, optimizer, batches, allocator caches, and any private
        # copy of the shared data, which should be none): the figure the memory benchmark sums over trials.
        row["trial_private_mib"] = (psutil.Process().memory_full_info().uss - private) / 2**20
        row["trial_dir"] = str(trial_dir)
    except Diverged as e:
        row = ended_row(cell, trial_dir, "failed", str(e))
    files.write_json(trial_dir / "row.json", row)
    return row


def ended_row(cell: StudentConfig, trial_dir: files.Location, status: str, reason: str) -> dict:
    """The row of a trial that ended without scores (diverged, stopped early by the scheduler, or its process
    failed every retry): its settings, status and reason, nothing measured."""
    return {**cell_columns(cell), "status": status, "reason": reason, "trial_dir": str(trial_dir)}


def speech_scores(splits: data.Splits, logits: dict[str, torch.Tensor]) -> dict:
    """Phone error rate and folded frame error per split ({'test_per', 'test_fer', ...}) for data sets that
    carry utterance lengths (speech); {} for images. logits: {split: (N, C)}."""
    if splits.test_lengths is None:
        return {}
    scores = {}
    for split, out in logits.items():
        pred, ref = out.argmax(1), splits.split(split)[1]
        scores[f"{split}_per"] = speech.per(pred, ref, getattr(splits, f"{split}_lengths"), splits.fold)
        scores[f"{split}_fer"] = speech.frame_error(pred, ref, splits.fold)
    return scores


def flatten(d: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}: one column per setting in the results table."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty dict (no arch_args) adds no column
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
