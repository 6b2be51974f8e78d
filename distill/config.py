"""Frozen dataclass configs, and loading a sweep file (`sweeps/*.py` with `get_config(variant)`)."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import UserError
from distill.targets import TARGETS, needs_teacher
from distill.train import PRECISIONS, TrainConfig


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist5k"
    root: str | None = None  # data directory of the torchvision data sets, or the TIMIT copy (default $DISTILL_DATA)
    val_size: int = 500
    views: int = 10  # augmented copies of each train input in the transfer set
    shift: int = 2  # pixels of the padded-crop augmentation
    seed: int = 0  # fixes the val split and the transfer set
    args: Mapping = field(default_factory=dict)  # keywords of the data set's load(root, **args), e.g. timit's context
    # Store images as uint8 and speech features and teacher logits as fp16 (converted to fp32 per batch); False
    # keeps everything in fp32 (twice to four times the memory, for checking that compact storage changes nothing).
    compact: bool = True
    # Speech: realign the 3 states of every phone once under the first teacher's member 0 (forced alignment, the
    # paper's targets) and train every net on them; False keeps the data set's equal thirds.
    realign: bool = False
    # Transfer sets the students learn on, as augmented views per train input (a grid axis, e.g. (0, 1, 3, 10)):
    # every student of the transfer inputs runs on each; () is the teachers' own (`views`). Views are drawn in order
    # from one seeded generator, so a smaller set is the start of a larger one: the teachers label the largest once
    # (`harvest_views`) and each student takes its start.
    transfers: tuple[int, ...] = ()

    def student_views(self) -> tuple[int, ...]:
        """The transfer recipes students run on, as views per train input."""
        return self.transfers or (self.views,)

    def harvest_views(self) -> int:
        """The views of the transfer set the teachers label (and the executors hold): the largest recipe."""
        return max((self.views, *self.transfers))


@dataclass(frozen=True)
class TeacherConfig:
    """A teacher: one net, or an ensemble of `members` nets of the same architecture and seeds seed+i."""

    name: str  # how students refer to it: "ecnn" (all members), "ecnn[:4]", "ecnn[2]"
    arch: str = "cnn"
    arch_args: Mapping = field(default_factory=dict)
    members: int = 1
    train: TrainConfig = TrainConfig()
    workers: int = 1  # data-parallel Ray Train workers per member
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 0.0
    # A teacher trained elsewhere, which distill imports instead of training. `weights`: each member's state dict
    # (torch.save(model.state_dict(), f)) for the net `arch` builds, e.g. arch="torchvision.models:resnet18" with
    # arch_args={"num_classes": 10}. `logits`: each member's logits, {"transfer", "val", "test"} -> (N, C) in a
    # torch or .npz file, in the order of experiment.prepare(data)'s inputs. Either: a path or URI (one member), a
    # tuple of one per member, or a pattern with {i} for the member's index ("resnet-{i}.pt").
    weights: str | tuple[str, ...] | None = None
    logits: str | tuple[str, ...] | None = None


@dataclass(frozen=True)
class StudentConfig:
    """One student trial, fully resolved."""

    hidden: int
    bottleneck: int | None = None
    target: str = "mimic"  # a name in distill.targets.TARGETS: mimic, labels, labels-aug, kd, prob-l2
    teacher: str = "ecnn"  # a teacher name (see TeacherConfig.name); ignored by the label targets
    arch: str = "snn"  # snn | conv_snn
    arch_args: Mapping = field(default_factory=dict)
    # The transfer set it learns on: the train inputs and this many augmented views of each (DataConfig.transfers);
    # None for students of the train inputs alone, and for a hand-made config: the whole transfer set it is given.
    transfer_views: int | None = None
    temperature: float = 4.0  # kd only
    kd_weight: float = 1.0  # kd only: the KD term's weight; 1 - kd_weight goes to cross-entropy with the labels
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class SearchConfig:
    """Optuna's ranges within each sweep cell, and ASHA's early stopping."""

    samples: int = 1  # Optuna trials per cell; 1 runs the cell's train config as it is
    lr: tuple[float, float] | None = None  # log-uniform range; None keeps the train config's lr
    momentum: tuple[float, float] | None = None
    weight_decay: tuple[float, float] | None = None  # log-uniform
    dropout: tuple[float, float] | None = None  # uniform range of the hidden dropout rate; label targets only
    temperature: tuple[float, float] | None = None  # log-uniform range of KD's temperature; kd only
    kd_weight: tuple[float, float] | None = None  # uniform range of KD's weight against the labels' loss; kd only
    grace_epochs: int = 3  # ASHA: epochs before a trial may be stopped
    concurrency: int | None = None  # trials at once; None: as many as the cluster's resources allow
    # False: the fair protocol. Each cell's search runs on the sweep's first seed only; the setting it chose by
    # val error is recorded, and every other seed trains once with it (test data chooses nothing).
    per_seed: bool = True


@dataclass(frozen=True)
class SweepConfig:
    name: str
    data: DataConfig = DataConfig()
    teachers: tuple[TeacherConfig, ...] = ()
    hidden: tuple[int, ...] = (1024,)
    bottleneck: tuple[int | None, ...] = (None,)
    targets: tuple[str, ...] = ("mimic", "labels")
    student_teachers: tuple[str, ...] = ("ecnn",)
    seeds: tuple[int, ...] = (0,)
    student: StudentConfig = StudentConfig(hidden=1024)  # the template each cell overrides
    # Targets whose train config differs (e.g. cross-entropy wants another lr than L2 on logits).
    target_train: Mapping[str, TrainConfig] = field(default_factory=dict)
    # Student architectures side by side (e.g. ("snn", "conv_snn")); () is the template's alone. An architecture
    # other than the template's takes its keyword sizes from arch_args (e.g. {"conv_snn": {"channels": 16}}).
    archs: tuple[str, ...] = ()
    arch_args: Mapping[str, Mapping] = field(default_factory=dict)
    search: SearchConfig = SearchConfig()
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    teacher_concurrency: int | None = None  # members training at once; None: as many as the cluster fits now
    checkpoint_every: int = 1  # epochs between student checkpoints (a retried trial resumes from the last)
    trial_retries: int = 2  # times a trial whose process died is retried from its checkpoint
    # Where results, caches and checkpoints go: a local path, or for multi-node runs a bucket URI (s3://, gs://,
    # distill.files) or a path every node mounts (EFS/NFS).
    storage: str = "~/distill_results"

    def cells(self) -> list[StudentConfig]:
        """Every student of the grid: arch x width x bottleneck x target x teacher x transfer set x seed (labels
        ignore teacher; students of the train inputs ignore the transfer set)."""
        return [self.cell(h, k, target, teacher, seed, arch, views)
                for arch in self.archs or (self.student.arch,)
                for h in self.hidden for k in self.bottleneck for target in self.targets
                for teacher in (self.student_teachers if needs_teacher(target) else ("",))
                for views in (self.data.student_views() if TARGETS[target].inputs == "transfer" else (None,))
                for seed in self.seeds]

    def reference(self, cell: StudentConfig) -> str:
        """The teacher a student is compared with: its own, or (label-trained) the sweep's first."""
        return cell.teacher or (self.student_teachers[0] if self.student_teachers else "")

    def cell(self, hidden: int, bottleneck: int | None, target: str, teacher: str, seed: int,
             arch: str | None = None, transfer_views: int | None = None) -> StudentConfig:
        """The student template with one cell's settings, on its target's train config and seed; another
        architecture than the template's takes its arch_args from `arch_args`."""
        train = dataclasses.replace(self.target_train.get(target, self.student.train), seed=seed)
        arch = arch or self.student.arch
        args = self.student.arch_args if arch == self.student.arch else self.arch_args.get(arch, {})
        return dataclasses.replace(self.student, hidden=hidden, bottleneck=bottleneck, target=target,
                                   teacher=teacher, train=train, arch=arch, arch_args=args,
                                   transfer_views=transfer_views)


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def load_sweep(path: str | Path, variant: str = "default") -> SweepConfig:
    """Import a sweep file and call its `get_config(variant)`; every mistake becomes a one-line UserError."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"sweep file {path} is a directory: pass a file in it, like sweeps/demo.py")
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist: pass a file like sweeps/demo.py")
    if path.suffix != ".py":
        raise UserError(f"sweep file {path} is not a Python file: pass a .py file like sweeps/demo.py")
    spec = importlib.util.spec_from_file_location(f"distill_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    _run(path, "failed to import", "while importing", lambda: spec.loader.exec_module(module))
    sys.modules.pop(spec.name, None)
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"sweep file {path} has no get_config(variant) function: add one returning a SweepConfig")
    config = _run(path, f"get_config({variant!r}) failed", f"in get_config({variant!r})",
                  lambda: module.get_config(variant))
    if not isinstance(config, SweepConfig):
        raise UserError(f"{path}: get_config({variant!r}) returned {type(config).__name__}, not a SweepConfig")
    validate(config)
    return config


def _run(path: Path, failed: str, during: str, call):
    """`call()`, with whatever the sweep file raises as one line; only Ctrl-C goes through as it is."""
    try:
        return call()
    except KeyboardInterrupt:
        raise
    except SystemExit as e:  # would end the command silently, or with the sweep file's status
        raise UserError(f"sweep file {path} called sys.exit({e.code!r}) {during}: a sweep file must only define "
                        "get_config(variant) and return a SweepConfig from it") from None
    except BaseException as e:
        detail = " ".join(str(e).split())  # one line, however the message is worded
        raise UserError(f"sweep file {path}: {failed}: {type(e).__name__}{': ' + detail if detail else ''}") from None


# Allowed values of numeric settings, by "Class.field" (None, where a field allows it, is always allowed).
POSITIVE, NON_NEGATIVE, AT_LEAST_1 = (lambda v: v > 0, "> 0"), (lambda v: v >= 0, ">= 0"), (lambda v: v >= 1, ">= 1")
LOG_RANGE = (lambda r: 0 < r[0] <= r[1], "a range (lo, hi) with 0 < lo <= hi (it is searched log-uniformly)")
RANGES = {
    "DataConfig.val_size": AT_LEAST_1, "DataConfig.views": NON_NEGATIVE, "DataConfig.shift": NON_NEGATIVE,
    "DataConfig.transfers": (lambda v: all(x >= 0 for x in v), "views >= 0 each"),
    "TeacherConfig.members": AT_LEAST_1, "TeacherConfig.workers": AT_LEAST_1,
    "TeacherConfig.cpus_per_worker": POSITIVE, "TeacherConfig.gpus_per_worker": NON_NEGATIVE,
    "StudentConfig.temperature": POSITIVE,
    "StudentConfig.kd_weight": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "TrainConfig.lr": POSITIVE, "TrainConfig.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "TrainConfig.weight_decay": NON_NEGATIVE, "TrainConfig.batch_size": AT_LEAST_1, "TrainConfig.epochs": AT_LEAST_1,
    "TrainConfig.patience": NON_NEGATIVE,
    "SearchConfig.samples": AT_LEAST_1, "SearchConfig.lr": LOG_RANGE, "SearchConfig.weight_decay": LOG_RANGE,
    "SearchConfig.momentum": (lambda r: 0 <= r[0] <= r[1] < 1, "a range (lo, hi) with 0 <= lo <= hi < 1"),
    "SearchConfig.dropout": (lambda r: 0 <= r[0] <= r[1] < 1, "a range (lo, hi) with 0 <= lo <= hi < 1"),
    "SearchConfig.temperature": LOG_RANGE,
    "SearchConfig.kd_weight": (lambda r: 0 <= r[0] <= r[1] <= 1, "a range (lo, hi) with 0 <= lo <= hi <= 1"),
    "SearchConfig.grace_epochs": AT_LEAST_1, "SearchConfig.concurrency": AT_LEAST_1,
    "SweepConfig.cpus_per_trial": POSITIVE, "SweepConfig.gpus_per_trial": NON_NEGATIVE,
    "SweepConfig.teacher_concurrency": AT_LEAST_1, "SweepConfig.checkpoint_every": AT_LEAST_1,
    "SweepConfig.trial_retries": NON_NEGATIVE,
}
KINDS = {int: ("an int", "ints"), float: ("a number", "numbers"), str: ("a string", "strings"),
         bool: ("True or False", "bools"), type(None): ("None", "None")}


def _fits(value, hint) -> bool:
    """Whether `value` has the annotated type `hint` (bool is not an int here; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in args)
    if hint in (int, float):
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if args[-1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_fits, value, args))
    if origin is Mapping:
        return isinstance(value, Mapping) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    return isinstance(value, hint)


