"""Data sets as in-memory tensors, and the seeded transfer set the students learn from.

A data set is loaded by name: `distill.datasets.<name>` (hyphens become underscores) is a module with
`load(root) -> Raw`; a user's own loader of that signature is named by its import path ('package.module:load').
Everything here is plain PyTorch; each split lives as one compact tensor on the chosen
device (uint8 images, fp16 features), normalised per batch as `fit` and `infer` index it, so students train
without DataLoader workers and a paper-size split costs its stored bytes, not 4 bytes per input value.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass

import torch

from distill import imports
from distill.datasets import Raw
from distill.errors import UserError


@dataclass(frozen=True)
class Inputs:
    """A split's inputs as stored, and how a batch of model inputs is made from them.

    The store is compact (with `DataConfig.compact`): images stay uint8 and speech features are fp16, a quarter
    and a half of fp32. A batch is gathered by index and normalised on the store's device, in fp32:
    `(stored - mean) / std`, so nothing normalised is ever held for a whole split.

    Speech (`context` > 0) stores each frame once, (F, C, H): the model's input for frame i is frames
    i - context .. i + context, clamped to frame i's utterance (`bounds`), gathered per batch as
    (B, C, H, 2 * context + 1). Stacking them for a whole split would hold every frame 2 * context + 1 times:
    8.3 GB in fp32 for TIMIT's 1.1M train frames, against 0.27 GB stored here.
    """

    stored: torch.Tensor  # (N, C, H, W) images, or (F, C, H) frames when context > 0; uint8, fp16 or fp32
    mean: torch.Tensor  # (1, C, 1, 1) fp32: per-channel statistics of the train split
    std: torch.Tensor  # (1, C, 1, 1) fp32
    context: int = 0
    bounds: torch.Tensor | None = None  # (F, 2) int64: first and last frame of each frame's utterance
    rows: torch.Tensor | None = None  # (N,) int64: a subset of the stored examples (a data-parallel shard)

    def __len__(self) -> int:
        return len(self.stored) if self.rows is None else len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, *the model's input shape), as a tensor of the normalised inputs would have."""
        one = tuple(self.stored.shape[1:]) + ((2 * self.context + 1,) if self.context else ())
        return (len(self), *one)

    @property
    def device(self) -> torch.device:
        return self.stored.device

    @property
    def nbytes(self) -> int:
        extra = [t for t in (self.bounds, self.rows) if t is not None]
        return sum(t.numel() * t.element_size() for t in (self.stored, self.mean, self.std, *extra))

    def __getitem__(self, idx: torch.Tensor | slice) -> torch.Tensor:
        """The normalised fp32 inputs of examples `idx` (an index tensor or a slice): (B, *shape[1:])."""
        if isinstance(idx, slice):
            idx = torch.arange(*idx.indices(len(self)), device=self.device)
        if self.rows is not None:
            idx = self.rows[idx]
        if not self.context:
            # (B, C, H, W): index_select copies whole rows and sub converts as it subtracts (uint8/fp16 - fp32 ->
            # fp32): the same values as indexing, converting, then subtracting, in 0.45 ms instead of 1.26 for 512
            # digits on one CPU thread (advanced indexing copies a 4-D store element by element).
            return torch.sub(self.stored.index_select(0, idx), self.mean).div_(self.std)
        offsets = torch.arange(-self.context, self.context + 1, device=self.device)  # (W,)
        bounds = self.bounds[idx]  # (B, 2)
        frames = (idx[:, None] + offsets).clamp(bounds[:, :1], bounds[:, 1:])  # (B, W)
        # (B, W, C, H) -> (B, C, H, W), converted and laid out contiguously in one copy.
        batch = self.stored[frames].permute(0, 2, 3, 1).to(torch.float32, memory_format=torch.contiguous_format)
        return batch.sub_(self.mean).div_(self.std)

    def take(self, index: torch.Tensor) -> Inputs:
        """The examples `index` (N',) of these, without copying the store."""
        index = index.to(self.device)
        return dataclasses.replace(self, rows=index if self.rows is None else self.rows[index])

    def head(self, n: int) -> Inputs:
        """The first `n` examples of these, without copying the store."""
        if n == len(self):
            return self
        if self.rows is None and not self.context:
            return dataclasses.replace(self, stored=self.stored[:n])  # a view
        return self.take(torch.arange(n, device=self.device))

    def to(self, device: torch.device | str) -> Inputs:
        def move(t):
            return None if t is None else t.to(device)

        return Inputs(move(self.stored), move(self.mean), move(self.std), self.context, move(self.bounds),
                      move(self.rows))


