"""What produced a run: each invocation of a sweep command writes its own record under the sweep,
`runs/<UTC time>-<host>-<pid>.json`, never overwritten, after its pre-flight checks passed.

It holds the command line, the resolved config, the code version (git commit and whether the checkout had
uncommitted changes), the versions of Python and the packages that decide the numbers, the devices, and the
data set's input shape, classes and split sizes: any number in the results can be traced to it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import torch

from distill import experiment, files
from distill.config import SweepConfig, to_dict

PACKAGES = ("distill", "torch", "ray", "numpy", "optuna", "pandas")


def code_version() -> dict:
    """The git commit of the checkout distill runs from, and whether it had uncommitted changes ({} if none)."""
    here = Path(__file__).resolve().parent

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=here, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):  # an installed package, or no git on this machine
        return {}


def versions() -> dict:
    """Installed versions; torch's own string, which names its build (e.g. 2.14.1+cu130), not just the release."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out | {"torch": torch.__version__}


def build(sweep: SweepConfig, argv: list[str], splits) -> dict:
    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"command": argv, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": socket.gethostname(), "pid": os.getpid(), "config": to_dict(sweep), "code": code_version(),
            "versions": versions(), "devices": {"cpu": platform.processor() or platform.machine(),
                                                "cpus": os.cpu_count(), "cuda": cuda},
            "data": {"name": splits.name, "shape": list(splits.shape), "classes": splits.classes,
                     "sizes": {s: len(getattr(splits, f"{s}_y")) for s in ("train", "val", "test")},
                     "stored": str(splits.train_x.stored.dtype).removeprefix("torch."), "bytes": splits.nbytes,
                     "notes": list(getattr(splits, "notes", ()))},
            "teachers": [experiment.teacher_facts(t, splits) for t in sweep.teachers]}


def write(root: files.Location, sweep: SweepConfig, argv: list[str], splits) -> files.Location:
    rec = build(sweep, argv, splits)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = files.location(root) / "runs" / f"{stamp}-{rec['host']}-{rec['pid']}.json"
    files.write_json(path, rec)
    return path


def add(path: files.Location, key: str, value) -> None:
    """Add a fact learnt during the run (e.g. the settings a search chose) to its record, rewritten atomically."""
    files.write_json(path, {**files.read_json(path), key: value})
