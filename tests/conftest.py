"""Shared fixtures. Ray starts once per test session, and only for the tests that ask for it."""

import os
import tempfile

import psutil
import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with this machine's CPUs; yields its temp dir (short: Ray's socket paths are)."""
    import ray

    from distill.ray_shared import RUNTIME_ENV

    os.environ.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, runtime_env=RUNTIME_ENV,
             _temp_dir=temp_dir, log_to_driver=False)
    yield temp_dir
    ray.shutdown()


def session_processes(temp_dir: str, kind: str = "") -> list[psutil.Process]:
    """The processes of the Ray instance under `temp_dir` (their stdout goes to its logs, or they descend
    from its raylet), optionally only those whose title contains `kind` (e.g. "RayTrainWorker"): other Ray
    instances on the machine are left alone."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            stdout = os.readlink(f"/proc/{p.pid}/fd/1")
        except OSError:
            continue
        if stdout.startswith(temp_dir):
            found[p.pid] = p
            if "raylet" in " ".join(p.info["cmdline"] or []):
                found.update((c.pid, c) for c in p.children(recursive=True))
    matching = []
    for p in found.values():
        try:
            if kind in " ".join(p.cmdline()):
                matching.append(p)
        except psutil.Error:  # ended meanwhile
            continue
    return matching
