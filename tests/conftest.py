"""Shared fixtures. Ray starts once per test session, and only for the tests that ask for it."""

import os
import socket
import tempfile
import uuid

import psutil
import pytest

# Object-storage tests talk to a local S3 server (moto): any credentials do, and none must be looked up on a
# cloud metadata endpoint. Set before Ray starts, so that its workers inherit them.
for _k, _v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_k, _v)


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors on 2 shared cores: a second torch thread made such tests 3-10x slower, not faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A local S3 server for the session, with one bucket; yields its URI query (endpoint and scheme)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    query = f"endpoint_override={host}:{port}&scheme=http"
    import pyarrow.fs

    pyarrow.fs.FileSystem.from_uri(f"s3://distill-tests?{query}&allow_bucket_creation=true")[0].create_dir(
        "distill-tests")
    yield query
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path) -> str:
    """A fresh, empty storage root: a local directory, or a folder in a bucket of the local S3 server."""
    if request.param == "local":
        return str(tmp_path)
    return f"s3://distill-tests/{uuid.uuid4().hex}?{request.getfixturevalue('s3_server')}"


def pytest_collection_modifyitems(items):
    for item in items:
        if "ray_local" in item.fixturenames:  # directly or through another fixture
            item.add_marker(pytest.mark.ray)


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
    return of_kind(found.values(), kind)


def of_kind(processes, kind: str) -> list[psutil.Process]:
    """Those of `processes` still running whose command line contains `kind` ('' for all)."""
    matching = []
    for p in processes:
        try:
            if kind in " ".join(p.cmdline()):
                matching.append(p)
        except psutil.Error:  # ended meanwhile
            continue
    return matching


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 now (asked of the OS all at once)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
