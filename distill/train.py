"""The training loop, inference and metrics, in plain PyTorch.

`fit` is the only loop: teachers and students of every target go through it. Its `report` argument is
the one seam the Ray adapters use (they forward metrics to Ray and save the checkpoint state).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill.errors import UserError

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# report(metrics of one epoch, state): `state()` returns everything `fit(resume=...)` needs.
Report = Callable[[dict, Callable[[], dict]], None]


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "sgd"  # "sgd" (with momentum, the paper's) or "adam"
    lr: float = 0.01
    momentum: float = 0.9  # SGD momentum, or Adam's beta1
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 30
    schedule: str = "cosine"  # "cosine" (to zero at `epochs`) or "constant"
    patience: int = 0  # stop after this many epochs without a better val score; 0: never stop early
    seed: int = 0
    precision: str = "fp32"  # of the training steps: "fp32", "bf16" (autocast, fp32 weights) or "tf32" (CUDA)


# Each precision's float32 matmul setting (torch.set_float32_matmul_precision) for the training steps: "high" lets
# CUDA run fp32 matmuls on tensor cores in TF32 (10-bit mantissa); bf16 autocasts the matmuls themselves.
PRECISIONS = {"fp32": "highest", "bf16": "highest", "tf32": "high"}


# Devices with fused SGD / AdamW kernels in torch 2.14 (meta has none: counting parameters builds no optimizer).
FUSED_DEVICES = ("cpu", "cuda")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the sweep records the trial as failed with this reason."""


@dataclass
class Fit:
    best_epoch: int
    epochs: int
    best_val_error: float
    seconds: float
    history: list[dict]
    resumed_from: int = 0  # the epoch a checkpoint resumed from; 0 for a fresh run
    started_at: float = 0.0  # Unix time this (last) run of `fit` began: when work ran, beside how long


def optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of `config`, with PyTorch's fused kernel where the parameters allow it.

    Fused: one kernel updates every parameter, instead of a chain of foreach ops that each read and write
    all the optimizer state. Wide students have tens of millions of parameters and Adam's update is
    memory-bound: fused AdamW trained 4k- and 16k-unit students 1.56-1.72x faster on this CPU
    (BENCHMARKS.md, figure 1).
    """
    params = list(params)
    fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0, fused=fused)
    if config.optimizer == "adam":
        return torch.optim.AdamW(params, lr=config.lr, betas=(config.momentum, 0.999),
                                 weight_decay=config.weight_decay, fused=fused)
    raise UserError(f"unknown optimizer {config.optimizer!r}: use 'sgd' or 'adam'")


def schedule(config: TrainConfig, steps: int) -> Callable[[int], float]:
    if config.schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    if config.schedule == "constant":
        return lambda step: 1.0
    raise UserError(f"unknown schedule {config.schedule!r}: use 'cosine' or 'constant'")


def check_precision(config: TrainConfig, device: torch.device) -> None:
    """Refuse a precision this device cannot run, in one line (CPUs have no TF32 mode: fp32 or bf16 there)."""
    if config.precision not in PRECISIONS:
        raise UserError(f"unknown precision {config.precision!r}: use {', '.join(map(repr, PRECISIONS))}")
    if config.precision == "tf32" and device.type != "cuda":
        raise UserError(f"precision 'tf32' runs on CUDA only, not on {device.type}: use 'fp32' or 'bf16' there")


@contextlib.contextmanager
def float32_matmul(precision: str):
    """torch's float32 matmul precision set to `precision` ("highest", "high") inside, and put back after."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def rows(target: torch.Tensor | tuple, idx: torch.Tensor):
    """Rows `idx` of a target: logits (N, C) of any float dtype as fp32 (B, C), labels (N,) as they are, or a tuple
    of those (a teacher's logits with the labels, for KD's label term) as a tuple."""
    if isinstance(target, tuple):
        return tuple(rows(t, idx) for t in target)
    t = target.index_select(0, idx)
    return t.float() if t.is_floating_point() else t