def _kind(hint, plural: bool = False) -> str:
    """`hint` in words: 'a tuple of ints or None'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_kind(a, plural) for a in args)
    if origin is tuple:
        return f"a tuple of {_kind(args[0], True)}" if args[-1] is Ellipsis else f"a tuple of {len(args)} numbers"
    if origin is Mapping or hint is Mapping:
        return "a dict" + (f" of {_kind(args[0], True)} to {_kind(args[1], True)}" if args else "")
    return KINDS.get(hint, (f"a {hint.__name__}", f"{hint.__name__}s"))[plural]


def _show(value) -> str:
    """'the string '64'': a value and its type, short enough for one line."""
    text = repr(value)
    kind = {str: "string", bool: "bool"}.get(type(value), type(value).__name__)
    return f"the {kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _fix(value, hint, name: str) -> str:
    """': write hidden=(64,)' where a string or a single value stands for what `hint` wants, else ''."""
    try:
        value = ast.literal_eval(value) if isinstance(value, str) else value
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    for fixed in (value, (value,), tuple(value) if isinstance(value, list) else None):
        if fixed is not None and _fits(fixed, hint):
            return f": write {name}={fixed!r}"
    return ""


def _walk(obj, where: str) -> None:
    """The type, finiteness and range of every field of the dataclass `obj`, and of the dataclasses in it."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint, at = getattr(obj, f.name), hints[f.name], f"{where}.{f.name}"
        if not _fits(value, hint):
            raise UserError(f"{at} must be {_kind(hint)}, got {_show(value)}{_fix(value, hint, f.name)}")
        if any(isinstance(v, float) and not math.isfinite(v) for v in (value if isinstance(value, tuple) else [value])):
            raise UserError(f"{at} must be finite, got {value!r}")
        ok, allowed = RANGES.get(f"{type(obj).__name__}.{f.name}", (None, ""))
        if ok is not None and value is not None and not ok(value):
            raise UserError(f"{at} must be {allowed}, got {value!r}")
        items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, tuple) else ()
        for key, item in [(None, value), *items]:
            if dataclasses.is_dataclass(item):
                _walk(item, at if key is None else f"{at}[{key!r}]")


