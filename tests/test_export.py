"""Export: a finished sweep's best student by val error, as safetensors, ONNX and a model card. The ONNX file,
run by onnxruntime on the raw test inputs, gives PyTorch's logits; every mistake a user can make is one line."""

import json
import shutil

import numpy as np
import onnxruntime
import pytest
import torch
from safetensors.torch import load as load_safetensors

from distill import experiment, export, files, local, models, pipeline, results
from distill.__main__ import main
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig, error, infer

TEACHER = TeacherConfig(name="t", arch="cnn", arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                        train=TrainConfig(lr=0.05, batch_size=64, epochs=1))
SWEEP = SweepConfig(name="export", data=DataConfig(name="digits", val_size=200, views=1), teachers=(TEACHER,),
                    hidden=(16, 32), targets=("mimic", "labels"), student_teachers=("t",),
                    student=StudentConfig(hidden=16, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=3)))
MIMIC = "target == 'mimic'"


@pytest.fixture(scope="module")
def swept(tmp_path_factory, one_thread):
    """A finished local sweep: one teacher, 4 students (mimic and labels, 16 and 32 hidden units)."""
    root = tmp_path_factory.mktemp("export") / SWEEP.name
    splits, transfer = experiment.prepare(SWEEP.data)
    frame = pipeline.run(SWEEP, root, local.Executor(SWEEP, root, splits, transfer, print))
    assert (frame["status"] == "ok").all() and len(frame) == 4
    return root, splits, frame


@pytest.fixture(scope="module")
def exported(swept, tmp_path_factory):
    root, _, _ = swept
    out = tmp_path_factory.mktemp("out")
    assert main(["export", str(root), "--where", MIMIC, "--out", str(out)]) == 0
    return out


def test_a_finished_trial_keeps_its_best_weights_with_their_hash(swept):
    root, splits, frame = swept
    for row in frame.to_dict("records"):
        payload = (files.location(row["trial_dir"]) / experiment.MODEL).read_bytes()
        assert files.sha256(payload) == row["model_sha256"]
        kept = files.load_tensors(payload, "model.pt")
        assert kept["input_shape"] == [1, 8, 8] and kept["classes"] == 10
        assert torch.equal(kept["input_mean"], splits.train_x.mean)
        assert torch.equal(kept["input_std"], splits.train_x.std)
        # The kept weights are the ones the row scored: the best epoch's, which `fit` restored.
        model = export.rebuild(export.student_config({k: export.plain(v) for k, v in row.items()}), kept)
        assert error(infer(model, splits.val_x), splits.val_y) == row["val_error"]
        assert error(infer(model, splits.test_x), splits.test_y) == row["test_error"]


def test_export_picks_the_lowest_val_error_and_writes_three_files(swept, exported):
    root, _, frame = swept
    mimic = frame[frame["target"] == "mimic"]
    best = mimic.sort_values(["val_error", "params"]).iloc[0]
    assert sorted(p.name for p in exported.iterdir()) == ["model.json", "model.onnx", "model.safetensors"]
    card = json.loads((exported / "model.json").read_text())
    assert card["trial"] == files.location(best["trial_dir"]).name
    assert card["chosen"] == {"where": MIMIC, "candidates": 2, "rule": card["chosen"]["rule"]}
    assert card["scores"]["val_error"] == best["val_error"] and card["scores"]["test_error"] == best["test_error"]
    assert card["scores"]["test_agreement"] == best["test_agreement"]
    assert card["architecture"]["params"] == best["params"] == models.snn_params(64, best["hidden"], 10)
    assert card["architecture"]["notation"] == f"64-{best['hidden']}-10"
    assert card["input"]["shape"] == ["batch", 1, 8, 8] and card["output"]["shape"] == ["batch", 10]
    assert "raw" in card["input"]["values"] and "float16" in card["input"]["values"]  # digits are stored in fp16
    assert card["target"] == "mimic" and card["teacher"]["name"] == "t" and card["teacher"]["members"] == 1
    assert (root / "runs" / f"{card['run_record']['id']}.json").exists()
    assert card["data"]["name"] == "digits" and card["training"]["config"]["train"]["seed"] == 0
    for name in ("model.safetensors", "model.onnx"):
        assert card["files"][name] == files.sha256((exported / name).read_bytes())
    weights = load_safetensors((exported / "model.safetensors").read_bytes())
    assert sum(t.numel() for t in weights.values()) == best["params"]


