"""Files on local disk or in object storage, written atomically, and content hashes: an interrupted run never
leaves a file a later run would trust.

A storage root is a local path or a URI that pyarrow.fs opens: `s3://bucket/dir`, `gs://bucket/dir`, with
options as a query (`s3://bucket/dir?endpoint_override=http://host:9000`). Ray reads the same string as its
storage_path, so Tune's files and ours land side by side, and every node of a cluster sees them.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import torch

from distill.errors import UserError


@functools.cache
def umask() -> int:
    """The process's umask. Reading it means setting it, so it is read once, when first needed, and restored."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class Location:
    """One file or folder: a local path, or a path on a pyarrow filesystem. Only the pathlib calls we use."""

    def __init__(self, fs: pafs.FileSystem | None, path: str, query: str = "", scheme: str = ""):
        self.fs, self.path, self.query, self.scheme = fs, path.rstrip("/") or "/", query, scheme

    @classmethod
    def on(cls, fs: pafs.FileSystem, path: str) -> Location:
        """A path on a filesystem Ray hands us (e.g. a trial's storage): local ones get local file calls."""
        local = isinstance(fs, pafs.LocalFileSystem)
        return cls(None if local else fs, path, scheme="" if local else fs.type_name)

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def __truediv__(self, part: str) -> Location:
        return Location(self.fs, f"{self.path}/{part}", self.query, self.scheme)

    def __str__(self) -> str:  # what Ray's storage_path and our messages get
        if not self.remote:
            return self.path
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __fspath__(self) -> str:  # only local locations are paths
        if self.remote:
            raise TypeError(f"{self} is not a local path")
        return self.path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> Location:
        return Location(self.fs, self.path.rsplit("/", 1)[0] or "/", self.query, self.scheme)

    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound if self.remote else os.path.exists(self.path)

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory if self.remote else os.path.isdir(self.path)

    def read_bytes(self) -> bytes:
        if not self.remote:
            return Path(self.path).read_bytes()
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def glob(self, pattern: str) -> list[Location]:
        """The children whose names match `pattern` (one level, like Path.glob without '**'), sorted."""
        if self.remote:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
            names = [i.base_name for i in infos]
        else:
            names = os.listdir(self.path) if os.path.isdir(self.path) else []
        return [self / n for n in sorted(names) if fnmatch.fnmatch(n, pattern)]

    def write_bytes(self, payload: bytes) -> None:
        """Atomically: readers see the old file or the whole new one. Locally a temp file renamed over the
        target; in object storage a temp object copied to the target (a copy publishes whole objects)."""
        if self.remote:
            tmp = f"{self.parent.path}/.{self.name}.{uuid.uuid4().hex}.tmp"
            try:
                with self.fs.open_output_stream(tmp) as f:
                    f.write(payload)
                self.fs.move(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    self.fs.delete_file(tmp)
                raise
            return
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.name}.", suffix=".tmp")
        except OSError as e:
            full(e, folder, len(payload))
            raise
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; results are meant to be shared
            os.replace(tmp, self.path)
        except BaseException as e:
            os.unlink(tmp)
            if isinstance(e, OSError):
                full(e, folder, len(payload))
            raise


def full(e: OSError, folder: str, size: int) -> None:
    """A full disk or quota is the user's to fix: one line with the place, the free space and the need."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(folder).free
        raise UserError(f"no space left in {folder} ({free / 2**20:.1f} MiB free, {size / 2**20:.1f} MiB to write): "
                        "free some space or pass --storage on a larger disk, then run the same command again "
                        "(finished work is kept)") from None


Where = str | os.PathLike | Location  # what functions that read or write a sweep's files accept


@functools.lru_cache(maxsize=16)
def _filesystem(uri: str) -> pafs.FileSystem:
    return pafs.FileSystem.from_uri(uri)[0]  # resolves credentials and region once per bucket and options


def location(where: Where) -> Location:
    """A Location from a local path (`~` expanded) or a URI (s3://, gs://, any pyarrow.fs scheme)."""
    if isinstance(where, Location):
        return where
    where = os.fspath(where)
    scheme, sep, rest = where.partition("://")
    if not sep or scheme == "file":
        return Location(None, os.path.abspath(os.path.expanduser(rest if sep else where)))
    rest, _, query = rest.partition("?")
    bucket = rest.split("/", 1)[0]
    secret = [k for k in ("access_key", "secret_key", "session_token") if f"{k}=" in query]
    if "@" in bucket or secret:
        raise UserError(f"the storage URI {scheme}://{bucket.rpartition('@')[2]}/... carries credentials "
                        f"({', '.join(secret) or 'a user:password@ part'}), which would show in every log and "
                        "record: give them through the environment (AWS_ACCESS_KEY_ID, ...), ~/.aws or an instance "
                        "profile instead")
    fs = _filesystem(f"{scheme}://{bucket}" + (f"?{query}" if query else ""))
    return Location(fs, rest, query, scheme)


def write_bytes(path: Where, payload: bytes) -> None:
    location(path).write_bytes(payload)


def remove(path: Where) -> None:
    """Delete one file, locally or in object storage (gone already is fine)."""
    where = location(path)
    with contextlib.suppress(FileNotFoundError):
        if where.remote:
            where.fs.delete_file(where.path)
        else:
            os.remove(where.path)


def remove_tree(path: Where) -> None:
    """Delete a folder and everything in it, locally or in object storage (gone already is fine)."""
    where = location(path)
    if where.remote:
        with contextlib.suppress(FileNotFoundError):
            where.fs.delete_dir(where.path)
    else:
        shutil.rmtree(where.path, ignore_errors=True)


def write_json(path: Where, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Where):
    """The JSON object in `path`; a damaged file is a one-line UserError that names it."""
    try:
        return json.loads(location(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): it was damaged or half-written; delete it or restore "
                        "it from a copy, and run the command that writes it again") from None


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def torch_load(path: Where, map_location="cpu"):
    return load_tensors(location(path).read_bytes(), path, map_location)


def load_tensors(payload: bytes, name, map_location="cpu"):
    """What `torch_bytes` wrote: tensors in plain containers. Only weights load (`weights_only=True`): a file
    crafted to run code on unpickling is refused, whoever could write the storage."""
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"refused to load {name}: it holds more than tensors and plain values ({reason}), so loading "
                        "it could run code; if you did not put it there, someone with write access to the storage "
                        "did: delete it (its work is redone) and check who can write there") from None


def sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def digest(obj) -> str:
    """A short content hash of anything JSON-serialisable (configs, via config.to_dict)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
