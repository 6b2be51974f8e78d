"""Data sets as in-memory tensors, and the seeded transfer set the students learn from.

A data set is loaded by name: `distill.datasets.<name>` (hyphens become underscores) is a module with
`load(root) -> Raw`. Everything here is plain PyTorch; the whole data set lives as one tensor on the
chosen device, normalised once, so small students train without DataLoader workers.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

import torch

from distill.errors import UserError


@dataclass(frozen=True)
class Splits:
    """Normalised train / val / test tensors on one device. Val is carved out of train by `seed`, unless
    the data set has its own. The last three fields are only set for speech (see `Raw`)."""

    name: str
    train_x: torch.Tensor  # (N_train, C, H, W) float
    train_y: torch.Tensor  # (N_train,) int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int
    flips: bool
    val_lengths: torch.Tensor | None = None  # (U_val,) int64
    test_lengths: torch.Tensor | None = None  # (U_test,) int64
    fold: torch.Tensor | None = None  # (classes,) int64

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


@dataclass(frozen=True)
class TransferSet:
    """Unlabelled inputs for the teacher to label: the train inputs plus `views` augmented copies.

    `source[i]` is the train index that input i was made from; only the `labels-aug` baseline uses it
    (to give each view its source's label), the mimic students never see labels.
    """

    x: torch.Tensor  # (N_train * (1 + views), C, H, W)
    source: torch.Tensor  # (N_train * (1 + views),) int64


def module_name(name: str) -> str:
    return "distill.datasets." + name.replace("-", "_")


def load(name: str, root: str | None = None, val_size: int = 500, seed: int = 0,
         device: torch.device | str = "cpu", args: dict | None = None) -> Splits:
    """Load data set `name` (its module's `load(root, **args)`), normalise it with train statistics, and
    carve val out of train unless the data set has its own val split (then `val_size` is unused)."""
    try:
        module = importlib.import_module(module_name(name))
    except ModuleNotFoundError as e:
        if e.name != module_name(name):
            raise
        raise UserError(f"unknown data set {name!r}: use one of {', '.join(available())}") from None
    try:
        inspect.signature(module.load).bind(root, **(args or {}))
    except TypeError as e:
        raise UserError(f"bad data set arguments {args} for {name!r}: {e}") from None
    try:
        raw = module.load(root, **(args or {}))
    except UserError:
        raise
    except Exception as e:  # a file the data set's reader chokes on: truncated, corrupted, another format
        detail = " ".join(str(e).split())[:300]  # one line, however the reader words it
        raise UserError(f"data set {name!r} could not be read from {root or 'its default directory'} "
                        f"({type(e).__name__}{': ' + detail if detail else ''}): its files are damaged or not "
                        "what it expects; replace them (or delete them and download them again)") from None
    gen = torch.Generator().manual_seed(seed)
    x, y = raw.train_x, raw.train_y
    order = torch.randperm(len(x), generator=gen)
    if raw.test_x is None:
        test_idx, order = order[: raw.test_size], order[raw.test_size:]
        test_x, test_y = x[test_idx], y[test_idx]
    else:
        test_x, test_y = raw.test_x, raw.test_y
    if raw.val_x is not None:  # the data set's own val split: train keeps every example, in order
        val_x, val_y, train_x, train_y = raw.val_x, raw.val_y, x.to(device, torch.float32), y
    else:
        if not 0 < val_size < len(order):
            raise UserError(f"val_size={val_size} must be between 1 and {len(order) - 1} for {name!r}")
        val_idx, train_idx = order[:val_size], order[val_size:]
        val_x, val_y, train_x, train_y = x[val_idx], y[val_idx], x[train_idx].to(device, torch.float32), y[train_idx]
    # Per-channel statistics of the train split only: val and test never inform preprocessing.
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def norm(t: torch.Tensor) -> torch.Tensor:
        return (t.to(device, torch.float32) - mean) / std

    def opt(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    return Splits(name=name, train_x=(train_x - mean) / std, train_y=train_y.to(device),
                  val_x=norm(val_x), val_y=val_y.to(device), test_x=norm(test_x),
                  test_y=test_y.to(device), classes=raw.classes, flips=raw.flips,
                  val_lengths=opt(raw.val_lengths), test_lengths=opt(raw.test_lengths), fold=opt(raw.fold))


def available() -> list[str]:
    import pkgutil

    import distill.datasets

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(distill.datasets.__path__)
                  if not m.name.startswith("_"))


def augment(x: torch.Tensor, gen: torch.Generator, shift: int, flips: bool) -> torch.Tensor:
    """One random view of each image: a padded crop (shift of up to `shift` pixels) and maybe a flip.

    x: (N, C, H, W). Padding is with zeros of the normalised data (the data mean), per image offsets.
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen).to(x.device)
    # Gather each image's crop with one advanced index: rows (N, H, 1), cols (N, 1, W).
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (N, C, H, W)
    if flips:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.contiguous()


def transfer_set(splits: Splits, views: int, shift: int = 2, seed: int = 0) -> TransferSet:
    """The train inputs followed by `views` seeded augmented copies of them (no labels).

    With `views=0` the transfer set is the train inputs themselves, the same tensor (no copy: TIMIT's
    train frames are gigabytes)."""
    gen = torch.Generator().manual_seed(seed)
    parts = [splits.train_x] + [augment(splits.train_x, gen, shift, splits.flips) for _ in range(views)]
    n = len(splits.train_x)
    source = torch.arange(n, device=splits.train_x.device).repeat(1 + views)
    return TransferSet(x=torch.cat(parts) if views else splits.train_x, source=source)