def _check_name(what: str, name: str, allowed: str = "A-Za-z0-9._-") -> None:
    """A name that becomes a folder must be one safe path component on every file system and bucket."""
    if not re.fullmatch(f"[{allowed}]{{1,100}}", name) or name in (".", ".."):
        shown = repr(name) if len(name) <= 100 else f"of {len(name)} characters"
        raise UserError(f"{what} {shown} must be 1 to 100 characters from {allowed}, not '.' or '..': "
                        "it names a folder")


def _once(what: str, values, fix: str) -> None:
    seen = []  # a list: grid values need not be hashable to be compared
    for v in values:
        if v in seen:
            raise UserError(f"{what} has {v!r} twice: {fix}")
        seen.append(v)


def _check_teacher(t: TeacherConfig) -> None:
    """A teacher's architecture exists and a teacher made elsewhere names one file per member."""
    from distill import imports, models, teachers

    where = f"TeacherConfig(name={t.name!r})"
    if t.weights is not None and t.logits is not None:
        raise UserError(f"{where} gives both weights and logits: give one (logits need no net)")
    for what in ("weights", "logits"):
        if getattr(t, what) is not None:
            teachers.member_files(getattr(t, what), t.members, f"{where}.{what}")
    if t.logits is not None:
        return  # no net to build
    if imports.is_path(t.arch):
        imports.resolve(t.arch, f"{where}: architecture")
    elif t.arch not in models.ARCHS:
        raise UserError(f"{where}: unknown architecture {t.arch!r}: use one of {', '.join(models.ARCHS)}, or "
                        "'package.module:factory' for a net of your own")


