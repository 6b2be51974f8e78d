"""The data-set plug-in contract: one module per data set, named after it (`fashion_mnist` is `fashion-mnist`).

Each module has `load(root: str | None, **args) -> Raw`, `args` being the sweep's data-set arguments; files
the user provides live under `root`, by default under `default_root()`. Plug-ins import from distill only
this package, `distill.errors`, `distill.files` and `distill.speech` (tests/test_layers.py checks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Raw:
    """What a data-set module returns: uint8/float images NCHW (or speech frames, see `context`) and int64
    labels, before any split.

    `test_x` is None when the data set has no official test split (then one is carved out); `val_x` is
    None when it has no official val split (then val is carved out of train). Speech data sets also give
    the frames per utterance of val and test, and the map from their classes to scored labels (PER).
    """

    train_x: torch.Tensor  # (N, C, H, W)
    train_y: torch.Tensor  # (N,)
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    classes: int
    flips: bool  # horizontal flips keep the label (photos yes, digits no)
    test_size: int = 0  # carved out of train when test_x is None
    val_x: torch.Tensor | None = None  # an official val split (TIMIT's dev speakers); None: carve one out
    val_y: torch.Tensor | None = None
    val_lengths: torch.Tensor | None = None  # (U,) int64 frames per utterance, in order; None for images
    test_lengths: torch.Tensor | None = None
    train_lengths: torch.Tensor | None = None
    # Speech: x holds each frame once (F, C, H), and the model sees it with `context` frames each side, gathered
    # per batch within its utterance (distill.data.Inputs); then every split must give its lengths.
    context: int = 0
    fold: torch.Tensor | None = None  # (classes,) int64 class -> scored label (-1: not scored); None for images
    # Speech, for decoding (distill.decode): each utterance's transcription, (U, L) int64 phone indices padded
    # with -1 (speech.pad_sequences), read from the transcription itself, not from frames; and for forced
    # alignment, (F,) int64 the index of each train frame's segment within its utterance, which keeps apart
    # two segments of one phone side by side. None: the data set has no transcriptions (no decoded PER).
    train_phones: torch.Tensor | None = None
    val_phones: torch.Tensor | None = None
    test_phones: torch.Tensor | None = None
    train_segments: torch.Tensor | None = None
    # What the loader found odd about this copy (e.g. not TIMIT's standard sizes), one line each: logged as a
    # warning and kept in the run record.
    notes: tuple[str, ...] = ()


def default_root() -> str:
    return os.environ.get("DISTILL_DATA", os.path.expanduser("~/.cache/distill/data"))