def fit(model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss: Loss,
        val: tuple[torch.Tensor, torch.Tensor], config: TrainConfig, report: Report | None = None,
        resume: dict | None = None) -> Fit:
    """Train `model` on (x, target) by `loss`, keep the state with the best val score, load it at the end.

    x: N inputs, indexed per batch (`distill.data.Inputs`, or a tensor); target: (N, C) teacher logits (any float
    dtype: fp16 in a compact store, converted per batch), (N,) labels, or a tuple of both (`rows`);
    val: (val_x, val_y) with labels.
    The val score is (error, cross-entropy): error first, cross-entropy breaks the frequent ties.

    `config.precision` sets the numerics of the training steps: fp32; bf16, the forward under autocast (matmuls
    in bf16, the weights, their gradients and the optimizer's state in fp32, the loss on fp32 logits); tf32 on
    CUDA. Val is scored in fp32, as `infer` scores test.
    """
    check_precision(config, x.device)  # before any work: one line, not a failure minutes in
    started_at = time.time()
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n, per_epoch = len(x), math.ceil(len(x) / config.batch_size)
    opt = optimizer(model.parameters(), config)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(config, config.epochs * per_epoch))
    best = {"score": (math.inf, math.inf), "epoch": 0, "state": copy.deepcopy(model.state_dict())}
    history: list[dict] = []
    start_epoch, elapsed = 0, 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        best, history, elapsed = resume["best"], resume["history"], resume["seconds"]
        start_epoch = resume["epoch"]

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "generator": gen.get_state(), "best": best, "history": history, "seconds": elapsed,
                "epoch": epoch + 1, "config": asdict(config)}

    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        model.train()
        total = torch.zeros((), device=x.device)
        with float32_matmul(PRECISIONS[config.precision]):
            for idx in torch.randperm(n, generator=gen).to(x.device).split(config.batch_size):
                xb, t = x[idx], rows(target, idx)  # (B, *input shape) fp32; (B, C) fp32 or (B,), or both
                with torch.autocast(x.device.type, torch.bfloat16, enabled=config.precision == "bf16"):
                    out = model(xb)  # (B, C), bf16 under autocast
                batch_loss = loss(out.float(), t)
                # Freed, not zeroed: backward allocates every gradient afresh either way (a kept one only gets
                # it added in, one more pass), so keeping them saved no page faults (45k per step at H=16k with
                # glibc's defaults, none with freed memory kept in the heap) and no time (BENCHMARKS.md, figure 1).
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()
                opt.step()
                if config.schedule != "constant":  # a constant rate needs no scheduler call per step
                    sched.step()
                total += batch_loss.detach() * len(idx)
        train_loss = total.item() / n  # one device sync per epoch, not per step
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch + 1} (lr={config.lr}): lower the lr")
        val_logits = infer(model, val[0])
        score = (error(val_logits, val[1]), F.cross_entropy(val_logits, val[1]).item())
        if score < best["score"]:
            best = {"score": score, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_error": score[0], "val_ce": score[1],
               "lr": sched.get_last_lr()[0], "seconds": elapsed}
        history.append(row)
        if report is not None:
            report(row, state)
        if config.patience and epoch + 1 - best["epoch"] >= config.patience:
            break
    model.load_state_dict(best["state"])
    return Fit(best_epoch=best["epoch"], epochs=len(history), best_val_error=best["score"][0],
               seconds=elapsed, history=history, resumed_from=start_epoch, started_at=started_at)


@torch.no_grad()
def infer(model: nn.Module, x, batch_size: int = 1024, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The logits (N, C) of a whole split (`distill.data.Inputs` or a tensor), in eval mode, in batches of
    `batch_size`; each batch's logits in `dtype` if given (fp16 for a compact logit cache), else as computed.

    Images (N, C, H, W) go through in channels-last layout, conv weights too, and the weights go back to
    their layout afterwards: oneDNN's NHWC convolutions ran the demo's CNN teacher about 2x faster on the
    CPU (BENCHMARKS.md, figure 6). A DDP-wrapped model is left as it is: its gradient buckets assume the
    parameters' layout.
    """
    was_training = model.training
    model.eval()
    nhwc = len(x.shape) == 4 and not isinstance(model, nn.parallel.DistributedDataParallel)
    if nhwc:
        model.to(memory_format=torch.channels_last)  # only 4-D parameters (conv weights) change
    layout = torch.channels_last if nhwc else torch.contiguous_format
    outs = []
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size].contiguous(memory_format=layout))
        outs.append(out if dtype is None else out.to(dtype))
    out = torch.cat(outs)
    if nhwc:
        model.to(memory_format=torch.contiguous_format)
    model.train(was_training)
    return out


def error(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Classification error rate: the fraction of argmax predictions that differ from the labels."""
    return (logits.argmax(1) != y).float().mean().item()


def agreement(logits: torch.Tensor, teacher: torch.Tensor) -> float:
    """Top-1 agreement with the teacher: the fraction of inputs where both predict the same class."""
    return (logits.argmax(1) == teacher.argmax(1)).float().mean().item()


def logit_rmse(logits: torch.Tensor, teacher: torch.Tensor) -> float:
    """Root-mean-square difference of the logits, over all inputs and classes."""
    return (logits - teacher).pow(2).mean().sqrt().item()