def validate(config: SweepConfig) -> None:
    """Check what can be checked before any training starts."""
    from distill import data, imports, models, teachers

    _walk(config, "SweepConfig")
    _check_name("sweep name", config.name)
    for t in config.teachers:  # teachers.NAME: no '.' (students name members as ecnn[2], ecnn[:4])
        _check_name("teacher name", t.name, "A-Za-z0-9_-")
    _once("SweepConfig.teachers", [t.name for t in config.teachers], "give each teacher its own name")
    for axis in ("archs", "hidden", "bottleneck", "targets", "student_teachers", "seeds"):
        _once(f"SweepConfig.{axis}", getattr(config, axis),
              "list each value once (a repeat trains the same students again)")
    _once("SweepConfig.data.transfers", config.data.transfers,
          "list each value once (a repeat trains the same students again)")
    if imports.is_path(config.data.name):  # the user's own loader, 'package.module:load'
        imports.resolve(config.data.name, "data set")
    elif importlib.util.find_spec(data.module_name(config.data.name)) is None:
        raise UserError(f"unknown data set {config.data.name!r}: use one of {', '.join(data.available())}, "
                        "or 'package.module:load' for a load function of your own")
    for t in config.teachers:
        _check_teacher(t)
    for t in config.targets:
        if t not in TARGETS:
            raise UserError(f"unknown target {t!r}: use one of {', '.join(TARGETS)}")
    for t in config.target_train:
        if t not in TARGETS:
            raise UserError(f"unknown target {t!r} in target_train: use one of {', '.join(TARGETS)}")
    names = [t.name for t in config.teachers]
    trains = [t.train for t in config.teachers] + [config.student.train, *config.target_train.values()]
    for train in trains:
        if train.optimizer not in ("sgd", "adam"):
            raise UserError(f"unknown optimizer {train.optimizer!r}: use 'sgd' or 'adam'")
        if train.schedule not in ("cosine", "constant"):
            raise UserError(f"unknown schedule {train.schedule!r}: use 'cosine' or 'constant'")
        if train.precision not in PRECISIONS:
            raise UserError(f"unknown precision {train.precision!r}: use {', '.join(map(repr, PRECISIONS))}")
    if not config.cells():
        raise UserError(f"sweep {config.name!r} has no students: hidden, bottleneck, targets and seeds "
                        "must be non-empty")
    for cell in config.cells():
        models.check_sizes(cell.hidden, cell.bottleneck)
        if needs_teacher(cell.target):
            teachers.parse(cell.teacher, {t.name: t.members for t in config.teachers}, names)
