"""Several nodes: a Ray cluster of a head and worker nodes on this machine (each node its own raylet, temp dir
and ports, token authentication on, storage in the local S3 server's bucket), and the sweep's driver run as the
user runs it (`python -m distill ... --address`), in a process of its own. A worker node is lost while a
teacher member trains on it, or while students train on it; the head and the driver are lost mid-sweep; a node
joins mid-sweep. Nothing finished is lost or trained again, and every cell is in the results once.

A node is "lost" as a preempted machine is: every process of that node (its raylet, its agents, its workers)
SIGKILLed at once. Only this module's own Ray processes are touched (found by their node's temp dir, as
conftest's `session_processes` does), never another Ray instance of the machine, nor the session's `ray_local`
(another cluster: the driver's Ray runs in its own process, so both may be up at once).
The fault tests share one cluster and run in this file's order, each first making the worker nodes it needs
(`ensure_workers`); the last one replaces the whole cluster. About 4 minutes in all on 2 cores.
docs/cluster.md ("Several nodes on one machine", "What survives what") is the user's side of it.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import free_ports, of_kind, session_processes

from distill import cache, files, pipeline, ray_sweep, results
from distill.config import load_sweep

RAY = str(Path(sys.executable).with_name("ray"))


def node_processes(temp_dir: Path, kind: str = "") -> list[psutil.Process]:
    """Every process of the node whose temp dir is `temp_dir`: those whose output goes there or that descend from
    its raylet (conftest's `session_processes`: its workers rename themselves `ray::...`), those that name it on
    their command line (its log monitor, the head's dashboard and autoscaler monitor), and their children;
    optionally only those whose command line contains `kind`."""
    found = {p.pid: p for p in session_processes(f"{temp_dir}/")}
    named = re.compile(re.escape(str(temp_dir)) + r"(/|\s|$)")  # worker1's dir, not worker10's
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and named.search(" ".join(p.info["cmdline"] or ())):
            found[p.pid] = p
    for p in list(found.values()):
        try:
            found.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return of_kind(found.values(), kind)


class Cluster:
    """A head with no CPUs (it runs the control plane and the driver, no trial) and worker nodes of one CPU each,
    all on this machine, started with `ray start` as on separate machines, and token authentication on."""

    def __init__(self, root: Path):
        self.root, self.nodes, self.gcs, self.started = root, {}, None, 0
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")},
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    def _start(self, name: str, *args: str, ports: list[int] | None = None) -> None:
        # Every port a node opens is a free one: several nodes on one machine must not share any.
        manager, objects, agent, agent_grpc, metrics, runtime_env = ports or free_ports(6)
        self.nodes[name] = self.root / name  # before it starts: a node that fails to start is stopped too
        command = [RAY, "start", "--node-ip-address=127.0.0.1", f"--temp-dir={self.root / name}",
                   f"--node-manager-port={manager}", f"--object-manager-port={objects}",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
                   "--object-store-memory=200000000", "--disable-usage-stats", *args]
        started = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"ray start ({name}) failed:\n{started.stdout}\n{started.stderr}"

    def start_head(self) -> None:
        self.gcs, client = free_ports(2)
        self._start("head", "--head", f"--port={self.gcs}", "--num-cpus=0", "--include-dashboard=false",
                    f"--ray-client-server-port={client}")

    def add_worker(self) -> str:
        return self.add_workers(1)[0]

    def add_workers(self, n: int) -> list[str]:
        """`n` worker nodes of one CPU each, started at once (as an autoscaler starts them)."""
        names = [f"worker{self.started + i + 1}" for i in range(n)]
        self.started += n
        ports = free_ports(6 * n)  # all at once: distinct
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda i: self._start(names[i], f"--address={self.address}", "--num-cpus=1",
                                                ports=ports[6 * i:6 * i + 6]), range(n)))
        return names

    def processes(self, name: str, kind: str = "") -> list[psutil.Process]:
        return node_processes(self.nodes[name], kind)

    def kill(self, name: str) -> None:
        """Lose node `name` as a machine is lost: all its processes SIGKILLed at once."""
        for _ in range(3):  # a raylet may still be starting a worker as the first ones go
            procs = self.processes(name)
            if not procs:
                break
            for p in procs:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(procs, timeout=10)
        del self.nodes[name]

    def workers(self) -> list[str]:
        return [n for n in self.nodes if n != "head"]

    def stop(self) -> None:
        for name in [*self.workers(), "head"]:
            if name in self.nodes:
                self.kill(name)


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes of one CPU each (the machine's 2 cores). Tests may lose and add nodes; each
    says how many it needs, and the last one here replaces the whole cluster."""
    root = Path(tempfile.mkdtemp(prefix="mn-", dir="/tmp"))  # short: Ray's socket paths live under it
    shared = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    before = shared.read_text() if shared.exists() else None
    c = Cluster(root)
    try:
        c.start_head()
        c.add_workers(2)
        yield c
    finally:
        c.stop()
        assert not node_processes(root), "a process of the test's cluster outlived it"
        now = shared.read_text() if shared.exists() else None
        assert now == before, "a node of the test's cluster wrote /tmp/ray/ray_current_cluster"
        shutil.rmtree(root, ignore_errors=True)


def ensure_workers(cluster: Cluster, n: int) -> None:
    """Exactly `n` worker nodes (the tests run in this file's order: each leaves what the next one needs)."""
    if len(cluster.workers()) < n:
        cluster.add_workers(n - len(cluster.workers()))
    for extra in cluster.workers()[n:]:
        cluster.kill(extra)


@pytest.fixture
def bucket(s3_server) -> str:
    return f"s3://distill-tests/{uuid.uuid4().hex}?{s3_server}"


def driver(cluster: Cluster, command: str, sweep_file: Path, storage: str, log: Path) -> subprocess.Popen:
    """The sweep's driver, as the user starts it on the head: `python -m distill COMMAND SWEEP --address ...`."""
    with log.open("a") as out:  # the driver's console (both runs of a sweep, one after the other)
        return subprocess.Popen([sys.executable, "-m", "distill", command, str(sweep_file), "--storage", storage,
                                 "--address", cluster.address], env=cluster.env, stdout=out, stderr=subprocess.STDOUT)


TEACHERS = """
from distill.config import DataConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig


def get_config(variant):
    return SweepConfig(name="nodes-teachers", data=DataConfig(name="digits", val_size=200, views=1),
                       teachers=(TeacherConfig(name="ecnn", arch="cnn", members=2, cpus_per_worker=1,
                                               arch_args={"channels": (8,), "hidden": (32,), "kernel": 3},
                                               train=TrainConfig(lr=0.05, batch_size=64, epochs={epochs})),),
                       targets=("mimic",), hidden=(16,))
"""
# Label students only (no teacher to train first), 4 cells, one CPU each: two at a time on two worker nodes.
STUDENTS = """
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig
from distill.train import TrainConfig


def get_config(variant):
    return SweepConfig(name="nodes-students", data=DataConfig(name="digits", val_size=200, views=0),
                       hidden=(16, 32), targets=("labels",), student_teachers=(), seeds=(0, 1), cpus_per_trial=1,
                       search=SearchConfig(samples=1),
                       student=StudentConfig(hidden=16, train=TrainConfig(lr=0.05, batch_size=16, epochs={epochs})))
"""


def sweep_file(tmp_path: Path, text: str, epochs: int = 0) -> tuple[Path, object]:
    path = tmp_path / "sweep.py"
    path.write_text(textwrap.dedent(text).replace("{epochs}", str(epochs)))
    return path, load_sweep(str(path), "default")


def wait(condition, seconds: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `condition` until it holds (returns its value); fail if the driver ends first or time runs out."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"the driver ended ({process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.3)
    return value


def finish(run: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    try:
        code = run.wait(timeout=timeout)
    finally:
        if run.poll() is None:
            run.kill()
    text = log.read_text()
    print(f"the driver's console:\n{text}")  # shown when the test fails
    assert code == 0, f"the driver failed ({code}):\n{text[-4000:]}"
    return text


def epoch_of(state: files.Location) -> int:
    """The epoch a checkpoint in the bucket holds (0: none yet)."""
    try:
        return files.torch_load(state)["epoch"] if state.exists() else 0
    except Exception:  # noqa: BLE001  being replaced right now: read again on the next poll
        return 0


def epochs(root: files.Location) -> dict[str, int]:
    """Each student trial's last checkpoint in the bucket (a finished trial keeps its last), by trial folder."""
    return {d.name: epoch_of(d / "state.pt") for d in (root / "students").glob("*")}


def done(root: files.Location) -> set[str]:
    """The student trials whose row is written: finished."""
    return {d.name for d in (root / "students").glob("*") if (d / "row.json").exists()}


def follow(run: subprocess.Popen, progress, since: dict) -> tuple[dict, dict]:
    """Until the driver ends: when (time.monotonic()) each of `progress()`'s keys first went past `since`, and
    when each last changed (a trial's or member's last epoch: it finished then)."""
    first, last, seen = {}, {}, dict(since)
    while run.poll() is None:
        for key, value in progress().items():
            if key not in first and value > since.get(key, 0):
                first[key] = time.monotonic()
            if value != seen.get(key):
                seen[key], last[key] = value, time.monotonic()
        time.sleep(0.5)
    return first, last


def tune_pids(root: files.Location) -> set[int]:
    """The processes that ran student trials, as every trial's reports to Tune (its result.json in the bucket) say."""
    import pyarrow.fs as pafs

    ray_dir = root / "ray"
    infos = ray_dir.fs.get_file_info(pafs.FileSelector(ray_dir.path, recursive=True, allow_not_found=True))
    pids = set()
    for info in infos:
        if info.base_name == "result.json":
            pids.update(json.loads(line)["pid"] for line in files.location(f"{ray_dir.scheme}://{info.path}?"
                                                                          f"{ray_dir.query}").read_text().splitlines()
                        if line.strip())
    return pids


def trial_processes(cluster: Cluster, node: str) -> set[int]:
    """The pids of node `node`'s Tune trial actors (function trainables run in `ImplicitFunc` actors)."""
    return {p.pid for p in cluster.processes(node, "ImplicitFunc")}


def test_a_retried_trial_counts_once_as_running():
    """A trial whose node is lost is recovered (Tune: on_trial_recover) and started again (on_trial_start): the
    students' display counts it running once, not twice."""
    shown = ray_sweep.Progress(2)
    a, b = object(), object()
    shown.on_trial_start(0, [], a)
    shown.on_trial_start(0, [], b)
    shown.on_trial_recover(0, [], a)  # a's node is lost: it waits for a CPU
    assert shown.running == 1
    shown.on_trial_start(0, [], a)  # retried elsewhere, from its checkpoint
    assert shown.running == 2
    shown.finish({"status": "ok", "val_error": 0.1})
    shown.finish({"status": "ok", "val_error": 0.2})
    assert (shown.running, shown.done, shown.failed, shown.best) == (0, 2, 0, 0.1)


@pytest.mark.ray  # starts its own cluster (not the session's ray_local)
def test_worker_node_lost_while_a_member_trains(cluster, bucket, tmp_path):
    ensure_workers(cluster, 2)
    path, sweep = sweep_file(tmp_path, TEACHERS, epochs=16)
    teacher, root = sweep.teachers[0], files.location(bucket) / sweep.name
    states = [cache.member_state(root, sweep.data, teacher, i) for i in range(2)]

    def epochs() -> dict[int, int]:  # each member's last checkpoint; a saved member's is gone: its last epoch
        return {i: 16 if cache.member_result(root, sweep.data, teacher, i)[0] else epoch_of(states[i])
                for i in range(2)}

    log = tmp_path / "driver.log"
    run = driver(cluster, "teachers", path, bucket, log)

    def training_node() -> str | None:
        """A worker node where a member trains with a checkpoint and epochs to go: with both members training,
        either node; with one (the other's worker group not started yet, or gone), the one node with a worker."""
        training = [i for i, e in epochs().items() if 1 <= e <= 13]
        nodes = [n for n in cluster.workers() if cluster.processes(n, "RayTrainWorker")]
        return nodes[0] if training and (len(training) == 2 or len(nodes) == 1) else None

    lost = wait(training_node, 180, "a member training", run, log)
    # distill's own coordination (the member queue, each slot's driver and its Train controller) lives on the
    # driver's node: a lost worker node takes only the member training there.
    assert not [n for n in cluster.workers() if cluster.processes(n, "ray::Queue") or
                cluster.processes(n, "slot_run") or cluster.processes(n, "TrainController")]
    cluster.kill(lost)
    killed, at_kill = time.monotonic(), epochs()  # the lost member's checkpoint stays as it was at the kill
    moved, ended = follow(run, epochs, at_kill)
    text = finish(run, log)
    found = [cache.member_result(root, sweep.data, teacher, i)[0] for i in range(2)]
    assert all(r is not None and r["epochs"] == 16 for r in found), text
    # The member of the lost node resumed from its last checkpoint in the bucket, on the other node; the other
    # one trained straight through.
    resumed = [i for i in range(2) if found[i]["resumed_from"]]
    assert len(resumed) == 1 and found[resumed[0]]["resumed_from"] == at_kill[resumed[0]], (found, at_kill)
    assert "teacher ecnn: ensemble test error" in text and "Traceback" not in text
    other = 1 - resumed[0]  # when it finished, the other node's CPU was free for the lost member's worker group
    print(f"member of {lost} resumed at epoch {at_kill[resumed[0]]}: training again {moved[resumed[0]] - killed:.0f} s "
          f"after the kill (the other member, at epoch {at_kill[other]} then, done after "
          f"{ended.get(other, killed) - killed:.0f} s), the phase done {time.monotonic() - killed:.0f} s after it")


@pytest.mark.ray  # starts its own cluster (not the session's ray_local)
def test_node_added_mid_sweep_takes_new_trials(cluster, bucket, tmp_path):
    ensure_workers(cluster, 1)
    path, sweep = sweep_file(tmp_path, STUDENTS, epochs=120)
    root = files.location(bucket) / sweep.name
    log = tmp_path / "driver.log"
    run = driver(cluster, "sweep", path, bucket, log)
    # Every CPU busy, trials waiting: then a node joins.
    wait(lambda: sum(e >= 1 for e in epochs(root).values()) >= len(cluster.workers()), 180,
         "every worker node training", run, log)
    joined = cluster.add_worker()
    added = time.monotonic()
    started = wait(lambda: trial_processes(cluster, joined), 120, "a trial on the new node", run, log)
    took = time.monotonic() - added
    seen = set(started)
    while run.poll() is None:
        seen |= trial_processes(cluster, joined)
        time.sleep(0.3)
    text = finish(run, log)
    frame = results.load(root)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}, text
    # The new node's trial processes reported trial results: trials ran there.
    assert seen & tune_pids(root), (seen, tune_pids(root))
    print(f"a trial started on the node that joined {took:.0f} s after it joined")


@pytest.mark.ray  # starts its own cluster (not the session's ray_local)
def test_worker_node_lost_while_students_train(cluster, bucket, tmp_path):
    ensure_workers(cluster, 2)
    path, sweep = sweep_file(tmp_path, STUDENTS, epochs=40)
    root = files.location(bucket) / sweep.name
    log = tmp_path / "driver.log"
    run = driver(cluster, "sweep", path, bucket, log)
    # Two trials training, one on each worker node, each with a checkpoint in the bucket and epochs to go.
    wait(lambda: sum(2 <= e <= 32 for e in epochs(root).values()) == 2, 180, "two trials training", run, log)
    lost = next(n for n in cluster.workers() if trial_processes(cluster, n))
    wall = time.time()
    cluster.kill(lost)
    killed, at_kill = time.monotonic(), epochs(root)
    moved, ended = follow(run, lambda: epochs(root), at_kill)
    text = finish(run, log)
    frame = results.load(root)
    # Every cell exactly once, all finished ok (no retry left a second row or a failed one).
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}, text
    cells = sorted(j.id for j in pipeline.jobs(sweep, root, {}))
    assert sorted(files.location(d).name for d in frame["trial_dir"]) == cells, frame["trial_dir"]
    # The lost node's trial was retried on the other node from its last checkpoint; the others never restarted.
    resumed = {files.location(d).name: r for d, r in zip(frame["trial_dir"], frame["resumed_from"], strict=True)}
    again = [t for t, r in resumed.items() if r]
    assert len(again) == 1 and resumed[again[0]] == at_kill[again[0]] >= 2, (resumed, at_kill)
    # When Tune saw the trial fail (its log line on the driver's console), and when the other node's trial
    # finished (its CPU free for the retry).
    seen = re.search(r"^(\S+ \S+)\s+ERROR tune_controller.py:\d+ -- Trial task failed", text, re.M)
    noticed = datetime.datetime.strptime(seen[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall if seen else math.nan
    free = min(ended.get(t, killed) for t in at_kill if t not in again and 0 < at_kill[t] < 40)
    print(f"trial of {lost} resumed at epoch {at_kill[again[0]]}: training again {moved[again[0]] - killed:.0f} s "
          f"after the kill (Tune saw it fail after {noticed:.1f} s, the other node free after {free - killed:.0f} s), "
          f"the sweep done {time.monotonic() - killed:.0f} s after it")


@pytest.mark.ray  # starts its own cluster (not the session's ray_local)
def test_head_and_driver_lost_mid_sweep_resume_on_a_new_cluster(cluster, bucket, tmp_path):
    ensure_workers(cluster, 2)
    path, sweep = sweep_file(tmp_path, STUDENTS, epochs=40)
    root = files.location(bucket) / sweep.name
    log = tmp_path / "driver.log"
    run = driver(cluster, "run", path, bucket, log)
    wait(lambda: 1 <= len(done(root)) < 4, 180, "a trial finished", run, log)
    run.kill()  # the head is lost: its driver with it, then every node (the workers end once their head is gone)
    cluster.stop()
    lost, at_loss, before = time.monotonic(), epochs(root), done(root)
    kept = {t: files.read_json(root / "students" / t / "row.json")["train_seconds"] for t in before}
    assert not (root / "results.parquet").exists()
    # A new cluster, and the same command.
    cluster.start_head()
    cluster.add_workers(2)
    restarted = time.monotonic()
    rerun = driver(cluster, "run", path, bucket, log)
    moved, _ = follow(rerun, lambda: epochs(root), at_loss)
    text = finish(rerun, log)
    frame = results.load(root)
    assert len(frame) == 4 and frame["trial_dir"].is_unique and set(frame["status"]) == {"ok"}, text
    rows = {files.location(d).name: r for d, r in zip(frame["trial_dir"], frame.to_dict("records"), strict=True)}
    assert all(rows[t]["train_seconds"] == kept[t] for t in before), (rows, kept)  # kept, not trained again
    assert f"{len(before)} of 4 cells finished before with these settings, kept" in text
    # A trial interrupted with a checkpoint resumed from it.
    assert all(rows[t]["resumed_from"] == e for t, e in at_loss.items() if t not in before), (rows, at_loss)
    print(f"{len(before)} trials kept; new cluster in {restarted - lost:.0f} s, a trial training "
          f"{min(moved.values()) - restarted:.0f} s after it started, the sweep done {time.monotonic() - lost:.0f} s "
          "after the loss")
