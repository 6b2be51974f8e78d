"""CIFAR-10 at paper scale (Ba & Caruana 2014, section 3): an ensemble of 4 CNN teachers
(128c-p-128c-p-128c-p-1000fc) and shallow students 128c-p-1200L-H (one conv-pool layer, a linear bottleneck
of 1200 units, one wide ReLU layer), mimic vs the same students trained on labels.

Command:   python -m distill run sweeps/cifar10.py --data-root DIR      (DIR holds cifar-10-batches-py/)
           python -m distill run sweeps/cifar10.py --variant snn ...    (plain SNNs: no conv layer)
Time:      not measured here (no GPU in the session that wrote it). Work: 4 members x 6 epochs over 550k
           transfer inputs, then 3 widths x 3 targets x 3 seeds = 27 students of up to ~160M parameters;
           plan on several GPU-hours on one GPU, less with one GPU per member and half a GPU per student.
Expected:  the paper's pattern: students improve with width; the mimic student is within a few points of
           its CNN ensemble teacher and clearly ahead of the same net trained on labels (labels-aug closes
           part of that gap: it sees the same augmented inputs).
Smoke:     --variant smoke: a tiny version on whatever cifar-10-batches-py/ --data-root holds (tests).
"""

import dataclasses

from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig

TEACHER = TeacherConfig(
    name="ecnn", arch="cnn", arch_args={"channels": (128, 128, 128), "hidden": (1000,), "kernel": 5}, members=4,
    train=TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=6),
    cpus_per_worker=4, gpus_per_worker=1)
STUDENT = StudentConfig(hidden=30_000, bottleneck=1200, arch="conv_snn", arch_args={"channels": 128, "kernel": 5},
                        train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=256, epochs=20, patience=4))
CE = TrainConfig(optimizer="adam", lr=3e-4, batch_size=256, epochs=20, patience=4)


def get_config(variant: str = "default") -> SweepConfig:
    paper = SweepConfig(
        name="cifar10", data=DataConfig(name="cifar10", val_size=5000, views=10, shift=4), teachers=(TEACHER,),
        hidden=(3_000, 10_000, 30_000), bottleneck=(1200,), targets=("mimic", "labels-aug", "labels"),
        student_teachers=("ecnn",), seeds=(0, 1, 2), student=STUDENT, target_train={"labels": CE, "labels-aug": CE},
        search=SearchConfig(samples=1), cpus_per_trial=4, gpus_per_trial=0.5, checkpoint_every=5)
    if variant == "default":
        return paper
    if variant == "snn":  # plain shallow nets (no conv layer), with and without the bottleneck, wider
        return dataclasses.replace(paper, name="cifar10-snn", hidden=(10_000, 30_000, 100_000),
                                   bottleneck=(None, 1200), student=dataclasses.replace(STUDENT, arch="snn",
                                                                                        arch_args={}))
    if variant == "smoke":
        tiny = TeacherConfig(name="ecnn", arch="cnn", members=2, arch_args={"channels": (4,), "hidden": (8,)},
                             train=TrainConfig(lr=0.05, batch_size=32, epochs=1))
        return dataclasses.replace(
            paper, name="cifar10-smoke", data=DataConfig(name="cifar10", val_size=10, views=1), teachers=(tiny,),
            hidden=(32,), bottleneck=(8,), targets=("mimic", "labels"), seeds=(0,), cpus_per_trial=1,
            gpus_per_trial=0, checkpoint_every=1,
            student=dataclasses.replace(STUDENT, hidden=32, arch_args={"channels": 4, "kernel": 3},
                                        train=TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, epochs=2)),
            target_train={})
    raise ValueError(f"unknown variant {variant!r}: use 'default', 'snn' or 'smoke'")
