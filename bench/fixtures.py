"""Data, teachers and sweeps the benchmarks share: real mnist5k through the project's own loaders, the demo's
9-member CNN teacher with untrained weights (speed only), and one-cell sweeps of the demo's student."""

from __future__ import annotations

import dataclasses

import torch

from distill import experiment, models
from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.data import Splits, TransferSet
from distill.train import TrainConfig

# sweeps/demo.py's teacher and student settings, copied by value so a bench file does not import a sweep file.
TEACHER = TeacherConfig(
    name="ecnn", arch="cnn", arch_args={"channels": (16, 32), "hidden": (128,), "kernel": 3}, members=9,
    train=TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=2),
    cpus_per_worker=1)
L2 = TrainConfig(optimizer="adam", lr=1e-3, momentum=0.9, batch_size=128, epochs=12, patience=4)
DATA = DataConfig(name="mnist5k", views=10)  # 3,500 train digits + 10 views each: 38,500 transfer inputs


def mnist5k(views: int = DATA.views) -> tuple[Splits, TransferSet]:
    """The demo's real data: splits and the seeded transfer set, as `distill run` prepares them."""
    return experiment.prepare(dataclasses.replace(DATA, views=views))


def members(splits: Splits, count: int = TEACHER.members) -> list[torch.nn.Module]:
    """The demo's CNN members, built by the project's builder with each member's seed; untrained (speed only)."""
    return [experiment.build_member(TEACHER, i, splits).eval() for i in range(count)]


def random_logits(splits: Splits, transfer: TransferSet, teacher: str = TEACHER.name) -> dict:
    """What students of `teacher` receive, {(teacher, split): (N, C) fp16} (transfer to learn from, test to
    compare with), of random values: the shapes and dtype of a compact cache's means, for speed only."""
    gen = torch.Generator().manual_seed(0)
    sizes = {"transfer": len(transfer.x), "test": len(splits.test_x)}
    return {(teacher, s): torch.randn(n, splits.classes, generator=gen).half() for s, n in sizes.items()}


def student_sweep(name: str, hidden: int, epochs: int, seeds: tuple[int, ...], cpus_per_trial: float,
                  concurrency: int) -> SweepConfig:
    """A sweep of mimic students of width `hidden` (the demo's L2 settings, `epochs` epochs, no early stop),
    one trial per seed."""
    train = dataclasses.replace(L2, epochs=epochs, patience=0)
    return SweepConfig(name=name, data=DATA, teachers=(TEACHER,), hidden=(hidden,), bottleneck=(None,),
                       targets=("mimic",), student_teachers=(TEACHER.name,), seeds=seeds,
                       student=StudentConfig(hidden=hidden, train=train), cpus_per_trial=cpus_per_trial,
                       search=SearchConfig(samples=1, concurrency=concurrency))


def student_parameters(d: int, hidden: int, classes: int, bottleneck: int | None) -> int:
    """Exact parameter count of an `snn`, checked against the built module on the meta device (no memory)."""
    with torch.device("meta"):
        built = models.param_count(models.snn((d,), classes, hidden, bottleneck))
    assert built == models.snn_params(d, hidden, classes, bottleneck)
    return built


def sweep_students(sweep: SweepConfig, root, splits: Splits, transfer: TransferSet, logits: dict, log=print):
    """The student phase on the given logits (`random_logits`: synthetic ones need no teacher cache): every cell
    through the Ray executor, as `distill sweep` runs them; returns the rows as a DataFrame."""
    import pandas as pd

    from distill import pipeline, ray_sweep

    jobs = pipeline.jobs(sweep, root, keys={t.name: "given" for t in sweep.teachers})
    errored = ray_sweep.Executor(sweep, root, splits, transfer, log).run_students(
        jobs, logits, {j.id: [] for j in jobs}, sweep.search.samples > 1)
    return pd.DataFrame([r for j in jobs for r in pipeline.finished(root, j, sweep.search.samples > 1)] + errored)
