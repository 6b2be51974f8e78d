"""The results table: one row per student trial, as a tidy pandas DataFrame.

A sweep writes it twice, as results.parquet and results.csv, and then, last, the manifest results.json: the
row count, each file's sha256 and the resolved sweep config that produced the rows. Written last, the manifest
commits the pair: a file that does not match it is the trace of an interrupted write, never a result.
"""

from __future__ import annotations

import io as _io

import pandas as pd
import pyarrow as pa

from distill import files
from distill.errors import UserError

MANIFEST = "results.json"
# What every results table has, whatever its trials reported: the report and the analysis read these.
COLUMNS = ["status", "target", "hidden", "bottleneck", "teacher", "seed", "val_error", "test_error"]


def write(directory: files.Where, rows: list[dict], config: dict) -> pd.DataFrame:
    """Write results.parquet and results.csv from one frame, then the manifest results.json (atomically each)
    beside the sweep's other outputs; `config` is the resolved sweep config (config.to_dict)."""
    frame = pd.DataFrame(rows)
    # A sweep whose trials all failed reports no errors: the columns are there anyway, empty, so that it loads.
    frame = frame.reindex(columns=[*frame.columns, *(c for c in COLUMNS if c not in frame)])
    # Integer settings and counts stay integers where some rows lack them (no bottleneck, a failed trial's
    # #params): nullable Int64 (<NA>), not floats with NaN, so "no bottleneck" has one form in the table.
    for col in frame.columns[frame.dtypes.map(lambda d: d.kind == "f")]:
        given = [r[col] for r in rows if r.get(col) is not None]
        if given and all(isinstance(v, int) and not isinstance(v, bool) for v in given):
            frame[col] = frame[col].astype("Int64")
    directory = files.location(directory)
    buf = _io.BytesIO()
    frame.to_parquet(buf, index=False)
    payloads = {"results.parquet": buf.getvalue(), "results.csv": frame.to_csv(index=False).encode()}
    for name, payload in payloads.items():
        files.write_bytes(directory / name, payload)
    files.write_json(directory / MANIFEST, {"rows": len(frame), "config": config,
                                         "files": {name: files.sha256(p) for name, p in payloads.items()}})
    return frame


def load(path: files.Where) -> pd.DataFrame:
    """The results of a sweep: pass its directory (or its results.parquet / results.csv), a local path or a
    storage URI (s3://bucket/dir). A file that does not match the manifest beside it is refused; without a
    manifest (sweeps written before it existed) the file is taken as it is."""
    path = files.location(path)
    if path.suffix not in (".parquet", ".csv"):
        path = path / "results.parquet"
    if not path.exists():
        raise UserError(f"no results at {path}: pass the directory a sweep wrote (it holds results.parquet)")
    payload = path.read_bytes()
    manifest = path.parent / MANIFEST
    expected = _manifest(manifest)["files"].get(path.name) if manifest.exists() else None
    if expected is not None and files.sha256(payload) != expected:
        raise UserError(f"{path} does not match {MANIFEST}: an interrupted write; run the sweep command again to "
                        "rewrite them")
    try:
        frame = pd.read_parquet(_io.BytesIO(payload)) if path.suffix == ".parquet" else \
            pd.read_csv(_io.BytesIO(payload))
    except (ValueError, OSError, pa.ArrowException) as e:  # what pyarrow and pandas raise for damaged bytes
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path} is not a readable results table ({reason}): it was damaged or half-written; run "
                        "the sweep command again to rewrite it") from None
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)} of a results table: pass the results "
                        "a distill sweep wrote")
    return frame


def config(directory: files.Where) -> dict:
    """The resolved sweep config that produced a directory's results, from its manifest; {} without one."""
    manifest = files.location(directory) / MANIFEST
    return _manifest(manifest)["config"] if manifest.exists() else {}


def _manifest(path: files.Location) -> dict:
    """The manifest in `path`; valid JSON of the wrong shape is as damaged as invalid JSON (files.read_json's)."""
    manifest = files.read_json(path)
    if not (isinstance(manifest, dict) and isinstance(manifest.get("files"), dict)
            and isinstance(manifest.get("config"), dict)):
        raise UserError(f"{path} is not a results manifest (rows, files, config): it was damaged; run the sweep "
                        "command again to rewrite it")
    return manifest