def test_onnx_on_raw_test_inputs_matches_pytorch_logits(swept, exported):
    _, splits, frame = swept
    card = json.loads((exported / "model.json").read_text())
    row = frame[frame["trial_dir"].str.endswith(card["trial"])].iloc[0]
    # PyTorch: the student from model.safetensors on the test split, normalised per batch as in training.
    model = models.build("snn", (1, 8, 8), 10, hidden=int(row["hidden"]), bottleneck=None)
    model.load_state_dict(load_safetensors((exported / "model.safetensors").read_bytes()))
    reference = infer(model, splits.test_x)  # (N_test, 10)
    # ONNX: the raw inputs as distill stores them (digits: fp16 values 0-16), as float32; it normalises itself.
    raw = splits.test_x.stored.float().numpy()  # (N_test, 1, 8, 8)
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": raw})
    diff = np.abs(logits - reference.numpy()).max()
    print(f"ONNX vs PyTorch: max abs difference {diff:.2e} over {logits.shape} logits")
    np.testing.assert_allclose(logits, reference.numpy(), rtol=0, atol=1e-4)
    assert error(torch.from_numpy(logits), splits.test_y) == row["test_error"]
    assert card["input"]["normalisation"]["mean"] == splits.train_x.mean.flatten().tolist()


def test_export_defaults_to_a_folder_beside_the_results(swept, capsys):
    root, _, frame = swept
    assert main(["export", str(root), "--where", "target == 'labels' and hidden == 32"]) == 0
    (row,) = frame[(frame["target"] == "labels") & (frame["hidden"] == 32)].to_dict("records")
    out = root / "export" / files.location(row["trial_dir"]).name
    assert json.loads((out / "model.json").read_text())["teacher"] is None
    assert str(out) in capsys.readouterr().out


def copy(swept, tmp_path, change=None):
    """A results dir of the sweep's rows in tmp_path whose trials are copies (`change(row)` edits each row dict)."""
    _, _, frame = swept
    rows = []
    for row in frame.to_dict("records"):
        trial = tmp_path / "students" / files.location(row["trial_dir"]).name
        shutil.copytree(row["trial_dir"], trial)
        rows.append({**row, "trial_dir": str(trial), **(change(row) if change else {})})
    results.write(tmp_path, rows, {})
    return tmp_path


def fails(capsys, argv, *words):
    status, err = main(argv), capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("where, words", [
    ("target == 'mimic' and", ("bad --where", "SyntaxError", "target == 'mimic' and hidden == 1024")),
    ("width == 16", ("bad --where", "width", "hidden")),
    ("target == 'kd'", ("no trial matches it", "target: labels, mimic", "hidden: 16, 32", "bottleneck: none")),
])
def test_a_bad_or_empty_selection_is_one_line(swept, capsys, where, words):
    fails(capsys, ["export", str(swept[0]), "--where", where], *words)


def test_rows_from_before_weights_were_kept_say_how_to_keep_them(swept, tmp_path, capsys):
    root = copy(swept, tmp_path, lambda row: {"model_sha256": None})
    fails(capsys, ["export", str(root), "--where", MIMIC], "before distill kept students' weights", "row.json")


def test_missing_or_damaged_weights_are_refused(swept, tmp_path, capsys):
    root = copy(swept, tmp_path)
    trials = sorted((root / "students").iterdir())
    for trial in trials:
        (trial / "model.pt").write_bytes((trial / "model.pt").read_bytes()[:-10])  # truncated
    fails(capsys, ["export", str(root), "--where", MIMIC], "does not match the sha256", "row.json")
    for trial in trials:
        (trial / "model.pt").unlink()
    fails(capsys, ["export", str(root), "--where", MIMIC], "model.pt is missing", "row.json")
    assert not (root / "export").exists()


@pytest.mark.parametrize("arch, sizes", [("snn", {"hidden": 32, "bottleneck": 8, "dropout": 0.5}),
                                         ("conv_snn", {"hidden": 32, "bottleneck": 8, "channels": 4, "kernel": 3})])
def test_every_student_architecture_exports_with_its_normalisation(arch, sizes):
    """With a bottleneck, dropout (off in eval) and convolutions: uint8-like RGB inputs in, the student's logits on
    the normalised inputs out, for a batch size other than the one exported with."""
    torch.manual_seed(0)
    model = models.build(arch, (3, 8, 8), 10, **sizes).eval()
    mean, std = torch.rand(1, 3, 1, 1) * 255, torch.rand(1, 3, 1, 1) * 60 + 1  # (1, C, 1, 1) in pixel units
    payload = export.onnx_bytes(model, {"input_shape": [3, 8, 8], "classes": 10, "input_mean": mean, "input_std": std})
    export.check_onnx(payload)
    raw = torch.randint(0, 256, (5, 3, 8, 8)).float()  # (B, C, H, W) pixel values as float32
    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": raw.numpy()})
    with torch.no_grad():
        expected = model((raw - mean) / std).numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
