"""Frozen dataclass configs, and loading a sweep file (`sweeps/*.py` with `get_config(variant)`)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import UserError
from distill.train import TrainConfig

TARGETS = ("mimic", "labels", "labels-aug", "kd")


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist5k"
    root: str | None = None  # data directory of the torchvision data sets, or the TIMIT copy (default $DISTILL_DATA)
    val_size: int = 500
    views: int = 10  # augmented copies of each train input in the transfer set
    shift: int = 2  # pixels of the padded-crop augmentation
    seed: int = 0  # fixes the val split and the transfer set
    args: Mapping = field(default_factory=dict)  # keywords of the data set's load(root, **args), e.g. timit's context


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


@dataclass(frozen=True)
class StudentConfig:
    """One student trial, fully resolved."""

    hidden: int
    bottleneck: int | None = None
    target: str = "mimic"  # mimic | labels | labels-aug | kd
    teacher: str = "ecnn"  # a teacher name (see TeacherConfig.name); ignored by the label targets
    arch: str = "snn"  # snn | conv_snn
    arch_args: Mapping = field(default_factory=dict)
    temperature: float = 4.0  # kd only
    train: TrainConfig = TrainConfig()


@dataclass(frozen=True)
class SearchConfig:
    """Optuna's ranges within each sweep cell, and ASHA's early stopping."""

    samples: int = 1  # Optuna trials per cell; 1 runs the cell's train config as it is
    lr: tuple[float, float] | None = None  # log-uniform range; None keeps the train config's lr
    momentum: tuple[float, float] | None = None
    weight_decay: tuple[float, float] | None = None  # log-uniform
    grace_epochs: int = 3  # ASHA: epochs before a trial may be stopped
    concurrency: int | None = None  # trials at once; None: as many as the cluster's resources allow


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
    search: SearchConfig = SearchConfig()
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    teacher_concurrency: int | None = None  # members training at once; None: as many as the cluster fits now
    checkpoint_every: int = 1  # epochs between student checkpoints (a retried trial resumes from the last)
    trial_retries: int = 2  # times a trial whose process died is retried from its checkpoint
    # Where results, caches and checkpoints go: a local path, or for multi-node runs a bucket URI (s3://, gs://,
    # distill.io) or a path every node mounts (EFS/NFS).
    storage: str = "~/distill_results"

    def cells(self) -> list[StudentConfig]:
        """Every student of the grid: width x bottleneck x target x teacher x seed (labels ignore teacher)."""
        return [self.cell(h, k, target, teacher, seed)
                for h in self.hidden for k in self.bottleneck for target in self.targets
                for teacher in (self.student_teachers if target in ("mimic", "kd") else ("",))
                for seed in self.seeds]

    def reference(self, cell: StudentConfig) -> str:
        """The teacher a student is compared with: its own, or (label-trained) the sweep's first."""
        return cell.teacher or (self.student_teachers[0] if self.student_teachers else "")

    def cell(self, hidden: int, bottleneck: int | None, target: str, teacher: str, seed: int) -> StudentConfig:
        """The student template with one cell's settings, on its target's train config and seed."""
        train = dataclasses.replace(self.target_train.get(target, self.student.train), seed=seed)
        return dataclasses.replace(self.student, hidden=hidden, bottleneck=bottleneck, target=target,
                                   teacher=teacher, train=train)


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def digest(obj) -> str:
    """A short content hash of anything JSON-serialisable (configs, via to_dict)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_sweep(path: str | Path, variant: str = "default") -> SweepConfig:
    """Import a sweep file and call its `get_config(variant)`; every mistake becomes a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist: pass a file like sweeps/demo.py")
    spec = importlib.util.spec_from_file_location(f"distill_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"sweep file {path} failed to import: {type(e).__name__}: {e}") from None
    sys.modules.pop(spec.name, None)
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"sweep file {path} has no get_config(variant) function: add one returning a SweepConfig")
    try:
        config = module.get_config(variant)
    except Exception as e:
        raise UserError(f"{path}: get_config({variant!r}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(config, SweepConfig):
        raise UserError(f"{path}: get_config({variant!r}) returned {type(config).__name__}, not a SweepConfig")
    validate(config)
    return config


def validate(config: SweepConfig) -> None:
    """Check what can be checked before any training starts."""
    from distill import data, models, teachers

    if importlib.util.find_spec(data.module_name(config.data.name)) is None:
        raise UserError(f"unknown data set {config.data.name!r}: use one of {', '.join(data.available())}")
    for t in config.targets:
        if t not in TARGETS:
            raise UserError(f"unknown target {t!r}: use one of {', '.join(TARGETS)}")
    names = [t.name for t in config.teachers]
    trains = [t.train for t in config.teachers] + [config.student.train, *config.target_train.values()]
    for train in trains:
        if train.optimizer not in ("sgd", "adam"):
            raise UserError(f"unknown optimizer {train.optimizer!r}: use 'sgd' or 'adam'")
        if train.schedule not in ("cosine", "constant"):
            raise UserError(f"unknown schedule {train.schedule!r}: use 'cosine' or 'constant'")
    if not config.cells():
        raise UserError(f"sweep {config.name!r} has no students: hidden, bottleneck, targets and seeds "
                        "must be non-empty")
    for cell in config.cells():
        models.check_sizes(cell.hidden, cell.bottleneck)
        if cell.target in ("mimic", "kd"):
            teachers.parse(cell.teacher, {t.name: t.members for t in config.teachers}, names)
