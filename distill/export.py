"""Take a student away: the best trial of a sweep's results, chosen by val error, written for deployment.

`python -m distill export RESULTS_DIR --where "target == 'mimic' and hidden == 1024" [--out DIR]` writes three
files: `model.safetensors` (the student's weights, as `distill.models.build` names them), `model.onnx` (the
student behind its input normalisation: raw float inputs in, logits out) and `model.json`, its model card.

Every finished trial keeps its best epoch's weights in its trial directory (`experiment.MODEL`, model.pt, with
the data's normalisation and input shape), their sha256 in its row; the export verifies that hash, loads the
file weights-only and rebuilds the student from the row's settings, so it needs no data and no Ray.
"""

from __future__ import annotations

import calendar
import dataclasses
import io
import json
import time
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from distill import experiment, files, models, results
from distill.config import StudentConfig, to_dict
from distill.errors import UserError
from distill.train import TrainConfig

FILES = ("model.safetensors", "model.onnx", "model.json")
# Of a row, what the model card reports as scores when the row has them (speech adds phone error rates).
SCORES = ("val_error", "test_error", "test_agreement", "test_logit_rmse", "val_per", "test_per", "val_fer",
          "test_fer")


class Normalised(nn.Module):
    """The student behind the normalisation it was trained with, as `distill.data.Inputs` applies it per batch:
    (x - mean) / std per channel, with the train split's statistics. What the ONNX file holds."""

    def __init__(self, student: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.student = student
        self.register_buffer("mean", mean)  # (1, C, 1, 1) fp32
        self.register_buffer("std", std)  # (1, C, 1, 1) fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) raw values in fp32 -> (B, classes) logits
        return self.student((x - self.mean) / self.std)


def main(results_dir: files.Where, where: str | None = None, out: files.Where | None = None,
         log=print) -> files.Location:
    """The CLI's `export`: choose, verify, write the three files into `out` (default RESULTS_DIR/export/<trial>),
    and say where they went."""
    root = files.location(results_dir)
    frame = results.load(root)
    row, candidates = choose(frame, where)
    trial = files.location(row["trial_dir"])
    out = files.location(out) if out is not None else root / "export" / trial.name
    written = write(row, root, out, where, candidates)
    log(f"exported trial {trial.name} ({row['target']}, hidden {row['hidden']}, val error {row['val_error']:.4f}, "
        f"test error {row['test_error']:.4f}; the best of {candidates} by val error) to {out}: {', '.join(written)}")
    return out


def choose(frame: pd.DataFrame, where: str | None) -> tuple[dict, int]:
    """The finished row (status ok) of lowest val error among those `where` (a pandas query) selects, and how many
    there were. Ties go to the smaller model, then the trial name: test error chooses nothing."""
    selected = frame
    if where:
        try:
            selected = frame.query(where)
        except Exception as e:  # pandas raises SyntaxError, NameError kinds, TypeError, ValueError, KeyError...
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"bad --where {where!r} ({type(e).__name__}: {reason}): write a pandas query over the "
                            "results' columns, e.g. \"target == 'mimic' and hidden == 1024\" (dotted names in "
                            f"backticks: `train.lr`); the columns are {', '.join(map(str, frame.columns))}") from None
    finished = selected[selected["status"] == "ok"]
    if finished.empty:
        matched = f"{len(selected)} trial(s) match it but none finished" if len(selected) else "no trial matches it"
        present = "; ".join(f"{c}: {values(frame[c])}" for c in ("target", "hidden", "bottleneck") if c in frame)
        raise UserError(f"nothing to export from these results for --where {where!r}: {matched} ({len(frame)} "
                        f"trials; {present}): change --where, or run the sweep that trains such a student")
    best = finished.sort_values(["val_error", "params", "trial_dir"], kind="stable").iloc[0]
    return {k: plain(v) for k, v in best.items()}, len(finished)


def values(column: pd.Series) -> str:
    """The distinct values of a column, in order, 'none' for a missing one (no bottleneck): '16, 32, none'."""
    given = sorted(column.dropna().unique())
    return ", ".join([*map(str, given), *(["none"] if column.isna().any() else [])])


