"""The results table: one row per student trial, as a tidy pandas DataFrame."""

from __future__ import annotations

import io as _io

import pandas as pd

from distill import io
from distill.errors import UserError


def write(directory: io.Where, rows: list[dict]) -> pd.DataFrame:
    """Write results.parquet and results.csv (atomically) beside the sweep's other outputs."""
    frame = pd.DataFrame(rows)
    directory = io.location(directory)
    buf = _io.BytesIO()
    frame.to_parquet(buf, index=False)
    io.write_bytes(directory / "results.parquet", buf.getvalue())
    io.write_bytes(directory / "results.csv", frame.to_csv(index=False).encode())
    return frame


def load(path: io.Where) -> pd.DataFrame:
    """The results of a sweep: pass its directory (or its results.parquet / results.csv), a local path or a
    storage URI (s3://bucket/dir)."""
    path = io.location(path)
    if path.suffix not in (".parquet", ".csv"):
        path = path / "results.parquet"
    if not path.exists():
        raise UserError(f"no results at {path}: pass the directory a sweep wrote (it holds results.parquet)")
    raw = _io.BytesIO(path.read_bytes())
    return pd.read_parquet(raw) if path.suffix == ".parquet" else pd.read_csv(raw)
