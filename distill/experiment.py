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

from distill import data, decode, files, losses, models, speech
from distill.config import DataConfig, StudentConfig, TeacherConfig, to_dict
from distill.errors import UserError
from distill.targets import TARGETS
from distill.train import Diverged, Fit, Report, agreement, error, fit, infer, logit_rmse

SPLITS = ("transfer", "val", "test")


def prepare(config: DataConfig, device: str | torch.device = "cpu") -> tuple[data.Splits, data.TransferSet]:
    splits = data.load(config.name, config.root, val_size=config.val_size, seed=config.seed, device=device,
                       args=dict(config.args), compact=config.compact)
    # The largest transfer set any student learns on; the teachers train on its first `views` views.
    return splits, data.transfer_set(splits, config.harvest_views(), shift=config.shift, seed=config.seed,
                                     teacher_views=config.views)


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
    transfer = transfer.recipe(transfer.teacher_views)  # the teachers' own views (students may have more)
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
    if target.inputs == "transfer" and cell.transfer_views is not None:  # its recipe: the start of the harvested set
        transfer = transfer.recipe(cell.transfer_views)
        teacher = None if teacher is None else teacher[:len(transfer.source)]
    n = len(splits.train_x)  # the transfer set starts with the train inputs themselves
    x = splits.train_x if target.inputs == "train" else transfer.x
    if not target.teacher:  # labels; on the transfer set each view carries its source image's label
        y = splits.train_y if target.inputs == "train" else splits.train_y[transfer.source]
    elif teacher is None:
        raise UserError(f"target {cell.target!r} needs teacher logits: run `distill teachers` first")
    else:
        y = teacher[:n] if target.inputs == "train" else teacher
        if target.labels:  # and the labels of the same inputs (KD's label term): each view its source's label
            y = (y, splits.train_y if target.inputs == "train" else splits.train_y[transfer.source])
    return x, y, lambda out, t: target.loss(out, t, cell)


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
                report: Report | None = None, resume: dict | None = None,
                keep: Callable[[nn.Module], dict] | None = None) -> dict:
    """Train one student and return its result row: config, #params, errors, agreement, time.

    `teacher` holds the transfer-set logits the student learns from (mimic, kd), (N_transfer, C); `reference`
    the test logits (N_test, C) of the teacher it is compared with (agreement, logit RMSE), so that
    label-trained students are measured the same way. These are all a student receives of its teachers.
    `keep` gets the trained model (the best epoch's weights: `fit` restores them), the one the row scores; the
    columns it returns join the row (`student_trial` saves the weights and adds their hash).
    """
    x, target, loss = student_task(cell, splits, transfer, teacher)
    model = build_student(cell, splits).to(splits.train_x.device)
    t0 = time.perf_counter()
    result = fit(model, x, target, loss, (splits.val_x, splits.val_y), cell.train, report=report, resume=resume)
    kept = keep(model) if keep is not None else {}
    val, test = infer(model, splits.val_x), infer(model, splits.test_x)
    row = {**cell_columns(cell), "status": "ok", **models.facts(model, splits.shape), "transfer_size": len(x),
           "val_error": error(val, splits.val_y),
           "test_error": error(test, splits.test_y), "epochs": result.epochs,
           "best_epoch": result.best_epoch, "resumed_from": result.resumed_from, "train_seconds": result.seconds,
           "started_at": result.started_at, "wall_seconds": time.perf_counter() - t0}
    if reference is not None:
        row["test_agreement"] = agreement(test, reference)
        row["test_logit_rmse"] = logit_rmse(test, reference.float())
    return {**row, **kept, **speech_scores(splits, {"val": val, "test": test})}


MODEL = "model.pt"  # a finished trial's kept weights, in its trial directory (what `distill export` ships)


def kept_weights(model: nn.Module, splits: data.Splits) -> dict:
    """What a trial keeps of its student: the weights on the CPU and what inference needs beside them, the input
    shape, the class count, the speech context (frames each side; 0 for images) and the train split's per-channel
    normalisation (mean, std: (1, C, 1, 1) fp32 in the units the data set stores), so that an export needs no
    data."""
    return {"model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "input_shape": list(splits.shape), "classes": splits.classes, "context": splits.train_x.context,
            "input_mean": splits.train_x.mean.cpu(), "input_std": splits.train_x.std.cpu()}


