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
           20.0% at 400k; SNNs on labels 23.0-23.6%, no better when wider).
PER:       test_per / val_per are decoded, as the paper's are: each net's 183 state posteriors become scaled
           likelihoods (divided by the train state priors), searched by Viterbi over 61 three-state
           left-to-right phone HMMs (transitions from the train targets) and a smoothed phone bigram (the train
           .PHN transcriptions only); the LM weight and insertion penalty are chosen on the dev set alone
           (decode_lm_weight, decode_insertion_penalty in every row); hypotheses and the .PHN transcriptions are
           folded 61 -> 39 with q deleted and scored by edit distance (Kaldi's scoring). Teachers get the same
           in the cache manifest (each member, first-n sub-ensembles, the ensemble). Scoring one model
           (16 grid points on dev, then test) took 73 s on one thread of 2 busy cores (timit-shaped frames
           of TIMIT's size); the 192 core-test utterances alone decode in 1-3 s. test_collapse_per is the
           old figure (frame argmaxes collapsed, no decoding: isolated frame errors become insertions, 5% of
           frames flipped on the synthesized corpus took it from 0 to 53%, decoded PER from 10.9 to 11.4%);
           test_fer is the folded frame error, test_error the 183-state frame error.
Differs:   the paper's targets come from a forced alignment; here one realignment pass (DataConfig.realign,
           on in this default, off in the smoke): member 0 of the first teacher (the DNN, as `dnn-aligner`)
           trains on equal thirds of each .PHN segment, its train-frame logits realign the 3 states inside every
           segment by Viterbi (every phone boundary kept), and every member and student trains on that
           alignment (kept under alignment/, named in the run record with the share of frames it moved). The
           paper iterates alignment with its GMM-HMM system; one pass here. The decoder is a phone bigram over
           monophone HMMs without lattice rescoring, on a 4 x 4 grid of LM weights and penalties; a decoded
           phone lasts at least 3 frames, so the .PHN's shorter phones count as deletions
           (a perfect frame classifier scores 11-17% on the synthesized corpus, where 15-21% of the phones
           are shorter). Expect absolute numbers near, not equal to, the paper's; compare the ordering.
Rows:      test_per, val_per, test_collapse_per, test_fer beside test_error; a copy whose speaker or
           utterance counts differ from 462 / 50 / 24 speakers and 3,696 / 400 / 192 utterances loads with a
           warning in the log (scores not comparable), an empty split is an error.
Smoke:     --variant smoke runs the whole pipeline with tiny nets (2 CNN members, no DNN) on any TIMIT-format
           folder, e.g. the synthesized corpus the tests build (tests/timit_corpus.py): about a minute on 2
           idle cores (2.5 minutes measured on 2 cores shared with other jobs). It reports decoded PER for
           each member, the ensemble and each student: measured under --local on that corpus, ensemble
           14.4%, label student 13.9%, mimic student 31.7% (collapse PER 44%, 72%, 137%).
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
        name="timit", data=dataclasses.replace(DATA, realign=True), teachers=(DNN, ECNN),
        hidden=(8_000, 50_000, 160_000, 400_000), bottleneck=(250,), targets=("mimic", "labels"),
        student_teachers=("ecnn",), seeds=(0,),
        student=StudentConfig(hidden=8_000, bottleneck=250, arch="snn", train=MIMIC), target_train={"labels": CE},
        search=SearchConfig(samples=1), cpus_per_trial=4, gpus_per_trial=1, checkpoint_every=1)
    if variant == "default":
        return paper
    if variant == "smoke":
        # 6 epochs: about 27% frame error for the 2-member ensemble on the synthesized corpus (3 epochs: 44%).
        teach = TrainConfig(optimizer="adam", lr=3e-3, batch_size=64, epochs=6)
        learn = TrainConfig(optimizer="adam", lr=3e-3, batch_size=64, epochs=10)
        return dataclasses.replace(
            paper, name="timit-smoke", data=DATA,  # the thirds: no realignment pass
            # Only the ensemble (2 members): each member is a Ray Train run, most of a smoke run's time.
            teachers=(dataclasses.replace(ECNN, arch_args={"channels": (8,), "hidden": (64,), "kernel": 3}, members=2,
                                          train=teach, cpus_per_worker=1, gpus_per_worker=0),),
            hidden=(128,), bottleneck=(16,), student=StudentConfig(hidden=128, bottleneck=16, train=learn),
            target_train={}, cpus_per_trial=1, gpus_per_trial=0)
    raise ValueError(f"unknown variant {variant!r}: use 'default' or 'smoke'")