@dataclass(frozen=True)
class Splits:
    """Train / val / test inputs (compact, normalised per batch) and labels on one device. Val is carved out of
    train by `seed`, unless the data set has its own. The fields after `flips` are only set for speech (see `Raw`)."""

    name: str
    train_x: Inputs  # N_train examples of shape (C, H, W)
    train_y: torch.Tensor  # (N_train,) int64
    val_x: Inputs
    val_y: torch.Tensor
    test_x: Inputs
    test_y: torch.Tensor
    classes: int
    flips: bool
    val_lengths: torch.Tensor | None = None  # (U_val,) int64
    test_lengths: torch.Tensor | None = None  # (U_test,) int64
    fold: torch.Tensor | None = None  # (classes,) int64
    # Speech with transcriptions (see `Raw`): what decoding is estimated from (train) and scored against.
    train_lengths: torch.Tensor | None = None  # (U_train,) int64
    train_phones: torch.Tensor | None = None  # (U_train, L) int64, -1 padded
    val_phones: torch.Tensor | None = None
    test_phones: torch.Tensor | None = None
    train_segments: torch.Tensor | None = None  # (N_train,) int64 segment of each frame within its utterance
    notes: tuple[str, ...] = ()  # what the loader found odd about the copy (`Raw.notes`)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor held: the inputs as stored, labels, utterance lengths, transcriptions."""
        tensors = [self.train_y, self.val_y, self.test_y, self.val_lengths, self.test_lengths, self.fold,
                   self.train_lengths, self.train_phones, self.val_phones, self.test_phones, self.train_segments]
        return (self.train_x.nbytes + self.val_x.nbytes + self.test_x.nbytes
                + sum(t.numel() * t.element_size() for t in tensors if t is not None))

    def split(self, name: str) -> tuple[Inputs, torch.Tensor]:
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")


@dataclass(frozen=True)
class TransferSet:
    """Unlabelled inputs for the teacher to label: the train inputs plus `views` augmented copies.

    `source[i]` is the train index that input i was made from; only the `labels-aug` baseline uses it
    (to give each view its source's label), the mimic students never see labels.
    """

    x: Inputs  # N_train * (1 + views) examples
    source: torch.Tensor  # (N_train * (1 + views),) int64
    views: int = 0  # augmented views per train input held
    teacher_views: int = 0  # of those, the views the teachers train on (DataConfig.views; the rest they only label)

    def recipe(self, views: int) -> TransferSet:
        """The transfer set of `views` views per train input: the start of this one (views are drawn in order from
        one seeded generator), without a copy."""
        if views > self.views:
            raise UserError(f"a transfer set of {views} views was asked of one holding {self.views}: list it in "
                            "DataConfig.transfers, so that the teachers label it")
        rows = len(self.source) // (1 + self.views) * (1 + views)
        return TransferSet(self.x.head(rows), self.source[:rows], views, min(self.teacher_views, views))


def module_name(name: str) -> str:
    return "distill.datasets." + name.replace("-", "_")


