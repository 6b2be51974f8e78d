"""TIMIT phone recognition at paper scale (Ba & Caruana 2014, section 2): a DNN (3 x 2000) and an ensemble
of 9 CNNs as teachers; SNN-MIMIC students with a 250-unit linear bottleneck and 8k, 50k, 160k and 400k
hidden units mimic the ensemble's logits; SNNs of the same shapes trained on the 183 phone-state labels.

Command:   python -m distill run sweeps/timit.py --data-root DIR     (DIR holds your TIMIT's TRAIN/ and TEST/)
           python -m distill run sweeps/timit.py --variant smoke --data-root DIR   (tiny nets; the tests)
Data:      462 training speakers (about 1.1M frames), the 50-speaker dev set for early stopping, the
           24-speaker core test set; 1,845 inputs per frame (123 features x 15 frames), 183 targets.
           The features (about 35 s of extraction: 43k frames/s on one core here) are cached under
           $DISTILL_CACHE/timit.
           Memory: frames are stored once each in fp16 (246 bytes; 0.3 GB for train, dev and test) and get
           their +-7 context per batch; a teacher's mean logits are 0.4 GB (fp16); the driver and the object
           store hold one copy of each. A GPU student trial holds about 0.75 GB of data and logits on its GPU
           plus its model state (H=400k, k=250: 174M parameters, 3.5 GB with Adam). BENCHMARKS.md, "Paper
           scale", has the measured figures (synthetic frames of this size, bench/scale.py).
Time:      not measured here (no GPU in the session that wrote it). Work: 10 teacher members x 20 epochs
           over 1.1M frames, then 4 widths x 2 targets = 8 students of up to 174M parameters (H=400k);
           plan on a GPU-day on one GPU, much less with a GPU per member and per student.
Expected:  the ordering of the paper's Table 1 (core-test PER; recalled, not measured here, check the
           paper: DNN about 21.9%, CNN 19.5%, ensemble of 9 CNNs 18.5%; SNN-MIMIC 21.6% at 8k down to
           20.0% at 400k; SNNs on labels 23.0-23.6%, no better when wider). The paper decodes with an HMM;
           our PER collapses frame predictions without decoding, so expect higher absolute numbers.
           Rows carry test_per / val_per (phone error rate, 39 folded phones) and test_fer (folded frame
           error) beside test_error (183-state frame error).
Smoke:     --variant smoke runs the whole pipeline with tiny nets (2 CNN members, no DNN) on any TIMIT-format
           folder, e.g. the synthesized corpus the tests build (tests/timit_corpus.py): about a minute on 2
           idle cores (2.5 minutes measured on 2 cores shared with other jobs).
"""

import dataclasses

from distill.config import DataConfig, SearchConfig, StudentConfig, SweepConfig, TeacherConfig
from distill.train import TrainConfig

DATA = DataConfig(name="timit", views=0, args={"context": 7})  # views=0: the transfer set is the train frames
TEACHER_TRAIN = TrainConfig(optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-5, batch_size=256, epochs=20,
                            patience=4)
DNN = TeacherConfig(name="dnn", arch="dnn", arch_args={"hidden": 2000, "layers": 3}, members=1, train=TEACHER_TRAIN,
                    cpus_per_worker=4, gpus_per_worker=1)
# One conv-pool stage (128 maps, 5x5 over frequency x time) then three 2,000-unit layers; `ecnn[0]` is the
# single CNN teacher, `ecnn` the ensemble of all 9. Students mimic the ensemble; add "dnn" or "ecnn[0]" to
# student_teachers to mimic a single net too (the manifest reports every member's and the ensemble's PER).
ECNN = TeacherConfig(name="ecnn", arch="cnn", arch_args={"channels": (128,), "hidden": (2000, 2000, 2000),
                                                          "kernel": 5}, members=9, train=TEACHER_TRAIN,
                     cpus_per_worker=4, gpus_per_worker=1)
# Adam wants another rate for L2 on logits than for cross-entropy (../shared/README.md); not tuned here.
MIMIC = TrainConfig(optimizer="adam", lr=1e-3, batch_size=256, epochs=20, patience=4)
CE = TrainConfig(optimizer="adam", lr=3e-4, batch_size=256, epochs=20, patience=4)


def get_config(variant: str = "default") -> SweepConfig:
    paper = SweepConfig(
        name="timit", data=DATA, teachers=(DNN, ECNN), hidden=(8_000, 50_000, 160_000, 400_000),
        bottleneck=(250,), targets=("mimic", "labels"), student_teachers=("ecnn",), seeds=(0,),
        student=StudentConfig(hidden=8_000, bottleneck=250, arch="snn", train=MIMIC), target_train={"labels": CE},
        search=SearchConfig(samples=1), cpus_per_trial=4, gpus_per_trial=1, checkpoint_every=1)
    if variant == "default":
        return paper
    if variant == "smoke":
        # 6 epochs: about 27% frame error for the 2-member ensemble on the synthesized corpus (3 epochs: 44%).
        teach = TrainConfig(optimizer="adam", lr=3e-3, batch_size=64, epochs=6)
        learn = TrainConfig(optimizer="adam", lr=3e-3, batch_size=64, epochs=10)
        return dataclasses.replace(
            paper, name="timit-smoke",
            # Only the ensemble (2 members): each member is a Ray Train run, most of a smoke run's time.
            teachers=(dataclasses.replace(ECNN, arch_args={"channels": (8,), "hidden": (64,), "kernel": 3}, members=2,
                                          train=teach, cpus_per_worker=1, gpus_per_worker=0),),
            hidden=(128,), bottleneck=(16,), student=StudentConfig(hidden=128, bottleneck=16, train=learn),
            target_train={}, cpus_per_trial=1, gpus_per_trial=0)
    raise ValueError(f"unknown variant {variant!r}: use 'default' or 'smoke'")
