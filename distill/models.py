"""Teachers (deep nets) and students (shallow nets), built from explicit arguments.

Builders never pick a device or dtype: build under `with torch.device(...)` (the `meta` device counts
parameters of a 400k-unit student without allocating it) or move the module afterwards.
An architecture's name is the builder's name in this module: `getattr(distill.models, arch)`; any other net is
named by the import path of its factory ('package.module:factory', `imported`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from distill import imports
from distill.errors import UserError


def dropped(rate: float) -> list[nn.Module]:
    """A dropout layer at `rate`, or none at 0 (so that a net without dropout has exactly the layers it had)."""
    if not 0 <= rate < 1:
        raise UserError(f"dropout rate {rate} must be in [0, 1)")
    return [nn.Dropout(rate)] if rate else []


def dnn(shape: Sequence[int], classes: int, hidden: int = 2000, layers: int = 3, dropout: float = 0.0,
        input_dropout: float = 0.0) -> nn.Sequential:
    """The paper's DNN teacher: `layers` fully connected ReLU layers of `hidden` units (3 x 2000), with dropout
    on the input (`input_dropout`) and after each hidden layer (`dropout`), as its teachers were trained."""
    d = math.prod(shape)
    mods: list[nn.Module] = [nn.Flatten(), *dropped(input_dropout)]
    for i in range(layers):
        mods += [nn.Linear(d if i == 0 else hidden, hidden), nn.ReLU(), *dropped(dropout)]
    return nn.Sequential(*mods, nn.Linear(hidden if layers else d, classes))


def conv_pool(channels_in: int, channels: int, kernel: int) -> list[nn.Module]:
    """One conv-ReLU-maxpool stage; 'same' padding, so each stage halves H and W."""
    return [nn.Conv2d(channels_in, channels, kernel, padding=kernel // 2), nn.ReLU(), nn.MaxPool2d(2)]


def cnn(shape: Sequence[int], classes: int, channels: Sequence[int] = (128, 128, 128),
        hidden: Sequence[int] = (1000,), kernel: int = 5, dropout: float = 0.0) -> nn.Sequential:
    """The paper's CNN teacher: conv-pool stages then fully connected ReLU layers (each followed by dropout at
    `dropout`).

    Defaults are its CIFAR-10 teacher 128c-p-128c-p-128c-p-1000fc; small data sets pass small sizes.
    """
    c, h, w = shape
    mods: list[nn.Module] = []
    for ch in channels:
        mods += conv_pool(c, ch, kernel)
        c, h, w = ch, h // 2, w // 2
    mods.append(nn.Flatten())
    d = c * h * w
    for units in hidden:
        mods += [nn.Linear(d, units), nn.ReLU(), *dropped(dropout)]
        d = units
    return nn.Sequential(*mods, nn.Linear(d, classes))


class Ensemble(nn.Module):
    """The paper's ECNN: the output is the mean of the members' logits, (B, C)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def check_sizes(hidden: int, bottleneck: int | None) -> None:
    if hidden < 1 or (bottleneck is not None and bottleneck < 1):
        raise UserError(f"student sizes must be positive (hidden={hidden}, bottleneck={bottleneck})")
    if bottleneck is not None and bottleneck >= hidden:
        raise UserError(f"bottleneck k={bottleneck} must be smaller than hidden H={hidden}: "
                        "a linear bottleneck only saves work when k << H (or use bottleneck=None)")


def head(d: int, classes: int, hidden: int, bottleneck: int | None, dropout: float = 0.0) -> list[nn.Module]:
    """beta f(U V x): optional linear bottleneck V (d -> k, no bias), U (k -> H) + ReLU (+ dropout), beta (H -> C).

    V has no bias because it would be redundant: U (V x + b) + c = U V x + (U b + c).
    """
    check_sizes(hidden, bottleneck)
    mods: list[nn.Module] = []
    if bottleneck is not None:
        mods.append(nn.Linear(d, bottleneck, bias=False))
        d = bottleneck
    return mods + [nn.Linear(d, hidden), nn.ReLU(), *dropped(dropout), nn.Linear(hidden, classes)]


def snn(shape: Sequence[int], classes: int, hidden: int, bottleneck: int | None = None, dropout: float = 0.0,
        input_dropout: float = 0.0) -> nn.Sequential:
    """The paper's SNN(-MIMIC) student: one hidden ReLU layer of `hidden` units, maybe a bottleneck; dropout on
    the input and the hidden layer (the paper's label-trained shallow nets used it)."""
    return nn.Sequential(nn.Flatten(), *dropped(input_dropout),
                         *head(math.prod(shape), classes, hidden, bottleneck, dropout))