def student_trial(cell: StudentConfig, splits: data.Splits, transfer: data.TransferSet,
                  teacher: torch.Tensor | None, reference: torch.Tensor | None,
                  trial_dir: files.Location, checkpoint_every: int = 1,
                  on_epoch: Callable[[dict], None] | None = None) -> dict:
    """One student in its own directory: resumed from its checkpoint there (state.pt) if it has one,
    checkpointed every `checkpoint_every` epochs, its best weights kept there (model.pt, `kept_weights`, their
    sha256 in the row as `model_sha256`), its row written there last (row.json marks it done).

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

    def keep(model: nn.Module) -> dict:
        # Written before row.json, which marks the trial done; its hash in the row lets an export tell a damaged
        # or replaced file.
        payload = files.torch_bytes(kept_weights(model, splits))
        files.write_bytes(trial_dir / MODEL, payload)
        return {"model_sha256": files.sha256(payload)}

    try:
        row = run_student(cell, splits, transfer, teacher, reference, report, resume, keep)
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
    """Speech scores per split of logits {split: (N, C)}, {} for images: `{split}_per` (decoded phone error
    rate, `decoded_per`), `{split}_collapse_per` (frame argmaxes collapsed to phones, no decoding: isolated
    errors become insertions) and `{split}_fer` (folded frame error)."""
    if splits.test_lengths is None:
        return {}
    scores = {}
    for split, out in logits.items():
        pred, ref = out.argmax(1), splits.split(split)[1]
        scores[f"{split}_collapse_per"] = speech.per(pred, ref, getattr(splits, f"{split}_lengths"), splits.fold)
        scores[f"{split}_fer"] = speech.frame_error(pred, ref, splits.fold)
    return scores | decoded_per(splits, logits)


def decoder(splits: data.Splits) -> decode.Decoder:
    """The HMM decoder estimated from train alone: state priors and transitions from the train frame targets
    (whatever alignment they hold), the phone bigram from the train transcriptions."""
    return decode.Decoder.fit(splits.train_y.cpu(), splits.train_lengths.cpu(),
                              speech.unpad_sequences(splits.train_phones))


def decoded_per(splits: data.Splits, logits: dict[str, torch.Tensor]) -> dict:
    """PER as the paper scores it: each utterance decoded (`distill.decode`: HMMs, phone bigram, Viterbi) and
    scored against its folded transcription. The LM weight and insertion penalty are chosen on val alone
    (`decode.choose` is given no test data) and recorded; test is decoded once, with them. {} for a data set
    without transcriptions, or without val logits (nothing to choose them on). logits: {split: (N, C)}."""
    if splits.train_phones is None or "val" not in logits:
        return {}
    model = decoder(splits)
    refs = speech.unpad_sequences(splits.val_phones)
    w, pen, val_per = decode.choose(logits["val"].float(), splits.val_lengths, refs, model)
    out = {"val_per": val_per, "decode_lm_weight": w, "decode_insertion_penalty": pen}
    if "test" in logits:
        hyps = decode.decode(logits["test"].float(), splits.test_lengths, model, w, pen)
        out["test_per"] = decode.phone_error(hyps, speech.unpad_sequences(splits.test_phones))
    return out


def realigned_targets(splits: data.Splits, logits: torch.Tensor) -> torch.Tensor:
    """Forced alignment: (N_train,) train targets whose 3 states inside every transcribed segment follow the
    Viterbi path under `logits` (N_train, C), a trained net's train-frame logits (the paper's recipe: the
    first teacher's); every frame keeps its phone and every phone boundary stays. Retraining on them is one
    pass of realignment; the HMM used is the one estimated from the current targets."""
    model = decoder(splits)
    loglik = decode.scaled_loglik(logits.float().cpu(), model.log_priors)  # (N_train, C)
    phone = splits.train_y.cpu() // speech.STATES
    new = decode.realign(loglik, phone, splits.train_lengths.cpu(), model.hmm, splits.train_segments.cpu())
    return new.to(splits.train_y.device)


def flatten(d: dict, prefix: str = "") -> dict:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}: one column per setting in the results table."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # an empty dict (no arch_args) adds no column
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
