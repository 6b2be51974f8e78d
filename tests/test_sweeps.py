"""Every sweep file loads and validates in each variant, documents itself, and the CIFAR-10 smoke variant
runs end to end through the real CIFAR-10 reader on a fixture in its on-disk format."""

from pathlib import Path

import pytest
from test_data import no_md5, write_cifar  # noqa: F401  (no_md5 is a fixture)

from distill import results
from distill.__main__ import main
from distill.config import load_sweep

SWEEPS = sorted(Path(__file__).parent.parent.glob("sweeps/*.py"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_documents_and_validates(path):
    doc = path.read_text().split('"""')[1]
    assert "python -m distill" in doc and "Expected" in doc and "smoke" in doc.lower()
    for variant in ("default", "smoke"):
        assert load_sweep(path, variant).cells()


def test_cifar10_smoke_runs_end_to_end_on_a_fixture(tmp_path, no_md5):  # noqa: F811
    (tmp_path / "data").mkdir()
    write_cifar(tmp_path / "data")
    argv = ["run", "sweeps/cifar10.py", "--variant", "smoke", "--data-root", str(tmp_path / "data"),
            "--storage", str(tmp_path / "out"), "--local"]
    assert main(argv) == 0
    frame = results.load(tmp_path / "out" / "cifar10-smoke")
    assert sorted(frame["target"]) == ["labels", "mimic"] and set(frame["status"]) == {"ok"}
    assert (frame["params"] > 0).all() and frame["test_error"].between(0, 1).all()
