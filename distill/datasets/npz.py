"""Your own arrays in one .npz file (`numpy.savez`), named by `DataConfig(name="npz", root=FILE)`.

The file holds x_train, y_train, x_test, y_test, and optionally x_val, y_val (else val is carved out of train).
x: images (N, C, H, W), or (N, H, W) for one channel, uint8 (0..255, stored as is) or float; or features (N, D),
taken as D channels of one pixel, (N, D, 1, 1), each normalised by its own train mean (use views=0: crops are for
images). y: integer labels 0..classes-1, (N,). Arguments: `classes` (default: the largest label + 1) and `flips`
(whether a horizontal flip keeps an image's label; default False).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from distill import files
from distill.datasets import Raw
from distill.errors import UserError

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def load(root: str | None = None, classes: int | None = None, flips: bool = False) -> Raw:
    if root is None:
        raise UserError("DataConfig(name='npz') needs root=FILE: the .npz file with x_train, y_train, x_test, "
                        "y_test (and optionally x_val, y_val)")
    where = files.location(root)
    if not where.exists() or where.is_dir():
        raise UserError(f"npz data file {root} does not exist: pass the .npz file as DataConfig(root=...)")
    with np.load(io.BytesIO(where.read_bytes()), allow_pickle=False) as arrays:  # no pickles: data, not code
        missing = [k for k in REQUIRED if k not in arrays]
        if missing:
            raise UserError(f"npz data file {root} has no {', '.join(missing)} (it has {', '.join(arrays.files)}): "
                            "save x_train, y_train, x_test, y_test (and optionally x_val, y_val)")
        if ("x_val" in arrays) != ("y_val" in arrays):
            raise UserError(f"npz data file {root} has only one of x_val and y_val: save both, or neither")
        splits = ["train", "test"] + (["val"] if "x_val" in arrays else [])
        xs = {s: inputs(arrays[f"x_{s}"], f"{root}: x_{s}") for s in splits}
        ys = {s: labels(arrays[f"y_{s}"], len(xs[s]), f"{root}: y_{s}") for s in splits}
    shapes = {tuple(x.shape[1:]) for x in xs.values()}
    if len(shapes) > 1:
        raise UserError(f"npz data file {root}: the splits' inputs differ in shape ({sorted(shapes)}): "
                        "every x_* must have the same shape after its first axis")
    found = max(int(y.max()) for y in ys.values() if len(y)) + 1
    if classes is not None and classes < found:
        raise UserError(f"npz data file {root} has label {found - 1}, but classes={classes}: raise classes")
    return Raw(train_x=xs["train"], train_y=ys["train"], test_x=xs["test"], test_y=ys["test"],
               classes=classes or found, flips=flips, val_x=xs.get("val"), val_y=ys.get("val"))


def inputs(x: np.ndarray, what: str) -> torch.Tensor:
    """(N, C, H, W) uint8 or fp32 from (N, C, H, W), (N, H, W) or (N, D) (as (N, D, 1, 1))."""
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{what} has dtype {x.dtype}: save numbers (uint8 images, or floats)")
    if x.ndim not in (2, 3, 4) or not len(x):
        raise UserError(f"{what} has shape {x.shape}: save (N, C, H, W) images, (N, H, W) or (N, D) features, N > 0")
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t if t.dtype == torch.uint8 else t.float()  # uint8 stays compact; other integers become values
    if t.dtype != torch.uint8 and not torch.isfinite(t).all():
        raise UserError(f"{what} holds NaN or infinite values: clean them before saving")
    return t[:, None] if t.dim() == 3 else t[:, :, None, None] if t.dim() == 2 else t


def labels(y: np.ndarray, n: int, what: str) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{what} has shape {y.shape} and dtype {y.dtype}: save {n} integer labels, shape ({n},)")
    if len(y) and y.min() < 0:
        raise UserError(f"{what} has label {int(y.min())}: labels must be 0..classes-1")
    return torch.from_numpy(y.astype(np.int64))