def conv_snn(shape: Sequence[int], classes: int, hidden: int, bottleneck: int | None = 1200,
             channels: int = 128, kernel: int = 5, dropout: float = 0.0) -> nn.Sequential:
    """The paper's CIFAR-10 student 128c-p-1200L-30k: one conv-pool stage, bottleneck, wide ReLU layer."""
    c, h, w = shape
    return nn.Sequential(*conv_pool(c, channels, kernel), nn.Flatten(),
                         *head(channels * (h // 2) * (w // 2), classes, hidden, bottleneck, dropout))


def build(arch: str, shape: Sequence[int], classes: int, /, **kwargs) -> nn.Module:
    """Build architecture `arch` (a builder in this module, or an import path: `imported`) with keyword sizes
    from a config."""
    if imports.is_path(arch):
        return imported(arch, shape, classes, kwargs)
    if arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    try:
        return globals()[arch](shape, classes, **kwargs)
    except TypeError as e:
        raise UserError(f"bad arguments for architecture {arch!r}: {e}") from None


ARCHS = ("dnn", "cnn", "snn", "conv_snn")


def imported(arch: str, shape: Sequence[int], classes: int, kwargs: dict) -> nn.Module:
    """A net of the user's own: the factory `arch` names ('package.module:factory', e.g.
    'torchvision.models:resnet18'), called with the config's keywords alone. It is given no input shape or class
    count: those go in arch_args as the factory spells them (num_classes=10). One forward pass on the meta
    device (nothing allocated) checks that it maps inputs (1, *shape) to logits (1, classes)."""
    factory = imports.resolve(arch, "architecture")
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise UserError(f"bad arguments {kwargs} for architecture {arch!r}: {' '.join(str(e).split())}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"architecture {arch!r} returned a {type(model).__name__}, not a torch.nn.Module")
    try:
        out = meta_forward(model, shape)
    except Exception as e:  # the net cannot take this data set's inputs
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"architecture {arch!r} with arch_args {kwargs} fails on inputs of shape {(1, *shape)} "
                        f"({type(e).__name__}: {detail}): give it arch_args (or a factory) for this data set's "
                        "inputs") from None
    if tuple(out.shape) != (1, classes):
        raise UserError(f"architecture {arch!r} with arch_args {kwargs} gives outputs of shape {tuple(out.shape)} "
                        f"for inputs {(1, *shape)}, but the data set has {classes} classes: make it give (N, "
                        f"{classes}) logits (e.g. arch_args num_classes={classes})")
    return model


def meta_forward(model: nn.Module, shape: Sequence[int]) -> torch.Tensor:
    """The model's output for one input (1, *shape), on the meta device, in eval mode (batch-norm layers use
    their running statistics and change nothing): the model's own modules with meta stand-ins for its tensors,
    so nothing is allocated or copied, whatever device the model is on."""
    meta = {n: torch.empty_like(t, device="meta") for n, t in (*model.named_parameters(), *model.named_buffers())}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(model, meta, (torch.empty(1, *shape, device="meta"),))
    finally:
        model.train(was_training)


def snn_params(d: int, hidden: int, classes: int, bottleneck: int | None = None) -> int:
    """Closed-form parameter count of `snn`: D*k + k*H + H + H*C + C (no bias on V), or D*H + H + H*C + C."""
    first = d * hidden if bottleneck is None else d * bottleneck + bottleneck * hidden
    return first + hidden + hidden * classes + classes


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: nn.Module, shape: Sequence[int]) -> tuple[str, int]:
    """(the paper's notation, #hidden units) of a built model, read off its layers in order:
    '784-64L-1024-10' (L: a linear bottleneck, no bias), '16c3-p-32c3-p-128-10' (conv 16 maps of 3x3, pool).

    Hidden units are the ReLU outputs for one input, as the paper counts them (a linear bottleneck adds none);
    they are measured by one forward pass on the meta device, so any module works and nothing is allocated.
    An ensemble is its first member's notation times the number of members, with all members' units."""
    if isinstance(model, Ensemble):
        arch, units = describe(model.members[0], shape)
        return f"{len(model.members)} x {arch}", units * len(model.members)
    parts = [str(math.prod(shape))] if isinstance(next(iter(model.children()), None), nn.Flatten) else []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            parts.append(f"{m.out_channels}c{m.kernel_size[0]}")
        elif isinstance(m, nn.MaxPool2d):
            parts.append("p")
        elif isinstance(m, nn.Linear):
            parts.append(f"{m.out_features}" + ("" if m.bias is not None else "L"))
    units = []
    hooks = [m.register_forward_hook(lambda _, __, out: units.append(out[0].numel()))
             for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        meta_forward(model, shape)  # meta stand-ins for the model's tensors: no copy of a 400k-unit student's weights
    finally:
        for h in hooks:
            h.remove()
    return "-".join(parts), sum(units)


def facts(model: nn.Module, shape: Sequence[int]) -> dict:
    """What a run records of a net: {'architecture': the paper's notation, 'params', 'hidden_units'}."""
    architecture, units = describe(model, shape)
    return {"architecture": architecture, "params": param_count(model), "hidden_units": units}
