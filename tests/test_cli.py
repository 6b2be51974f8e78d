"""Bad input through the CLI: one line naming the problem and the fix, exit status 2, no traceback.
Every case fails before any training or Ray start."""

import socket
import struct
import textwrap
import time
import urllib.request

import pytest
import torch

from distill import preflight
from distill.__main__ import main
from distill.errors import UserError

HEADER = """
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig
T = (TeacherConfig(name="ecnn", members=2, arch_args={"channels": (4,), "hidden": (8,)}),)
"""


def sweep_file(tmp_path, body: str, name: str = "sweep.py") -> str:
    path = tmp_path / name
    if name.endswith("/"):
        path.mkdir()
    else:
        path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def config(**kwargs) -> str:
    args = ", ".join(f"{k}={v}" for k, v in {"name": "'bad'", "teachers": "T", **kwargs}.items())
    return f"def get_config(variant):\n    return SweepConfig({args})\n"


def student(**train) -> str:
    """The student template, with these TrainConfig settings."""
    return f"StudentConfig(hidden=8, train=TrainConfig({', '.join(f'{k}={v}' for k, v in train.items())}))"


def teacher(**kwargs) -> str:
    """The teachers: one ensemble 'ecnn' with these TeacherConfig settings."""
    return f"(TeacherConfig({', '.join(f'{k}={v}' for k, v in {'name': repr('ecnn'), **kwargs}.items())}),)"


