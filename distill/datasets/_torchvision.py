"""Shared reader for the torchvision data sets: local files first, a download only where there is internet."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import numpy as np
import torch

from distill.datasets import Raw, default_root
from distill.errors import UserError


def read(name: str, open_split: Callable[[str, bool, bool], object], files: str, present: str, classes: int,
         flips: bool, root: str | None) -> Raw:
    """`open_split(root, train, download)` builds the torchvision data set; `files` says what to put where, and
    `present` (relative to root) exists once the user has put them there."""
    root = root or default_root()
    try:
        train, test = open_split(root, True, False), open_split(root, False, False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        if os.path.exists(os.path.join(root, present)):  # damaged files of the user's: a download would hide that
            raise UserError(f"{name}: the files in {os.path.join(root, present)} are damaged or incomplete "
                            f"({str(e).strip()}): replace them with {files.replace('ROOT', root)}") from None
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(30)  # torchvision's urlopen has none: a dropped connection would hang forever
        try:
            train, test = open_split(root, True, True), open_split(root, False, True)
        except Exception as e:  # no internet, or a half-written download
            raise UserError(f"{name}: no data under {root} and download failed ({type(e).__name__}): "
                            f"put {files.replace('ROOT', root)}, or pass --data-root / set DISTILL_DATA") from None
        finally:
            socket.setdefaulttimeout(previous)
    return Raw(*images(train), *images(test), classes=classes, flips=flips)


def images(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) uint8 and (N,) int64 from any of torchvision's in-memory image data sets."""
    x = ds.data if isinstance(ds.data, np.ndarray) else ds.data.numpy()
    if x.ndim == 3:  # MNIST family: (N, H, W)
        x = x[:, None]
    elif x.shape[-1] == 3:  # CIFAR: (N, H, W, 3); SVHN is already (N, 3, H, W)
        x = x.transpose(0, 3, 1, 2)
    y = getattr(ds, "targets", None)
    y = ds.labels if y is None else y
    return torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(np.asarray(y), dtype=torch.int64)