def plain(value):
    """A results cell as a plain Python value: NaN and <NA> (a setting this row lacks) -> None, numpy scalars ->
    int/float/str, arrays (parquet's lists, e.g. arch_args channels) -> lists."""
    if isinstance(value, np.ndarray | list | tuple):
        return [plain(v) for v in value]
    if value is None or pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def student_config(row: Mapping) -> StudentConfig:
    """The StudentConfig a row was trained with: `experiment.cell_columns` read back. Settings the row lacks (None:
    another architecture's arch_args, a dropout only label targets searched) keep their defaults."""
    settings = {k: v for k, v in row.items() if v is not None}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train = {k.removeprefix("train."): v for k, v in settings.items()
             if k.startswith("train.") and k.removeprefix("train.") in train_fields}
    arch_args = {k.removeprefix("arch_args."): v for k, v in settings.items() if k.startswith("arch_args.")}
    own = {f.name for f in dataclasses.fields(StudentConfig)} - {"arch_args", "train", "bottleneck"}
    return StudentConfig(**{k: settings[k] for k in own if k in settings}, bottleneck=row.get("bottleneck"),
                         arch_args=arch_args, train=TrainConfig(**train, seed=row["seed"]))


def kept(row: Mapping) -> dict:
    """The trial's model.pt (`experiment.kept_weights`), verified against the sha256 in its row, loaded weights-only."""
    trial = files.location(row["trial_dir"])
    path = trial / experiment.MODEL
    redo = (f"delete {trial / 'row.json'} and run the sweep command again: the trial resumes from its checkpoint "
            "(state.pt) and keeps its weights")
    if row.get("model_sha256") is None:
        raise UserError(f"trial {trial.name} finished before distill kept students' weights (its row has no "
                        f"model_sha256): {redo}")
    if not path.exists():
        raise UserError(f"{path} is missing (its row says the trial kept it): {redo}")
    payload = path.read_bytes()
    if files.sha256(payload) != row["model_sha256"]:
        raise UserError(f"{path} does not match the sha256 its row recorded: it was damaged or replaced; {redo}")
    return files.load_tensors(payload, path)


def rebuild(cell: StudentConfig, weights: dict) -> nn.Module:
    """The student of `cell` (as `experiment.build_student` builds it) with the kept weights, in eval mode."""
    model = models.build(cell.arch, weights["input_shape"], weights["classes"], hidden=cell.hidden,
                         bottleneck=cell.bottleneck, **cell.arch_args)
    try:
        model.load_state_dict(weights["model"])
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:300]
        raise UserError(f"the kept weights do not fit the student its row describes ({reason}): the results and the "
                        "trial directory come from different runs; run the sweep command again") from None
    return model.eval()