def load(name: str, root: str | None = None, val_size: int = 500, seed: int = 0,
         device: torch.device | str = "cpu", args: dict | None = None, compact: bool = True) -> Splits:
    """Load data set `name` (its module's `load(root, **args)`), carve val out of train unless the data set has
    its own val split (then `val_size` is unused), and keep every split as `Inputs`: stored compact (uint8
    images, fp16 features) unless `compact` is False (fp32), normalised per batch with train statistics."""
    raw = read(name, root, args)
    if raw.context and (raw.val_x is None or raw.test_x is None):
        raise UserError(f"data set {name!r} gives frames with context but no val or test split of its own: "
                        "frames of one utterance must stay together, so it must provide both")
    gen = torch.Generator().manual_seed(seed)
    x, y = raw.train_x, raw.train_y
    order = torch.randperm(len(x), generator=gen)
    if raw.test_x is None:
        test_idx, order = order[: raw.test_size], order[raw.test_size:]
        test_x, test_y = x[test_idx], y[test_idx]
    else:
        test_x, test_y = raw.test_x, raw.test_y
    if raw.val_x is not None:  # the data set's own val split: train keeps every example, in order
        val_x, val_y, train_x, train_y = raw.val_x, raw.val_y, x, y
    else:
        if not 0 < val_size < len(order):
            raise UserError(f"val_size={val_size} must be between 1 and {len(order) - 1} for {name!r}")
        val_idx, train_idx = order[:val_size], order[val_size:]
        val_x, val_y, train_x, train_y = x[val_idx], y[val_idx], x[train_idx], y[train_idx]
    dtype = storage_dtype(train_x.dtype, compact)
    train_x = train_x.to(device, dtype)
    mean, std = channel_stats(train_x)  # train only: val and test never inform preprocessing

    def inputs(t: torch.Tensor, lengths: torch.Tensor | None) -> Inputs:
        bounds = utterance_bounds(lengths).to(device) if raw.context else None
        return Inputs(t.to(device, dtype), mean, std, raw.context, bounds)

    def opt(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    return Splits(name=name, train_x=inputs(train_x, raw.train_lengths), train_y=train_y.to(device),
                  val_x=inputs(val_x, raw.val_lengths), val_y=val_y.to(device),
                  test_x=inputs(test_x, raw.test_lengths), test_y=test_y.to(device), classes=raw.classes,
                  flips=raw.flips, val_lengths=opt(raw.val_lengths), test_lengths=opt(raw.test_lengths),
                  fold=opt(raw.fold), train_lengths=opt(raw.train_lengths), train_phones=opt(raw.train_phones),
                  val_phones=opt(raw.val_phones), test_phones=opt(raw.test_phones),
                  train_segments=opt(raw.train_segments), notes=raw.notes)


def read(name: str, root: str | None, args: dict | None) -> Raw:
    """The data set's `Raw`: its plug-in module's `load(root, **args)`, or for an import path
    ('package.module:load') the user's own function of that signature. A bad name, bad arguments, damaged files
    or a loader that returns something else are one-line UserErrors."""
    own = imports.is_path(name)
    if own:
        load_raw = imports.resolve(name, "data set")
    else:
        try:
            load_raw = importlib.import_module(module_name(name)).load
        except ModuleNotFoundError as e:
            if e.name != module_name(name):
                raise
            raise UserError(f"unknown data set {name!r}: use one of {', '.join(available())}") from None
    try:
        inspect.signature(load_raw).bind(root, **(args or {}))
    except TypeError as e:
        raise UserError(f"bad data set arguments {args} for {name!r}: {e}") from None
    try:
        raw = load_raw(root, **(args or {}))
    except UserError:
        raise
    except Exception as e:  # a file the data set's reader chokes on: truncated, corrupted, another format
        detail = " ".join(str(e).split())[:300]  # one line, however the reader words it
        if own:
            raise UserError(f"data set {name!r} failed ({type(e).__name__}{': ' + detail if detail else ''}): "
                            "fix that function or its files") from None
        raise UserError(f"data set {name!r} could not be read from {root or 'its default directory'} "
                        f"({type(e).__name__}{': ' + detail if detail else ''}): its files are damaged or not "
                        "what it expects; replace them (or delete them and download them again)") from None
    if not isinstance(raw, Raw):
        raise UserError(f"data set {name!r} returned a {type(raw).__name__}, not a distill.datasets.Raw: return "
                        "Raw(train_x=..., train_y=..., test_x=..., test_y=..., classes=..., flips=...)")
    return raw


def storage_dtype(dtype: torch.dtype, compact: bool) -> torch.dtype:
    """uint8 images stay uint8 and other inputs become fp16 when compact; everything fp32 otherwise."""
    if not compact:
        return torch.float32
    return torch.uint8 if dtype == torch.uint8 else torch.float16


def channel_stats(x: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of stored inputs x (N, C, ...), each (1, C, 1, 1) fp32.

    Accumulated in fp64 over chunks of examples, so that a large uint8 or fp16 split is never converted whole."""
    dims = [0] + list(range(2, x.dim()))
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    squares = torch.zeros_like(total)
    for part in x.split(chunk):
        part = part.double()
        total += part.sum(dims)
        squares += part.pow(2).sum(dims)
    n = x.numel() // x.shape[1]
    mean = total / n
    var = (squares - n * mean.pow(2)) / max(n - 1, 1)
    shape = (1, x.shape[1], 1, 1)
    return mean.float().reshape(shape), var.clamp_min(0).sqrt().float().clamp_min(1e-6).reshape(shape)


def utterance_bounds(lengths: torch.Tensor) -> torch.Tensor:
    """(U,) frames per utterance -> (F, 2) int64: the first and last frame of each frame's utterance."""
    starts = torch.cumsum(lengths, 0) - lengths
    first = torch.repeat_interleave(starts, lengths)
    return torch.stack([first, first + torch.repeat_interleave(lengths, lengths) - 1], 1)


def available() -> list[str]:
    import pkgutil

    import distill.datasets

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(distill.datasets.__path__)
                  if not m.name.startswith("_"))


def pad_value(x: Inputs) -> torch.Tensor:
    """What augmentation pads images with: the train mean, in the store's dtype (rounded for uint8), so that
    padding is (almost exactly) zero once normalised. (1, C, 1, 1)."""
    fill = x.mean.round() if x.stored.dtype == torch.uint8 else x.mean
    return fill.to(x.stored.dtype)


def augment(x: torch.Tensor, gen: torch.Generator, shift: int, flips: bool, fill: torch.Tensor) -> torch.Tensor:
    """One random view of each image: a padded crop (shift of up to `shift` pixels) and maybe a flip.

    x: (N, C, H, W) stored images (any dtype); padding is `fill` (1, C, 1, 1); per-image offsets.
    """
    n, c, h, w = x.shape
    padded = fill.expand(n, c, h + 2 * shift, w + 2 * shift).clone()
    padded[:, :, shift:shift + h, shift:shift + w] = x
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


def transfer_set(splits: Splits, views: int, shift: int = 2, seed: int = 0,
                 teacher_views: int | None = None) -> TransferSet:
    """The train inputs followed by `views` seeded augmented copies of them (no labels), stored as train is; the
    teachers train on the first `teacher_views` of them (default: all).

    With `views=0` the transfer set is the train inputs themselves, the same object (no copy: TIMIT's train
    frames are hundreds of megabytes)."""
    train = splits.train_x
    n = len(train)
    source = torch.arange(n, device=train.device).repeat(1 + views)
    teacher_views = views if teacher_views is None else teacher_views
    if not views:
        return TransferSet(x=train, source=source, views=0, teacher_views=0)
    if train.context:
        raise UserError(f"views={views}: augmented views are crops of images; speech frames ({splits.name}) have "
                        "none: set views=0")
    gen = torch.Generator().manual_seed(seed)
    fill = pad_value(train)
    stored = train.stored if train.rows is None else train.stored[train.rows]
    parts = [stored] + [augment(stored, gen, shift, splits.flips, fill) for _ in range(views)]
    return TransferSet(x=dataclasses.replace(train, stored=torch.cat(parts), rows=None), source=source, views=views,
                       teacher_views=teacher_views)
