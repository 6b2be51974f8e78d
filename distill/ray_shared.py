"""Data and logits in the Ray object store once, read by every trial without a copy.

Ray keeps numpy arrays in shared memory and `ray.get` maps them read-only into each worker: the tensors
a trial sees are views of that one copy (`torch.from_numpy`), so N concurrent trials hold one data set.
Nothing here writes to the shared tensors: `fit` only indexes them.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import ray
import torch

from distill.data import Splits, TransferSet


def pack(splits: Splits, transfer: TransferSet, logits: dict[str, dict[str, torch.Tensor]] | None = None) -> dict:
    """The splits, the transfer set and per-teacher per-member logits as numpy arrays (for the store)."""
    arrays = {f.name: getattr(splits, f.name) for f in dataclasses.fields(Splits)}  # None fields stay None
    # A transfer set that is the train inputs themselves (views=0) goes in once: x None means train_x.
    same = transfer.x is splits.train_x
    payload = {"splits": {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in arrays.items()},
               "transfer": {"x": None if same else transfer.x.cpu().numpy(), "source": transfer.source.cpu().numpy()},
               "logits": {t: {s: v.numpy() for s, v in per.items()} for t, per in (logits or {}).items()}}
    return payload


def put(splits: Splits, transfer: TransferSet, logits: dict[str, dict[str, torch.Tensor]] | None = None):
    """One object-store copy of `pack(...)`."""
    return ray.put(pack(splits, transfer, logits))


def tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    # The array is read-only shared memory; torch warns that writes would be undefined. We never write.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    return t if device.type == "cpu" else t.to(device)


def get(ref, device: torch.device | str = "cpu"):
    """(splits, transfer, logits) as tensors; on the CPU these are zero-copy views of the shared store."""
    device = torch.device(device)
    payload = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
    s = {k: tensor(v, device) if isinstance(v, np.ndarray) else v for k, v in payload["splits"].items()}
    x = payload["transfer"]["x"]
    transfer = TransferSet(x=s["train_x"] if x is None else tensor(x, device),
                           source=tensor(payload["transfer"]["source"], device))
    logits = {t: {s_: tensor(v, device) for s_, v in per.items()} for t, per in payload["logits"].items()}
    return Splits(**s), transfer, logits


# Ray Train's controller collects worker reports every 2 s by default; every epoch's report waits on
# it. 0.5 s cut a small member's wall time by a third here (most of a small run is overhead).
RUNTIME_ENV = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}}


def init(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to the cluster (RAY_ADDRESS / `address`), or start a local one on this machine."""
    # Tune warns whenever trials checkpoint often (every epoch here): expected, so silenced. Tune reads it
    # in the driver when a Tuner starts, which is after this; before the early return, for a Ray started
    # elsewhere (the tests' fixture).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=RUNTIME_ENV)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), runtime_env=RUNTIME_ENV)
