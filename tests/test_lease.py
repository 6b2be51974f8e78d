"""One driver per sweep: the lease in the sweep's storage, on local disk and in a bucket (no Ray)."""

import datetime
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from distill import files, lease
from distill.errors import UserError


def hold(root, command="python -m distill run sweeps/demo.py", **kw):
    kw.setdefault("settle", 0.05)  # the local S3 server is consistent at once; the race test keeps the default
    kw.setdefault("log", print)
    return lease.hold(root, command, **kw)


def foreign(root, heartbeat_age: float) -> dict:
    """Leave the lease of a driver on another host whose last heartbeat was `heartbeat_age` s ago."""
    theirs = {"owner": "theirs", "host": "elsewhere", "pid": 4242, "command": "python -m distill sweep x.py",
              "started": datetime.datetime.now(datetime.UTC).isoformat(), "heartbeat": time.time() - heartbeat_age}
    files.write_json(files.location(root) / "lease.json", theirs)
    return theirs


def current(root) -> dict:
    return files.read_json(files.location(root) / "lease.json")


def test_second_driver_refused_until_the_first_exits(storage):
    with hold(storage, "python -m distill run sweeps/first.py"):
        with pytest.raises(UserError) as refused, hold(storage):
            pass
        assert current(storage)["pid"] == os.getpid()
    message = str(refused.value)
    assert "\n" not in message and f"pid {os.getpid()}" in message and "sweeps/first.py" in message
    assert f"on host {socket.gethostname()}" in message and "lease.json" in message and "ray job stop" in message
    assert not (files.location(storage) / "lease.json").exists()
    with pytest.raises(KeyboardInterrupt), hold(storage):  # an interrupted driver frees the lease too
        raise KeyboardInterrupt
    assert not (files.location(storage) / "lease.json").exists()
    with hold(storage):
        assert current(storage)["pid"] == os.getpid()


def test_killed_driver_on_this_host_is_taken_over_at_once(storage):
    code = ("import sys, time\nfrom distill import lease\n"
            "with lease.hold(sys.argv[1], 'sleeper', settle=0.05):\n    print('held', flush=True)\n    time.sleep(600)")
    driver = subprocess.Popen([sys.executable, "-c", code, storage], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline() == "held\n"
    finally:
        driver.kill()
        driver.wait()
    assert current(storage)["pid"] == driver.pid  # SIGKILL left its lease, with a fresh heartbeat
    logs = []
    with hold(storage, log=logs.append):
        assert current(storage)["pid"] == os.getpid()
    assert len(logs) == 1 and "'sleeper'" in logs[0] and f"its process {driver.pid} is gone" in logs[0]


def test_old_heartbeat_from_another_host_is_taken_over(storage, monkeypatch):
    monkeypatch.setenv("DISTILL_LEASE_TTL_S", "30")
    foreign(storage, heartbeat_age=75)
    logs = []
    with hold(storage, log=logs.append):
        assert current(storage)["pid"] == os.getpid()
    assert len(logs) == 1 and "took over" in logs[0] and "host elsewhere, pid 4242" in logs[0]
    assert "(heartbeat 75 s old)" in logs[0]


def test_fresh_lease_from_another_host_is_refused(storage):
    theirs = foreign(storage, heartbeat_age=5)
    with pytest.raises(UserError, match=r"host elsewhere, pid 4242, .* last heartbeat 5 s ago; wait") as refused:
        with hold(storage):
            pass
    assert "\n" not in str(refused.value) and "kill 4242" in str(refused.value)
    assert current(storage) == theirs


def test_heartbeat_advances_and_stops_when_taken_over(storage):
    logs = []
    with hold(storage, beat=0.2, log=logs.append):
        first = current(storage)["heartbeat"]
        until(lambda: current(storage)["heartbeat"] > first)
        # Just after a beat, so that the next one reads this: as if another driver took over while we stalled.
        theirs = foreign(storage, heartbeat_age=0)
        until(lambda: logs)
        assert current(storage) == theirs
    assert len(logs) == 1 and logs[0].startswith("lost the lease") and "pid 4242" in logs[0]
    assert current(storage) == theirs  # its lease is not ours to delete


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def race(root, racers: int) -> list[str]:
    """Start `racers` drivers at once; each holds on until all have tried. Their outcomes, sorted."""
    start, attempted, outcomes = threading.Barrier(racers, timeout=30), threading.Barrier(racers, timeout=30), []

    def driver(i):
        start.wait()
        try:
            with lease.hold(root, f"racer {i}", log=lambda line: None):
                outcomes.append("won")
                attempted.wait()
        except UserError:
            outcomes.append("refused")
            attempted.wait()

    threads = [threading.Thread(target=driver, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


@pytest.mark.parametrize("stale", [False, True], ids=["no-lease", "stale-lease"])
def test_racing_drivers_exactly_one_wins(tmp_path, stale):
    for _ in range(3):
        if stale:
            foreign(tmp_path, heartbeat_age=600)
        assert race(tmp_path, racers=4) == ["refused"] * 3 + ["won"]
        assert not (tmp_path / "lease.json").exists()


def test_bad_input_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_LEASE_TTL_S", "soon")
    with pytest.raises(UserError, match="DISTILL_LEASE_TTL_S='soon' is not a positive number"), hold(tmp_path):
        pass
    monkeypatch.delenv("DISTILL_LEASE_TTL_S")
    files.write_json(tmp_path / "lease.json", {"owner": "someone"})
    with pytest.raises(UserError, match="is not a lease .* delete it if no driver runs this sweep"), hold(tmp_path):
        pass
