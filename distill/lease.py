"""One driver per sweep: a lease file, `lease.json`, in the sweep's storage (local disk or a bucket alike).

A driver holds the lease while it runs and renews its heartbeat from a daemon thread; a second driver is
refused with one line that names the first. A lease is stale, and taken over, when its heartbeat is older
than the ttl, or at once when it names this host and its process is gone (a driver killed by SIGKILL or
a lost machine leaves its lease behind; nothing else would ever delete it).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
import uuid

import psutil

from distill import files
from distill.errors import UserError

NAME = "lease.json"
FIELDS = {"owner", "host", "pid", "command", "started", "heartbeat"}


def default_ttl() -> float:
    """$DISTILL_LEASE_TTL_S if set (tests, clusters whose drivers stall for longer), else 60 s."""
    value = os.environ.get("DISTILL_LEASE_TTL_S", "60")
    try:
        ttl = float(value)
    except ValueError:
        ttl = 0.0
    if not ttl > 0:
        raise UserError(f"DISTILL_LEASE_TTL_S={value!r} is not a positive number of seconds: set it like 120, "
                        "or unset it for the default 60")
    return ttl


@contextlib.contextmanager
def hold(root: files.Where, command: str, ttl: float | None = None, beat: float | None = None, log=print,
         settle: float | None = None):
    """Hold the lease of the sweep under `root` for this process while the block runs.

    `ttl` (default `default_ttl()`): a heartbeat older than this marks a driver gone. `beat`: seconds between
    heartbeats, well under ttl (default 10 s, or ttl / 3 if shorter). `settle`: seconds between writing our
    lease and reading it back, longer than any other driver can take between reading a lease and writing its
    own (default 0.2 s on local disk, 2 s in a bucket)."""
    loc = files.location(root) / NAME
    ttl = default_ttl() if ttl is None else ttl
    beat = min(10.0, ttl / 3) if beat is None else beat
    settle = (2.0 if loc.remote else 0.2) if settle is None else settle
    ours = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "command": command,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "heartbeat": time.time()}
    _acquire(loc, ours, ttl, settle, log)
    stop = threading.Event()
    beater = threading.Thread(target=_beat, args=(loc, ours, beat, stop, log), name="distill-lease", daemon=True)
    beater.start()
    try:
        yield
    finally:
        stop.set()
        beater.join()
        try:
            if _owner(_read(loc)) == ours["owner"]:
                os.remove(loc) if not loc.remote else loc.fs.delete_file(loc.path)
        except (OSError, UserError) as e:  # the block's own outcome matters more; the lease goes stale anyway
            log(f"could not delete the lease {loc} ({e}): the next driver takes it over after {ttl:g} s")


def _acquire(loc: files.Location, ours: dict, ttl: float, settle: float, log) -> None:
    # Each round looks at the lease there is: none, a stale one (replace it) or a live one (refuse). Writing
    # is not enough, as two drivers may write at once: the read-back after `settle` sees the last writer,
    # and the loser's next round finds the winner's live lease.
    for _ in range(3):
        theirs = _read(loc)
        stale = theirs and _stale(theirs, ttl)
        if theirs and not stale:
            raise UserError(f"another driver runs the sweep in {loc.parent}: {_who(theirs)}, last heartbeat "
                            f"{time.time() - theirs['heartbeat']:.0f} s ago; wait for it to finish, or stop it "
                            f"(`ray job stop JOB_ID`, or `kill {theirs['pid']}` on {theirs['host']}); if you are "
                            f"sure it is gone, delete {loc}")
        ours["heartbeat"] = time.time()
        if theirs:
            files.write_json(loc, ours)
        elif not _create(loc, ours):
            continue
        time.sleep(settle)
        if _owner(_read(loc)) == ours["owner"]:
            if theirs:
                log(f"took over the lease of {loc.parent} from {_who(theirs)} ({stale})")
            return
    raise UserError(f"could not take the lease {loc}: other drivers of this sweep keep replacing it; stop them "
                    "and run the command again")


def _create(loc: files.Location, lease: dict) -> bool:
    """Write the first lease; False if another driver's lease appeared meanwhile. Locally a hard link of a
    complete temp file, which fails if the name exists, so simultaneous starts cannot both win; a bucket has
    no such call, and the read-back decides."""
    if loc.remote:
        files.write_json(loc, lease)
        return True
    tmp = loc.parent / f".{NAME}.{lease['owner']}.tmp"
    files.write_json(tmp, lease)
    try:
        os.link(tmp, loc)
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system (FAT, some FUSE mounts): the read-back decides
        os.replace(tmp, loc)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return True


def _beat(loc: files.Location, ours: dict, every: float, stop: threading.Event, log) -> None:
    while not stop.wait(every):
        try:
            theirs = _read(loc)
            if _owner(theirs) != ours["owner"]:
                # Taken over (this process stalled past the ttl) or deleted by hand: another driver may run
                # now, and beating on would fight it; the user decides whether to stop this one.
                log(f"lost the lease of {loc.parent} to {_who(theirs) if theirs else 'nobody (it was deleted)'}: "
                    "stopped renewing it; stop this driver if the other one runs the sweep")
                return
            # A driver that takes over between our read and this write sees it when it reads back, and backs off.
            files.write_json(loc, {**ours, "heartbeat": time.time()})
        except (OSError, UserError) as e:  # a storage hiccup must not end the heartbeat: try again next beat
            log(f"could not renew the lease {loc} ({e}); trying again in {every:g} s")


def _read(loc: files.Location) -> dict | None:
    try:
        lease = files.read_json(loc)
    except FileNotFoundError:
        return None
    if not isinstance(lease, dict) or not FIELDS <= lease.keys():
        raise UserError(f"{loc} is not a lease (it needs {', '.join(sorted(FIELDS))}): delete it if no driver "
                        "runs this sweep, and run the command again")
    return lease


def _owner(lease: dict | None) -> str | None:
    return lease["owner"] if lease else None


def _who(lease: dict) -> str:
    return f"{lease['command']!r} on host {lease['host']}, pid {lease['pid']}, started {lease['started']}"


def _stale(lease: dict, ttl: float) -> str | None:
    """Why `lease` is stale, or None if its driver may still run."""
    age = time.time() - lease["heartbeat"]
    if age > ttl:
        return f"heartbeat {age:.0f} s old"
    if lease["host"] == socket.gethostname() and not _alive(lease["pid"], lease["started"]):
        return f"its process {lease['pid']} is gone"
    return None


def _alive(pid: int, started: str) -> bool:
    """Whether process `pid` of this host is the driver that started at `started` (ISO time)."""
    try:
        process = psutil.Process(pid)
        # A pid created after the lease was taken is a later process that reuses the number (2 s of slack:
        # `started` is in whole seconds, process start times are coarse); a zombie has ended, unreaped.
        reused = process.create_time() > datetime.datetime.fromisoformat(started).timestamp() + 2
        return not reused and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. access denied: it exists, so assume it runs
        return True
