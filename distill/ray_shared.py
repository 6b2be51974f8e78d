"""Data and logits in the Ray object store once, read by every trial without a copy.

The data go in as stored (uint8 images, fp16 features: `distill.data.Inputs`); each teacher's mean logits on
each split go in as an object of their own, so a trial maps only the two it uses.

Ray keeps numpy arrays in shared memory and `ray.get` maps them read-only into each worker: the tensors
a trial sees are views of that one copy (`torch.from_numpy`), so N concurrent trials hold one data set.
Nothing here writes to the shared tensors: `fit` only indexes them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings

import numpy as np
import ray
import torch

from distill.data import Inputs, Splits, TransferSet


def arrays(t):
    """A tensor, or the tensors of `Inputs`, as numpy arrays for the store (compact dtypes kept)."""
    if isinstance(t, Inputs):
        return {f.name: arrays(getattr(t, f.name)) for f in dataclasses.fields(Inputs)}
    return t.cpu().numpy() if torch.is_tensor(t) else t


def tensors(a, device: torch.device):
    if isinstance(a, dict):
        return Inputs(**{k: tensors(v, device) for k, v in a.items()})
    return tensor(a, device) if isinstance(a, np.ndarray) else a


def pack(splits: Splits, transfer: TransferSet) -> dict:
    """The splits and the transfer set as numpy arrays (for the store), as compact as they are held."""
    # A transfer set that is the train inputs themselves (views=0) goes in once: x None means train_x.
    same = transfer.x is splits.train_x
    return {"splits": {f.name: arrays(getattr(splits, f.name)) for f in dataclasses.fields(Splits)},
            "transfer": {"x": None if same else arrays(transfer.x), "source": arrays(transfer.source),
                         "views": transfer.views, "teacher_views": transfer.teacher_views}}


def put(splits: Splits, transfer: TransferSet):
    """One object-store copy of `pack(...)`."""
    return ray.put(pack(splits, transfer))


def tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    # The array is read-only shared memory; torch warns that writes would be undefined. We never write.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(a)
    return t if device.type == "cpu" else t.to(device)


def get(ref, device: torch.device | str = "cpu", views: int | None = None) -> tuple[Splits, TransferSet]:
    """(splits, transfer); on the CPU these are zero-copy views of the shared store. `views`: only that recipe's
    start of the transfer set (`TransferSet.recipe`), cut before anything moves to `device`: a GPU trial copies
    only the inputs it learns on."""
    device, cpu = torch.device(device), torch.device("cpu")
    payload = ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref
    s = {k: tensors(v, device) for k, v in payload["splits"].items()}
    held = payload["transfer"]
    x = tensors(held["x"] if held["x"] is not None else payload["splits"]["train_x"], cpu)
    transfer = TransferSet(x=x, source=tensor(held["source"], cpu), views=held["views"],
                           teacher_views=held["teacher_views"])
    transfer = transfer if views is None else transfer.recipe(views)
    # No views: the transfer set is the train inputs themselves, the splits' own copy on the device.
    return Splits(**s), TransferSet(s["train_x"] if transfer.views == 0 else transfer.x.to(device),
                                    transfer.source.to(device), transfer.views, transfer.teacher_views)


def put_logits(logits: dict[tuple[str, str], torch.Tensor]) -> dict[tuple[str, str], ray.ObjectRef]:
    """Each teacher's mean logits on each split in the store on its own, so that a trial fetches only its own."""
    return {k: ray.put(v.numpy()) for k, v in logits.items()}


def get_logits(refs: dict[tuple[str, str], ray.ObjectRef], keys, device: torch.device | str = "cpu",
               rows: int | None = None) -> dict:
    """The logits of `keys` only, as tensors on `device` (zero-copy views on the CPU); `rows`: only the first
    rows of the transfer split's (a smaller recipe's), cut before they move."""
    out = {}
    for key in keys:
        held = ray.get(refs[key]) if isinstance(refs[key], ray.ObjectRef) else refs[key]
        t = tensor(held, torch.device("cpu"))
        out[key] = (t[:rows] if rows is not None and key[1] == "transfer" else t).to(device)
    return out


# Ray Train's controller collects worker reports every 2 s by default; every epoch's report waits on
# it. 0.5 s cut a small member's wall time by a third here (most of a small run is overhead). A member's worker
# group waits up to an hour for resources (default 60 s, then a failure and a retry): an autoscaler takes
# minutes to start a GPU node, and a member started with teacher_concurrency above what fits waits its turn.
# glibc returns every large block (a wide student's activations and gradients, freed each step) to the kernel
# and faults it in again next step: 45,317 page faults per step at H=16k. Keeping them mapped made fit 1.65x
# faster at H=16k and 1.18x at H=32k (bench/malloc.py, bench/page_faults.py; BENCHMARKS.md 1). A trial's memory
# then stays at its step's peak between steps instead of dropping: freed blocks are reused, not handed back.
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
RUNTIME_ENV = {"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
                            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "3600", **MALLOC}}


def init(address: str | None = None, num_cpus: int | None = None, log=None, verbose: bool = True) -> None:
    """Connect to the cluster (RAY_ADDRESS / `address`), or start a local one on this machine. Unless `verbose`,
    Ray's own messages and every worker's output stay in Ray's log folder, which `log` is told in one line."""
    # Tune warns whenever trials checkpoint often (every epoch here): expected, so silenced. Tune reads it
    # in the driver when a Tuner starts, which is after this; before the early return, for a Ray started
    # elsewhere (the tests' fixture).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    if not verbose:  # before init: its token-auth notice and start-up lines go through this logger
        logging.getLogger("ray").setLevel(logging.ERROR)
        # Tune's newer console prints each Tuner's header and paths even at verbose=0; the classic one is silent.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        context = ray.init(address=address, runtime_env=RUNTIME_ENV, **quiet)
    else:
        context = ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), runtime_env=RUNTIME_ENV, **quiet)
    if log is not None:
        dashboard = f"dashboard {context.dashboard_url}; " if context.dashboard_url else ""
        where = "" if verbose else f"; worker logs in {context.address_info['session_dir']}/logs (--verbose shows them)"
        log(f"ray: {dashboard}{len(ray.nodes())} node(s){where}")
