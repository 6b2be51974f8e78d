"""Bad input through the CLI: one line naming the problem and the fix, exit status 2, no traceback.
Every case fails before any training or Ray start."""

import textwrap
import urllib.request

import pytest

from distill.__main__ import main

HEADER = """
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig
T = (TeacherConfig(name="ecnn", members=2, arch_args={"channels": (4,), "hidden": (8,)}),)
"""


def sweep_file(tmp_path, body: str, header: str = HEADER) -> str:
    path = tmp_path / "sweep.py"
    path.write_text(header + textwrap.dedent(body))
    return str(path)


def config(**kwargs) -> str:
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"def get_config(variant):\n    return SweepConfig(name='bad', teachers=T, {args})\n"


DIGITS = "DataConfig(name='digits', val_size=100, views=0)"
CASES = {
    "missing sweep file": (None, [], "does not exist"),
    "malformed sweep file": ("def get_config(variant)\n    return 1\n", [], "failed to import: SyntaxError"),
    "incomplete sweep file": ("X = 1\n", [], "has no get_config"),
    "not a SweepConfig": ("def get_config(variant):\n    return {}\n", [], "returned dict, not a SweepConfig"),
    "unknown variant": (config(data=DIGITS).replace("return", "assert variant == 'default'; return"),
                        ["--variant", "huge"], "get_config('huge') failed"),
    "unknown data set": (config(data="DataConfig(name='imagenet-1k')"), [], "unknown data set 'imagenet-1k'"),
    "missing data directory": (config(data="DataConfig(name='cifar10')"), ["--data-root", "/nonexistent/data"],
                               "put /nonexistent/data/cifar-10-batches-py/"),
    "bottleneck >= hidden": (config(data=DIGITS, hidden=(64,), bottleneck=(64,)), [], "must be smaller than hidden"),
    "non-positive size": (config(data=DIGITS, hidden=(0,)), [], "must be positive"),
    "unknown target": (config(data=DIGITS, targets="('mimic', 'soft-labels')"), [], "unknown target 'soft-labels'"),
    "unknown optimizer": (config(data=DIGITS, student="StudentConfig(hidden=8, train=TrainConfig(optimizer='lbfgs'))"),
                          [], "unknown optimizer 'lbfgs'"),
    "unknown teacher": (config(data=DIGITS, student_teachers="('ecnn[5]',)"), [], "has 2"),
    "no teacher cache": (config(data=DIGITS), ["sweep"], "no logit cache for teacher 'ecnn'"),
    "student too large": (config(data=DIGITS, hidden=(10**10,)), [], "add a bottleneck"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    body, extra, expected = CASES[case]
    # No download attempts from a test, whatever the network (torchvision has no timeout of its own).
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    path = str(tmp_path / "missing.py") if body is None else sweep_file(tmp_path, body)
    command = "sweep" if "sweep" in extra else "run"
    extra = [a for a in extra if a != "sweep"]
    status = main([command, path, "--storage", str(tmp_path / "out"), "--local", *extra])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("distill: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err
