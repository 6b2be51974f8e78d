"""Shared fixtures. Ray starts once per test session, and only for the tests that ask for it."""

import os

import pytest


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    """A local Ray instance with this machine's CPUs; its temp files under the test's tmp dir."""
    import ray

    from distill.ray_shared import RUNTIME_ENV

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, runtime_env=RUNTIME_ENV,
             _temp_dir=str(tmp_path_factory.mktemp("ray")), log_to_driver=False)
    yield ray
    ray.shutdown()
