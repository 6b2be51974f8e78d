"""Checks of the command line's environment that run before any data loads, Ray starts or anything trains:
the device, the Ray address, the storage location. Each failure is one UserError line that says what to fix."""

from __future__ import annotations

import os
import socket
import threading
import uuid

import pyarrow as pa
import torch

from distill import files
from distill.errors import UserError

TIMEOUT = 5.0  # seconds for the TCP probe of a Ray address
# The port Ray listens on where a URI scheme leaves it out: the Ray client, the dashboard behind a proxy.
DEFAULT_PORTS = {"ray": 10001, "http": 80, "https": 443}


def _detail(e: BaseException) -> str:
    """An exception as one short line: its type and message, whatever newlines the message has."""
    text = " ".join(str(e).split())[:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def device(name: str) -> torch.device:
    """The torch device `name` names, refused if it is malformed or absent on this machine."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device: use cpu, cuda, cuda:1 or mps") from None
    if dev.type == "cpu":
        return dev
    # torch.device accepts every type it knows; only the accelerator this build can drive may be present.
    present = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if present is None or present.type != dev.type:
        raise UserError(f"--device {name!r}: this machine has no {dev.type} device: use "
                        f"{'cpu or ' + present.type if present else 'cpu'}")
    count = torch.accelerator.device_count()
    if dev.index is not None and dev.index >= count:
        raise UserError(f"--device {name!r}: this machine has {count} {dev.type} device(s): use an index below "
                        f"{count}")
    return dev


def address(address: str | None) -> None:
    """Refuse an unreachable Ray cluster address within seconds, instead of letting ray.init wait forever."""
    if address in (None, "", "auto", "local"):  # a local Ray, or one Ray finds on this machine
        return
    scheme, sep, rest = address.partition("://")
    host, colon, port = (rest if sep else address).split("/", 1)[0].rpartition(":")
    if not colon and sep and scheme in DEFAULT_PORTS:
        host, port = port, str(DEFAULT_PORTS[scheme])
    host = host.strip("[]")  # an IPv6 address, [::1]:6379
    if (sep and scheme not in DEFAULT_PORTS) or not host or not port.isdigit() or int(port) > 65535:
        raise UserError(f"Ray address {address!r} is malformed: use host:port, ray://host:port or "
                        "http://host:port (or unset RAY_ADDRESS for a local Ray)")
    failure: list[BaseException | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, int(port)), timeout=TIMEOUT).close()
            failure.append(None)
        except Exception as e:  # OSError, or UnicodeError for a host name IDNA refuses
            failure.append(e)

    # In a daemon thread: the name lookup has no timeout of its own, and several addresses may be tried in turn.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(2 * TIMEOUT)
    if failure == [None]:
        return
    why = _detail(failure[0]) if failure else f"no answer in {2 * TIMEOUT:.0f} s"
    raise UserError(f"cannot reach the Ray cluster at {address} (a TCP connection to {host}:{port}: {why}): "
                    "check that it is up with `ray status` on its head node, or unset RAY_ADDRESS / leave out "
                    "--address to start a local Ray")


def location(where: str) -> files.Location:
    """`files.location(where)`, with a malformed or unopenable URI refused in one line."""
    try:
        root = files.location(where)
    except (OSError, ValueError, NotImplementedError, pa.ArrowException) as e:
        raise UserError(f"storage {where!r} cannot be opened ({_detail(e)}): pass a directory, or a URI such "
                        "as s3://bucket/dir with options pyarrow.fs knows") from None
    if root.remote and root.path == "/":
        raise UserError(f"storage {where!r} names no bucket: pass a URI such as s3://bucket/dir")
    return root


def storage(root: files.Location) -> None:
    """Refuse a storage location that cannot be written (a file, read-only, a missing bucket, no credentials)."""
    probe = root / f".probe-{uuid.uuid4().hex}"
    try:
        files.write_bytes(probe, b"")
        if root.remote:
            root.fs.delete_file(probe.path)
        else:
            os.remove(probe.path)
    except UserError:
        raise
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"storage {root} cannot be a folder: it, or a folder above it, is a file: pass another "
                        "--storage") from None
    except Exception as e:  # PermissionError, a missing bucket, no credentials, ...
        raise UserError(f"cannot write to the storage {root} ({_detail(e)}): pass a --storage you can write to "
                        "(for a bucket: check that it exists and that your credentials may write to it)") from None