def idx(dims: tuple[int, ...], payload: bytes = b"") -> bytes:
    """An idx file (MNIST's format) whose header promises `dims` uint8 values, followed by `payload`."""
    return struct.pack(">I", 0x0800 + len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + payload


FASHION = "data/FashionMNIST/raw/"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR = "data/cifar-10-batches-py/"
CIFAR_FILES = ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6)))
DIGITS = "DataConfig(name='digits', val_size=100, views=0)"
# case: (sweep file body, or (file name, body), or None for a missing file; extra arguments ({tmp}: the test's
# directory, {s3}: the local S3 server's options); a substring of the message; files to create under {tmp}).
CASES = {
    "missing sweep file": (None, [], "does not exist"),
    "sweep file not .py": (("sweep.txt", config(data=DIGITS)), [], "is not a Python file"),
    "sweep file is a directory": (("sweeps/", ""), [], "is a directory"),
    "malformed sweep file": ("def get_config(variant)\n    return 1\n", [], "failed to import: SyntaxError"),
    "incomplete sweep file": ("X = 1\n", [], "has no get_config"),
    "sys.exit at import": ("import sys\nsys.exit(0)\n", [], "called sys.exit(0) while importing"),
    "sys.exit in get_config": ("def get_config(variant):\n    raise SystemExit('bye')\n", [],
                               "called sys.exit('bye') in get_config('default')"),
    "not a SweepConfig": ("def get_config(variant):\n    return {}\n", [], "returned dict, not a SweepConfig"),
    "unknown variant": (config(data=DIGITS).replace("return", "assert variant == 'default'; return"),
                        ["--variant", "huge"], "get_config('huge') failed"),
    "unknown data set": (config(data="DataConfig(name='imagenet-1k')"), [], "unknown data set 'imagenet-1k'"),
    "missing data directory": (config(data="DataConfig(name='cifar10')"), ["--data-root", "/nonexistent/data"],
                               "put /nonexistent/data/cifar-10-batches-py/"),
    "damaged fashion-mnist": (config(data="DataConfig(name='fashion-mnist')"), ["--data-root", "{tmp}/data"],
                              "data set 'fashion-mnist' could not be read from",
                              {FASHION + f: b"garbage!" * 8 for f in IDX_FILES}),
    "truncated fashion-mnist": (config(data="DataConfig(name='fashion-mnist')"), ["--data-root", "{tmp}/data"],
                                "FashionMNIST/raw are damaged or incomplete",
                                {FASHION + f: idx((60000, 28, 28)[:3 if "images" in f else 1], b"\0" * 10)
                                 for f in IDX_FILES}),
    "damaged cifar10": (config(data="DataConfig(name='cifar10')"), ["--data-root", "{tmp}/data"],
                        "cifar-10-batches-py are damaged or incomplete",
                        {CIFAR + f: b"not a pickle" for f in CIFAR_FILES}),
    "bottleneck >= hidden": (config(data=DIGITS, hidden=(64,), bottleneck=(64,)), [], "must be smaller than hidden"),
    "non-positive size": (config(data=DIGITS, hidden=(0,)), [], "must be positive"),
    "unknown target": (config(data=DIGITS, targets="('mimic', 'soft-labels')"), [], "unknown target 'soft-labels'"),
    "unknown optimizer": (config(data=DIGITS, student=student(optimizer="'lbfgs'")), [], "unknown optimizer 'lbfgs'"),
    "unknown teacher": (config(data=DIGITS, student_teachers="('ecnn[5]',)"), [], "has 2"),
    "no teacher cache": (config(data=DIGITS), ["sweep"], "(not trained yet)"),
    "student too large": (config(data=DIGITS, hidden=(10**10,)), [], "add a bottleneck"),
    # Numbers out of range.
    "batch_size 0": (config(student=student(batch_size=0)), [],
                     "SweepConfig.student.train.batch_size must be >= 1, got 0"),
    "negative batch_size": (config(student=student(batch_size=-32)), [], "batch_size must be >= 1, got -32"),
    "negative lr": (config(student=student(lr=-0.1)), [], "SweepConfig.student.train.lr must be > 0, got -0.1"),
    "lr nan": (config(student=student(lr="float('nan')")), [], "lr must be finite, got nan"),
    "lr inf": (config(target_train="{'labels': TrainConfig(lr=float('inf'))}"), [],
               "SweepConfig.target_train['labels'].lr must be finite, got inf"),
    "negative momentum": (config(student=student(momentum=-0.5)), [], "momentum must be in [0, 1), got -0.5"),
    "momentum 1.5": (config(teachers=teacher(train="TrainConfig(momentum=1.5)")), [],
                     "SweepConfig.teachers[0].train.momentum must be in [0, 1), got 1.5"),
    "negative weight_decay": (config(student=student(weight_decay=-1e-4)), [], "weight_decay must be >= 0"),
    "negative patience": (config(student=student(patience=-1)), [], "patience must be >= 0, got -1"),
    "epochs 0": (config(teachers=teacher(train="TrainConfig(epochs=0)")), [],
                 "SweepConfig.teachers[0].train.epochs must be >= 1, got 0"),
    "negative views": (config(data="DataConfig(name='digits', views=-1)"), [],
                       "SweepConfig.data.views must be >= 0, got -1"),
    "negative shift": (config(data="DataConfig(name='digits', shift=-2)"), [], "data.shift must be >= 0, got -2"),
    "val_size 0": (config(data="DataConfig(name='digits', val_size=0)"), [], "data.val_size must be >= 1, got 0"),
    "members 0": (config(teachers=teacher(members=0)), [], "SweepConfig.teachers[0].members must be >= 1, got 0"),
    "workers 0": (config(teachers=teacher(workers=0)), [], "teachers[0].workers must be >= 1, got 0"),
    "cpus_per_worker 0": (config(teachers=teacher(cpus_per_worker=0)), [], "cpus_per_worker must be > 0, got 0"),
    "negative gpus_per_trial": (config(gpus_per_trial=-1), [], "SweepConfig.gpus_per_trial must be >= 0, got -1"),
    "kd temperature 0": (config(targets="('kd',)", student="StudentConfig(hidden=8, temperature=0)"), [],
                         "SweepConfig.student.temperature must be > 0, got 0"),
    "samples 0": (config(search="SearchConfig(samples=0)"), [], "SweepConfig.search.samples must be >= 1, got 0"),
    "search lr reversed": (config(search="SearchConfig(lr=(1e-2, 1e-4))"), [],
                           "SweepConfig.search.lr must be a range (lo, hi) with 0 < lo <= hi"),
    "search lr from 0": (config(search="SearchConfig(lr=(0, 1e-2))"), [], "search.lr must be a range (lo, hi)"),
    "search momentum to 1": (config(search="SearchConfig(momentum=(0.5, 1.0))"), [],
                             "search.momentum must be a range (lo, hi) with 0 <= lo <= hi < 1"),
    "concurrency 0": (config(search="SearchConfig(concurrency=0)"), [], "search.concurrency must be >= 1, got 0"),
    "checkpoint_every 0": (config(checkpoint_every=0), [], "SweepConfig.checkpoint_every must be >= 1, got 0"),
    "negative trial_retries": (config(trial_retries=-1), [], "SweepConfig.trial_retries must be >= 0, got -1"),
    # Wrong types.
    "hidden a string": (config(hidden="'64'"), [],
                        "SweepConfig.hidden must be a tuple of ints, got the string '64': write hidden=(64,)"),
    "hidden a list": (config(hidden="[64, 128]"), [], "got the list [64, 128]: write hidden=(64, 128)"),
    "bottleneck a string": (config(bottleneck="'16'"), [],
                            "SweepConfig.bottleneck must be a tuple of ints or None, got the string '16'"),
    "seeds an int": (config(seeds="3"), [], "seeds must be a tuple of ints, got the int 3: write seeds=(3,)"),
    "lr a string": (config(student=student(lr="'0.01'")), [], "must be a number, got the string '0.01': write lr=0.01"),
    "float epochs": (config(student=student(epochs=2.5)), [], "train.epochs must be an int, got the float 2.5"),
    "bool batch_size": (config(student=student(batch_size=True)), [], "batch_size must be an int, got the bool True"),
    "train config a dict": (config(target_train="{'labels': {'lr': 0.1}}"), [],
                            "SweepConfig.target_train must be a dict of strings to TrainConfigs"),
    # Grids, names, teachers.
    "duplicate seeds": (config(data=DIGITS, seeds="(0, 1, 0)"), [], "SweepConfig.seeds has 0 twice"),
    "duplicate hidden": (config(data=DIGITS, hidden="(64, 64)"), [], "SweepConfig.hidden has 64 twice"),
    "duplicate targets": (config(data=DIGITS, targets="('mimic', 'labels', 'mimic')"), [],
                          "SweepConfig.targets has 'mimic' twice"),
    "duplicate student_teachers": (config(student_teachers="('ecnn', 'ecnn')"), [],
                                   "SweepConfig.student_teachers has 'ecnn' twice"),
    "target_train typo": (config(data=DIGITS, target_train="{'lables': TrainConfig()}"), [],
                          "unknown target 'lables' in target_train"),
    "empty sweep name": (config(name="''"), [], "sweep name '' must be 1 to 100 characters"),
    "sweep name ../..": (config(name="'../..'"), [], "sweep name '../..' must be"),
    "sweep name with /": (config(name="'a/b'"), [], "sweep name 'a/b' must be"),
    "sweep name with NUL": (config(name="'a\\x00b'"), [], "sweep name 'a\\x00b' must be"),
    "300-character sweep name": (config(name="'x' * 300"), [], "sweep name of 300 characters must be"),
    "duplicate teacher names": (config(teachers="T + T"), [], "SweepConfig.teachers has 'ecnn' twice"),
    "teacher name with /": (config(teachers=teacher(name="'e/cnn'")), [], "teacher name 'e/cnn' must be"),
    # The machine: device, Ray address, storage.
    "malformed device": (config(data=DIGITS), ["--device", "bogus"], "--device 'bogus' is not a device"),
    "absent device": (config(data=DIGITS), ["--device", "cuda"], "this machine has no cuda device"),
    "unreachable address": (config(data=DIGITS), ["--address", "127.0.0.1:1"],
                            "cannot reach the Ray cluster at 127.0.0.1:1"),
    "malformed address": (config(data=DIGITS), ["--address", "ray://"], "Ray address 'ray://' is malformed"),
    "storage under a file": (config(data=DIGITS), ["--storage", "{tmp}/file"], "is a file", {"file": b""}),
    "storage is a file": (config(data=DIGITS), ["--storage", "{tmp}/out"], "is a file", {"out/bad": b""}),
    "storage read-only": (config(data=DIGITS), ["--storage", "/sys/distill"], "cannot write to the storage /sys/"),
    "storage malformed URI": (config(data=DIGITS), ["--storage", "foo://bar"], "storage 'foo://bar' cannot be opened"),
    "storage without bucket": (config(data=DIGITS), ["--storage", "s3://"], "storage 's3://' names no bucket"),
    "storage bucket missing": (config(data=DIGITS), ["--storage", "s3://no-such-bucket/x?{s3}"],
                               "cannot write to the storage s3://no-such-bucket/x/bad"),
}
MARKS = {"absent device": pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")}


@pytest.mark.parametrize("case", [pytest.param(c, marks=MARKS.get(c, ())) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch, request):
    body, extra, expected, *files = CASES[case]
    downloads = []
    # No download attempts from a test, whatever the network (torchvision has no timeout of its own).
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: downloads.append(a) or (_ for _ in ()).throw(
        OSError("offline")))
    for name, payload in (files[0] if files else {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(payload)
    name, body = body if isinstance(body, tuple) else ("sweep.py", body)
    path = str(tmp_path / "missing.py") if body is None else sweep_file(tmp_path, body, name)
    command = "sweep" if "sweep" in extra else "run"
    s3 = request.getfixturevalue("s3_server") if any("{s3}" in a for a in extra) else ""
    extra = [a.format(tmp=tmp_path, s3=s3) for a in extra if a != "sweep"]
    local = [] if "--address" in extra else ["--local"]  # the address is only checked where Ray would start
    start = time.monotonic()
    status = main([command, path, "--storage", str(tmp_path / "out"), *local, *extra])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("distill: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err
    assert time.monotonic() - start < 30
    assert not [p for p in tmp_path.rglob("*") if p.name in ("teachers", "cache")], "something was trained"
    assert not downloads or "download failed" in err  # a download only where the data is missing


def test_silent_address_is_refused_in_time(monkeypatch):
    """A host that never answers (a firewall that drops packets, a lookup that hangs) is refused after
    2 x preflight.TIMEOUT, however long the connection attempt would block."""
    monkeypatch.setattr(preflight, "TIMEOUT", 0.2)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: time.sleep(10))
    start = time.monotonic()
    with pytest.raises(UserError, match=r"cannot reach the Ray cluster at 10\.0\.0\.1:6379 .*no answer in"):
        preflight.address("10.0.0.1:6379")
    assert time.monotonic() - start < 2
