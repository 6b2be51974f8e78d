"""Your own teacher and your own data: a torchvision ResNet-18 trained here (not by distill) is imported from
its weights file and distilled into a shallow student; the same teacher given as precomputed logits; files that
do not fit are one line before anything trains; data from an .npz file or a load function of one's own.

The ResNet trains once for the module (3 epochs of Adam on scikit-learn's 8x8 digits, its own plain loop: the
"elsewhere" a user's model comes from), about 20 s on an idle core."""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from distill import cache, data, experiment, local, models, pipeline
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig, validate
from distill.datasets import Raw
from distill.errors import UserError
from distill.train import TrainConfig, error, infer

DATA = DataConfig(name="digits", val_size=200, views=1)
FACTORY = f"{__name__}:resnet"  # this module, as pytest imported it: any importable factory works the same
STUDENT = StudentConfig(hidden=256, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=15))
# torchvision's resnet18(num_classes=10) is 11,181,642 parameters; a 1-channel 7x7 stem has 2 x 64 x 49 fewer.
RESNET18_1CH_10 = 11_181_642 - 2 * 64 * 49


def resnet(classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 (random init, nothing downloaded) for 1-channel images: only the stem changes."""
    net = torchvision.models.resnet18(num_classes=classes)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net


@pytest.fixture(scope="module")
def prepared():
    return experiment.prepare(DATA)


@pytest.fixture(scope="module")
def trained(prepared, one_thread, tmp_path_factory):
    """(the ResNet, its weights file): trained by a plain loop, as a user would elsewhere, then saved."""
    splits, _ = prepared
    torch.manual_seed(0)
    net = resnet()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(3):
        net.train()
        for idx in torch.randperm(len(splits.train_y)).split(64):
            loss = nn.functional.cross_entropy(net(splits.train_x[idx]), splits.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("own") / "resnet.pt"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def sweep_with(*teachers: TeacherConfig, data_config: DataConfig = DATA) -> SweepConfig:
    sweep = SweepConfig(name="own", data=data_config, teachers=teachers, hidden=(256,), targets=("mimic",),
                        student_teachers=(teachers[0].name,), student=STUDENT)
    validate(sweep)
    return sweep


def run(sweep: SweepConfig, root, prepared) -> tuple[list[str], object]:
    splits, transfer = prepared
    logs: list[str] = []
    executor = local.Executor(sweep, root, splits, transfer, logs.append)
    pipeline.teachers(sweep, root, executor, logs.append)
    return logs, pipeline.students(sweep, root, executor, logs.append)


def test_a_torchvision_resnet_is_imported_and_distilled(trained, prepared, tmp_path):
    net, path = trained
    splits, _ = prepared
    teacher_error = error(infer(net, splits.test_x), splits.test_y)
    teacher = TeacherConfig(name="rn", arch=FACTORY, weights=str(path))
    logs, frame = run(sweep_with(teacher), tmp_path, prepared)

    result = cache.member_result(tmp_path, DATA, teacher, 0)[0]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result["source"] == "weights" and result["sha256"] == sha and result["identity"]["weights_sha256"] == sha
    assert (tmp_path / "teachers/rn/member-0/model.pt").read_bytes() == path.read_bytes()  # the file, as given
    assert result["params"] == RESNET18_1CH_10 == models.param_count(net)
    assert result["test_error"] == teacher_error  # measured on the same test split, with the same weights
    assert not list((tmp_path / "teachers/rn/member-0").glob("state-*"))  # nothing trained
    assert any(line.startswith(f"teacher rn[0]: imported weights from {path} (sha256 {sha[:12]})") for line in logs)
    manifest = cache.manifest(tmp_path, DATA, teacher)
    assert manifest["ensemble"]["test_error"] == pytest.approx(teacher_error, abs=1 / len(splits.test_y))  # fp16

    # The student learnt from the imported net: it agrees with it and comes near its error.
    row = frame.iloc[0]
    assert row["teacher"] == "rn" and row["status"] == "ok"
    assert row["params"] == models.snn_params(64, 256, 10)
    assert row["test_agreement"] > 0.85
    assert row["test_error"] < teacher_error + 0.05, (row["test_error"], teacher_error)
    print(f"teacher (ResNet-18, imported) test error {teacher_error:.4f}, mimic student H=256 "
          f"{row['test_error']:.4f}, agreement {row['test_agreement']:.4f}")

    # Run again: nothing imported or harvested again, the student kept.
    again, _ = run(sweep_with(teacher), tmp_path, prepared)
    assert not any("imported" in line for line in again)
    assert "teacher rn: logits cached before, not harvested again" in again
    assert any("1 of 1 cells finished before" in line for line in again)


def test_a_changed_weights_file_is_imported_again(trained, prepared, tmp_path):
    net, path = trained
    teacher = TeacherConfig(name="rn", arch=FACTORY, weights=str(tmp_path / "w.pt"))
    (tmp_path / "w.pt").write_bytes(path.read_bytes())
    splits, transfer = prepared
    executor = local.Executor(sweep_with(teacher), tmp_path / "s", splits, transfer, print)
    pipeline.imported(sweep_with(teacher), tmp_path / "s", executor, [teacher], print)
    before = cache.member_identity(DATA, teacher, 0)
    changed = {k: v.clone() for k, v in net.state_dict().items()}
    changed["fc.bias"] += 1.0  # other weights in the same file
    torch.save(changed, tmp_path / "w.pt")
    assert cache.member_identity(DATA, teacher, 0) != before
    assert cache.member_result(tmp_path / "s", DATA, teacher, 0) == (
        None, "trained with other settings (weights_sha256 changed)")
    logs: list[str] = []
    pipeline.imported(sweep_with(teacher), tmp_path / "s", executor, [teacher], logs.append)
    assert logs[0] == "teacher rn[0]: imported with other settings (weights_sha256 changed): importing it again"
    assert cache.member_result(tmp_path / "s", DATA, teacher, 0)[0]["sha256"] == \
        hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()


def test_precomputed_logits_are_a_teacher(trained, prepared, tmp_path):
    net, _ = trained
    splits, transfer = prepared
    logits = experiment.harvest(net, splits, transfer, torch.float32)  # {split: (N, 10)}, as computed elsewhere
    torch.save(logits, tmp_path / "logits.pt")
    np.savez(tmp_path / "logits.npz", **{s: v.numpy() for s, v in logits.items()})
    for name in ("logits.pt", "logits.npz"):
        teacher = TeacherConfig(name="given", logits=str(tmp_path / name))
        root = tmp_path / name.replace(".", "-")
        logs, frame = run(sweep_with(teacher), root, prepared)
        result = cache.member_result(root, DATA, teacher, 0)[0]
        assert result["source"] == "logits" and not (root / "teachers/given/member-0/model.pt").exists()
        assert result["test_error"] == error(logits["test"], splits.test_y)
        stored = cache.mean_logits(root, DATA, teacher, [0], "transfer")  # (N_transfer, 10) fp16, as cached
        assert torch.equal(stored, logits["transfer"].half())
        assert frame.iloc[0]["status"] == "ok" and frame.iloc[0]["test_agreement"] > 0.85


def test_files_that_do_not_fit_are_one_line_before_anything_trains(trained, prepared, tmp_path):
    net, path = trained
    splits, transfer = prepared
    logits = {"transfer": torch.zeros(len(transfer.x), 10), "val": torch.zeros(len(splits.val_y) - 1, 10),
              "test": torch.zeros(len(splits.test_y), 10)}
    torch.save(logits, tmp_path / "short.pt")
    torch.save({**logits, "val": torch.zeros(len(splits.val_y), 9)}, tmp_path / "nine.pt")
    torch.save(resnet(9).state_dict(), tmp_path / "nine-classes.pt")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    trains = TeacherConfig(name="cnn", arch="cnn", arch_args={"channels": (4,), "hidden": (8,), "kernel": 3},
                           train=TrainConfig(epochs=1))
    cases = [
        (TeacherConfig(name="x", logits=str(tmp_path / "short.pt")),
         "'val' has shape (199, 10), but the val split has 200 inputs of 10 classes"),
        (TeacherConfig(name="x", logits=str(tmp_path / "nine.pt")), "has shape (200, 9)"),
        (TeacherConfig(name="x", arch=FACTORY, weights=str(tmp_path / "nine-classes.pt")),
         "2 tensors of another shape (e.g. fc.weight (9, 512) (the net's is (10, 512)))"),
        (TeacherConfig(name="x", arch=FACTORY, arch_args={"classes": 9}, weights=str(path)),
         "gives outputs of shape (1, 9) for inputs (1, 1, 8, 8), but the data set has 10 classes"),
        (TeacherConfig(name="x", arch=FACTORY, weights=str(tmp_path / "checkpoint.pt")),
         "a checkpoint: save its 'state_dict' entry alone"),
        (TeacherConfig(name="x", arch=FACTORY, weights=str(tmp_path / "absent.pt")), "absent.pt does not exist"),
    ]
    for teacher, message in cases:
        root = tmp_path / "s"
        with pytest.raises(UserError, match="^[^\n]*$") as e:
            run(sweep_with(teacher, trains), root, prepared)
        assert message in str(e.value)
        assert not (root / "teachers").exists()  # neither the imported teacher nor the trained one started


def test_teacher_files_are_one_per_member():
    assert cache.member_file(TeacherConfig(name="e", members=3, weights="w-{i}.pt"), 2) == "w-2.pt"
    assert cache.member_file(TeacherConfig(name="e", members=2, weights=("a.pt", "b.pt")), 1) == "b.pt"
    bad = [(TeacherConfig(name="e", members=3, weights=("a.pt", "b.pt")), "names 2 file(s) for 3 member(s)"),
           (TeacherConfig(name="e", members=2, weights="w.pt"), "names 1 file(s) for 2 member(s)"),
           (TeacherConfig(name="e", weights="w.pt", logits="l.pt"), "gives both weights and logits"),
           (TeacherConfig(name="e", arch="no_such_module:net", weights="w.pt"), "no module named 'no_such_module'"),
           (TeacherConfig(name="e", arch=f"{__name__}:absent", weights="w.pt"), "has no 'absent'"),
           (TeacherConfig(name="e", arch="resnet"), "unknown architecture 'resnet'")]
    for teacher, message in bad:
        with pytest.raises(UserError, match="^[^\n]*$") as e:
            sweep_with(teacher)
        assert message in str(e.value)


def own_digits(root: str | None, classes: int = 10) -> Raw:
    """A data set of one's own: any function of (root, **args) that returns the contract."""
    raw = data.read("digits", None, None)
    return dataclasses.replace(raw, classes=classes)


def not_raw(root: str | None) -> dict:
    return {}


def test_data_from_an_npz_file_and_from_a_function_of_ones_own(prepared, tmp_path):
    digits = data.read("digits", None, None)  # (1797, 1, 8, 8) float, as a user's arrays
    x, y = digits.train_x.numpy(), digits.train_y.numpy()
    np.savez(tmp_path / "d.npz", x_train=(x[:1200] * 15).astype(np.uint8), y_train=y[:1200],
             x_val=(x[1200:1400] * 15).astype(np.uint8), y_val=y[1200:1400],
             x_test=(x[1400:] * 15).astype(np.uint8), y_test=y[1400:])
    config = DataConfig(name="npz", root=str(tmp_path / "d.npz"), views=0)
    splits = data.load(config.name, config.root, args=dict(config.args))
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (1200, 200, 397)  # its own val, in order
    assert splits.train_x.stored.dtype == torch.uint8 and splits.shape == (1, 8, 8) and splits.classes == 10
    assert torch.equal(splits.test_y, torch.from_numpy(y[1400:]))
    assert cache.data_identity(config)["root"] == config.root  # the file is the data: another file, other data

    # A whole sweep on it, a teacher trained by distill: nothing else about a sweep changes.
    teacher = TeacherConfig(name="t", arch="dnn", arch_args={"hidden": 32, "layers": 1},
                            train=TrainConfig(optimizer="adam", lr=3e-3, epochs=3))
    sweep = dataclasses.replace(sweep_with(teacher, data_config=config),
                                student=dataclasses.replace(STUDENT, train=dataclasses.replace(STUDENT.train,
                                                                                             epochs=3)))
    _, frame = run(sweep, tmp_path / "s", experiment.prepare(config))
    assert frame.iloc[0]["status"] == "ok" and frame.iloc[0]["test_error"] < 0.3

    own = DataConfig(name=f"{__name__}:own_digits", val_size=200, args={"classes": 10})
    validate(dataclasses.replace(sweep, data=own))
    assert data.load(own.name, args=dict(own.args), val_size=200).classes == 10

    for name, root, args, message in [
            ("npz", None, None, "DataConfig(name='npz') needs root=FILE"),
            ("npz", str(tmp_path / "absent.npz"), None, "absent.npz does not exist"),
            (f"{__name__}:not_raw", None, None, "returned a dict, not a distill.datasets.Raw"),
            (f"{__name__}:own_digits", None, {"colour": 1}, "bad data set arguments")]:
        with pytest.raises(UserError, match="^[^\n]*$") as e:
            data.load(name, root, args=args)
        assert message in str(e.value)
    np.savez(tmp_path / "partial.npz", x_train=x, y_train=y)
    with pytest.raises(UserError, match="has no x_test, y_test"):
        data.load("npz", str(tmp_path / "partial.npz"))
    with pytest.raises(UserError, match="no module named 'no_such_module'"):
        validate(dataclasses.replace(sweep, data=DataConfig(name="no_such_module:load")))
