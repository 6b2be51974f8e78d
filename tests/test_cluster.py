"""Running on a cluster: `cluster.yaml` is a config that Ray's cluster launcher accepts, and a sweep runs as a
Ray job (`ray job submit --working-dir . -- python -m distill run ...`) on a head node with token
authentication, as on a cluster made by `ray up cluster.yaml`. docs/cluster.md is the user's side of it.

The job test starts its own head node on 127.0.0.1 (free ports, its own temp dir, its own token) and stops
exactly that head's processes afterwards: never `ray stop`, which would end every Ray instance on the
machine. Deselect it with `-m "not ray"` (it takes a minute or two on 2 CPU cores).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import free_ports

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


# --- cluster.yaml -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_matches_rays_schema(cluster_config):
    """The JSON schema `ray up` validates against (shipped with Ray): no unknown or mistyped key."""
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster_config, schema)


def test_cluster_yaml_survives_the_launchers_preparation(cluster_config):
    """What `ray up` does before it calls the cloud: merge in the AWS defaults, fill in the node types'
    worker counts, validate again (Ray's own functions; no network, no credentials)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster_config))
    validate_config(prepared)
    assert prepared["available_node_types"].keys() == cluster_config["available_node_types"].keys()


def test_cluster_yaml_has_a_cpu_head_and_gpu_workers_from_zero(cluster_config):
    c = cluster_config
    assert c["cluster_name"] and c["max_workers"] >= 1
    assert c["provider"]["type"] == "aws" and c["provider"]["region"]
    assert c["auth"]["ssh_user"] == "ubuntu"
    types = c["available_node_types"]
    assert c["head_node_type"] in types
    for name, node in types.items():
        assert {"node_config", "resources"} <= node.keys(), name
        assert node["node_config"]["InstanceType"] and node["node_config"]["ImageId"], name
    head = types[c["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    gpu = {n: t for n, t in types.items() if n != c["head_node_type"] and t["resources"].get("GPU", 0) >= 1}
    assert gpu, "no GPU worker type"
    for name, node in gpu.items():
        assert node["min_workers"] == 0, f"{name} must scale from zero"
        assert 1 <= node["max_workers"] <= c["max_workers"], name
        assert node["node_config"]["ImageId"] == head["node_config"]["ImageId"], "one AMI for all nodes"
    assert c["idle_timeout_minutes"] > 0 and c["upscaling_speed"] > 0


def test_cluster_yaml_installs_the_project_and_starts_ray_with_token_auth(cluster_config):
    c = cluster_config
    # The repository and the shared auth token go to every node; the local venv and git history do not.
    assert c["file_mounts"]["~/distill"] == "."
    assert c["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".venv" in c["rsync_exclude"] and ".git" in c["rsync_exclude"]
    install = [cmd for cmd in c["setup_commands"] if "install" in cmd and "constraints.txt" in cmd]
    assert install and "cd ~/distill" in install[0] and "-c constraints.txt" in install[0]
    assert "'.[cluster]'" in install[0] and "-e" in install[0].split()
    head = " ".join(c["head_start_ray_commands"])
    for flag in ("ray start --head", "--port=6379", "--autoscaling-config=~/ray_bootstrap_config.yaml",
                 "RAY_AUTH_MODE=token"):
        assert flag in head, flag
    worker = " ".join(c["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker and "RAY_AUTH_MODE=token" in worker
    assert any("boto3" in cmd for cmd in c["head_setup_commands"]), "the autoscaler on the head needs boto3"


def all_commands(c: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in c.get(key) or ()]


def test_cluster_yaml_gives_workers_a_least_privilege_instance_profile(cluster_config):
    """Trials run on the workers: they get their own profile (the results bucket only, docs/cluster.md), never
    the head's `ray-autoscaler-v1`, which has full EC2 and S3 access to the whole account."""
    c = cluster_config
    workers = {n: t for n, t in c["available_node_types"].items() if n != c["head_node_type"]}
    assert workers
    for name, node in workers.items():
        profile = node["node_config"].get("IamInstanceProfile")
        if profile is None:  # no AWS access at all (EFS storage) is least privilege too
            continue
        assert profile.keys() <= {"Arn", "Name"} and len(profile) == 1, name
        ref = next(iter(profile.values()))
        assert "ray-autoscaler" not in ref, f"{name} gets the head's autoscaler profile {ref}"
        if "Arn" in profile:
            assert ref.startswith("arn:aws:iam::") and ":instance-profile/" in ref, ref
    named = [t["node_config"].get("IamInstanceProfile", {}).get("Arn", "") for t in workers.values()]
    assert any(arn.endswith(":instance-profile/distill-worker") for arn in named), named
    doc = (REPO / "docs" / "cluster.md").read_text()
    assert "distill-worker" in doc and "iam:PassRole" in doc, "docs/cluster.md shows how to create the profile"


def test_cluster_yaml_keeps_the_token_private(cluster_config):
    """A setup command makes the copied token owner-only (0600) on every node, before anything else runs."""
    setup = cluster_config["setup_commands"]
    chmod = [i for i, cmd in enumerate(setup) if "chmod 600 ~/.ray/auth_token" in cmd]
    assert chmod, "no setup command makes ~/.ray/auth_token 0600"
    assert chmod[0] == 0, "the token is made private first, before anything is installed"


def test_cluster_yaml_binds_the_dashboard_to_localhost(cluster_config):
    """The dashboard and its job API listen on the head's loopback only (reached through `ray dashboard
    cluster.yaml`, an SSH tunnel); no command binds anything to all interfaces."""
    c = cluster_config
    head = " ".join(c["head_start_ray_commands"])
    starts = [cmd for cmd in c["head_start_ray_commands"] if "ray start --head" in cmd]
    assert len(starts) == 1 and "--dashboard-host=127.0.0.1" in starts[0], head
    assert head.count("--dashboard-host") == 1
    for cmd in all_commands(c):
        assert "0.0.0.0" not in cmd and "--bind_all" not in cmd, cmd


# --- a job on a token-authenticated head --------------------------------------------------------------

MARKER = "DISTILL_TEST_RAY_HEAD"  # in the head's environment, so in every process of that Ray instance


def http_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def head_processes(root: Path) -> list:
    """This head's processes: those that name its directory, those that carry its marker, their children.
    (Workers rename themselves `ray::IDLE` and the like, so the command line alone misses some.)"""
    import psutil

    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid", "cmdline", "environ"], ad_value=None):
        if p.pid == os.getpid():
            continue
        if str(root) in " ".join(p.info["cmdline"] or ()) or (p.info["environ"] or {}).get(MARKER) == str(root):
            found[p.pid] = p
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_head(root: Path) -> None:
    import psutil

    for _ in range(5):  # raylets may still start a worker while the first ones go
        procs = head_processes(root)
        if not procs:
            return
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
    assert not head_processes(root), "the test's Ray head did not stop"


@dataclass
class Head:
    root: Path
    url: str
    token: str

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def head():
    """A Ray head node on 127.0.0.1 with token authentication on, all of its ports free ones."""
    # A short path: Ray's Unix sockets live under it and must stay below 108 characters.
    root = Path(tempfile.mkdtemp(prefix="distill-head-"))
    token = secrets.token_hex(32)
    token_file = root / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    gcs, dash, agent, agent_grpc, client, metrics, runtime_env, node_manager, object_manager = free_ports(9)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file),
           "RAY_TMPDIR": str(root), MARKER: str(root)}
    for inherited in ("RAY_ADDRESS", "RAY_AUTH_TOKEN"):  # RAY_AUTH_TOKEN would win over RAY_AUTH_TOKEN_PATH
        env.pop(inherited, None)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    cmd = [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--ray-client-server-port={client}", f"--metrics-export-port={metrics}",
           f"--runtime-env-agent-port={runtime_env}", f"--node-manager-port={node_manager}",
           f"--object-manager-port={object_manager}", "--num-cpus=2", f"--temp-dir={root / 'ray'}",
           "--disable-usage-stats"]
    shared_address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = shared_address_file.read_text() if shared_address_file.exists() else None
    url = f"http://127.0.0.1:{dash}"
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
        deadline = time.monotonic() + 120
        while http_status(f"{url}/api/jobs/", {"Authorization": f"Bearer {token}"}) != 200:
            assert time.monotonic() < deadline, "the dashboard's job API did not come up"
            time.sleep(1)
        yield Head(root, url, token)
    finally:
        stop_head(root)
        # `--temp-dir` keeps `ray start` away from /tmp/ray/ray_current_cluster; make sure it stayed so,
        # or every later plain `ray.init()` on this machine would try to join a dead cluster.
        now = shared_address_file.read_text() if shared_address_file.exists() else None
        if now != before and now == f"127.0.0.1:{gcs}":
            if before is None:
                shared_address_file.unlink()
            else:
                shared_address_file.write_text(before)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.ray
def test_job_api_requires_the_token(head):
    assert http_status(f"{head.url}/api/jobs/") == 401
    assert http_status(f"{head.url}/api/jobs/", {"Authorization": "Bearer not-the-token"}) == 403
    assert http_status(f"{head.url}/api/jobs/", head.auth) == 200


@pytest.mark.ray
def test_job_submission_runs_the_smoke_sweep(head):
    """The smoke sweep as a Ray job: the same request `ray job submit --working-dir . -- python -m distill
    run ...` makes. Its results land in the storage path; Tune's TensorBoard logs beside them."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from distill import results

    storage = head.root / "storage"
    client = JobSubmissionClient(head.url, headers=head.auth)
    # sys.executable: a job's plain `python` is whatever the head's PATH finds first (on a cluster made by
    # cluster.yaml that is the venv's; here it may not be).
    job = client.submit_job(
        entrypoint=f"{sys.executable} -m distill run sweeps/demo.py --variant smoke --storage {storage}",
        runtime_env={"working_dir": str(REPO), "excludes": [".venv", ".git", "*.egg-info", "__pycache__"]},
        metadata={"sweep": "demo-smoke"})
    started = time.monotonic()
    status = client.get_job_status(job)
    while not status.is_terminal() and time.monotonic() - started < 360:
        time.sleep(2)
        status = client.get_job_status(job)
    logs = client.get_job_logs(job)
    if status != JobStatus.SUCCEEDED:
        if not status.is_terminal():
            client.stop_job(job)
        pytest.fail(f"job {job} ended {status} after {time.monotonic() - started:.0f} s; its logs:\n{logs}")
    print(f"job {job}: {status} in {time.monotonic() - started:.0f} s")

    frame = results.load(storage / "demo-smoke")
    assert len(frame) == 4 and (frame["status"] == "ok").all(), frame.to_string()
    assert "test_error" in logs, "the job's log ends with the summary table"
    assert next((storage / "demo-smoke" / "ray").rglob("events.out.tfevents.*"), None), "no TensorBoard logs"
    # The dashboard lists the job (its Jobs tab reads the same API).
    listed = {j.submission_id: j for j in client.list_jobs()}
    assert listed[job].status == JobStatus.SUCCEEDED and listed[job].metadata == {"sweep": "demo-smoke"}