def onnx_bytes(model: nn.Module, weights: dict) -> bytes:
    """`model` behind its normalisation (`Normalised`) as an ONNX graph: input `input` (batch, *input shape) fp32,
    output `logits` (batch, classes), the batch axis dynamic.

    TorchScript's exporter (`dynamo=False`): the new one needs onnxscript and took 17 s against under 1 s for a
    small student on one core here, and these students are plain Linear/Conv/ReLU/pool layers either handles."""
    wrapped = Normalised(model, weights["input_mean"].float(), weights["input_std"].float()).eval()
    example = torch.zeros(2, *weights["input_shape"])  # (2, C, H, W): any batch size, the axis is dynamic
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice, on every export
        torch.onnx.export(wrapped, (example,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buf.getvalue()


def safetensors_bytes(model: nn.Module, metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous() for k, v in model.state_dict().items()}, metadata=metadata)


def run_record(root: files.Location, started_at: float | None) -> tuple[str | None, dict]:
    """(id, record) of the invocation that trained the trial: the last run record (`runs/*.json`, named by UTC
    start time) that started no later than the trial's `started_at` (the Unix time its last `fit` began), else the
    first; (None, {}) for results without records."""
    chosen = None
    for path in (root / "runs").glob("*.json"):  # sorted by name: chronological
        rec = files.read_json(path)
        started = calendar.timegm(time.strptime(rec["started"], "%Y-%m-%dT%H:%M:%SZ")) if "started" in rec else 0
        if chosen is None or started_at is None or started <= started_at:
            chosen = (path.name.removesuffix(".json"), rec)
    return chosen or (None, {})


def card(row: dict, cell: StudentConfig, model: nn.Module, weights: dict, record_id: str | None, record: dict,
         where: str | None, candidates: int) -> dict:
    """The model card: what the student is, what it takes and gives, how good it is, where it came from."""
    data = record.get("data", {})
    # A student's teacher is an ensemble, its first n members or one member ("ecnn", "ecnn[:4]", "ecnn[2]"); the
    # record describes each ensemble (architecture, #params of one member, members). Label targets have none.
    base = cell.teacher.split("[")[0]
    facts = next((t for t in record.get("teachers", []) if t.get("name") == base), {})
    teacher = {"name": cell.teacher, **{k: v for k, v in facts.items() if k != "name"}} if cell.teacher else None
    architecture, units = models.describe(model, weights["input_shape"])
    return {
        "trial": files.location(row["trial_dir"]).name,
        "chosen": {"where": where, "candidates": candidates,
                   "rule": "lowest val_error among the finished trials --where selects; ties: fewer params"},
        "architecture": {"arch": cell.arch, "notation": architecture, "hidden": cell.hidden,
                         "bottleneck": cell.bottleneck, "arch_args": dict(cell.arch_args), "hidden_units": units,
                         "params": models.param_count(model)},
        "input": {"name": "input", "shape": ["batch", *weights["input_shape"]], "dtype": "float32",
                  "values": input_values(data, weights.get("context", 0)),
                  "normalisation": {"mean": weights["input_mean"].flatten().tolist(),
                                    "std": weights["input_std"].flatten().tolist(), "per": "channel (axis 1)",
                                    "formula": "(x - mean) / std",
                                    "where": "inside model.onnx, its first step; model.safetensors holds the "
                                             "student alone, which expects normalised inputs"}},
        "output": {"name": "logits", "shape": ["batch", weights["classes"]], "classes": weights["classes"],
                   "meaning": "unnormalised class scores (logits); the prediction is their argmax"},
        "scores": {k: row[k] for k in SCORES if row.get(k) is not None},
        "target": cell.target,
        "teacher": teacher,
        "training": {"config": to_dict(cell), "epochs": row.get("epochs"), "best_epoch": row.get("best_epoch"),
                     "transfer_size": row.get("transfer_size"), "train_seconds": row.get("train_seconds")},
        "data": {**data, "config": record.get("config", {}).get("data")},
        "run_record": {"id": record_id, "code": record.get("code"), "versions": record.get("versions")},
        "weights_sha256": row["model_sha256"],
    }


def input_values(data: dict, context: int) -> str:
    """What the ONNX model's input holds, in words: the data set's values as distill stores them, unnormalised."""
    stored = data.get("stored")
    what = ("pixel values 0-255 (uint8 in distill's store) as float32, not scaled to 0-1" if stored == "uint8" else
            f"the data set's values as distill stores them ({stored or 'see data'}), as float32")
    if context:  # speech: `distill.data.Inputs` gathers each frame's neighbours per batch
        what += (f"; each input is one frame with its {context} neighbours on either side along the last axis "
                 f"({2 * context + 1} frames), clamped to the frame's utterance")
    return f"raw {what}; not normalised (the model normalises them)"


def write(row: dict, root: files.Location, out: files.Location, where: str | None, candidates: int) -> list[str]:
    """Write model.safetensors, model.onnx, then model.json (last: it names the other two by their sha256)."""
    weights = kept(row)
    cell = student_config(row)
    model = rebuild(cell, weights)
    record_id, record = run_record(root, row.get("started_at"))
    info = card(row, cell, model, weights, record_id, record, where, candidates)
    payloads = {"model.safetensors": safetensors_bytes(model, {"distill_trial": info["trial"],
                                                               "architecture": info["architecture"]["notation"]}),
                "model.onnx": onnx_bytes(model, weights)}
    check_onnx(payloads["model.onnx"])
    for name, payload in payloads.items():
        files.write_bytes(out / name, payload)
    info["files"] = {name: files.sha256(payload) for name, payload in payloads.items()}
    files.write_bytes(out / "model.json", (json.dumps(info, indent=2, default=str) + "\n").encode())
    return list(FILES)


def check_onnx(payload: bytes) -> None:
    """The ONNX checker on the exported graph: an exporter bug fails here, not in someone's runtime."""
    import onnx

    onnx.checker.check_model(onnx.load_from_string(payload))
