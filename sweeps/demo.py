"""The embedded default: mimic vs label students on mnist5k (5,000 real MNIST digits), one CPU machine.

Command:   python -m distill run sweeps/demo.py            (add --variant smoke for the test-sized run)
Time:      about 10.5 minutes on 2 idle CPU cores: teachers 6 (mostly Ray start-up per member), students 4;
           measured 14 min 10 s on 2026-12-01 (teachers 8.2 min, students 5.5; why slower: not yet found).
Expected:  9 CNN members at 1.3-2.3% test error, their ensemble at 1.0-1.2%; mean over 3 seeds, at every
           size mimic below labels-aug below labels, e.g. H=1024: 2.1% / 2.9% / 7.0%; with a k=64 bottleneck
           2.6% / 4.2% / 9.1% (examples/demo/report.md). Test sets of 1,000: +-0.3 points is noise.
"""

from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig

# A small CNN (16c3-p-32c3-p-128fc), SGD: 2 epochs over the 11x transfer set = 22 passes over the digits.
TEACHER = TeacherConfig(
    name="ecnn", arch="cnn", arch_args={"channels": (16, 32), "hidden": (128,), "kernel": 3}, members=9,
    train=TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128, epochs=2),
    cpus_per_worker=1)
# Adam wants a different rate for L2 on logits than for cross-entropy (../shared/README.md).
L2 = TrainConfig(optimizer="adam", lr=1e-3, momentum=0.9, batch_size=128, epochs=12, patience=4)
CE = TrainConfig(optimizer="adam", lr=3e-4, momentum=0.9, batch_size=128, epochs=12, patience=4)


def get_config(variant: str = "default") -> SweepConfig:
    demo = SweepConfig(
        name="demo", data=DataConfig(name="mnist5k", views=10), teachers=(TEACHER,),
        hidden=(256, 1024), bottleneck=(None, 64), targets=("mimic", "labels-aug", "labels"),
        student_teachers=("ecnn",), seeds=(0, 1, 2), student=StudentConfig(hidden=1024, train=L2),
        target_train={"labels": CE, "labels-aug": CE}, search=SearchConfig(samples=1))
    if variant == "default":
        return demo
    if variant == "smoke":
        return SweepConfig(
            name="demo-smoke", data=DataConfig(name="digits", val_size=200, views=1),
            teachers=(TeacherConfig(name="ecnn", arch="cnn", members=2,
                                    arch_args={"channels": (8,), "hidden": (32,), "kernel": 3},
                                    train=TrainConfig(lr=0.05, batch_size=64, epochs=3)),),
            hidden=(64,), bottleneck=(None, 16), targets=("mimic", "labels"), seeds=(0,),
            student=StudentConfig(hidden=64, train=TrainConfig(optimizer="adam", lr=3e-3, epochs=3)))
    raise ValueError(f"unknown variant {variant!r}: use 'default' or 'smoke'")
