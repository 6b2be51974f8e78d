"""Synthetic frames of TIMIT's shape and size, for scale tests and benchmarks: there is no speech in them.

`frames` train frames (default 1.1M, about TIMIT's 462 training speakers) in utterances of 150 to 450 frames
(TIMIT's sentences last 1.5 to 4.5 s, 3 s on average), 123 features per frame (3 x 41, as `timit`), each frame
seen with +-`context` neighbours, and the 183 phone-state classes in phone-long runs of 3 to 15 frames, each
run a random phone with its 3 states in thirds (the utterance's transcription: the runs' phones). Dev and test
come in TIMIT's proportions (122k and 58k frames at full size: 11% and 5.2% of train). Every class has a fixed
random mean feature vector and each frame is that mean plus unit noise, so nets learn something; what they learn
says nothing about speech. Deterministic in `seed`; generated in fp16 (what the store keeps), chunk by chunk, so
1.1M frames cost 0.27 GB, not a float copy.
"""

from __future__ import annotations

import torch

from distill import speech
from distill.datasets import Raw
from distill.errors import UserError

SPLITS = {"train": 1.0, "val": 0.111, "test": 0.052}  # TIMIT: 1.12M, 122k and 58k frames


def utterances(frames: int, gen: torch.Generator) -> torch.Tensor:
    """(U,) int64 utterance lengths of 150-450 frames summing to `frames` (the last one takes the remainder)."""
    lengths = torch.randint(150, 451, (frames // 150 + 1,), generator=gen)
    ends = torch.cumsum(lengths, 0)
    cut = int(torch.searchsorted(ends, torch.tensor(frames)))
    out = lengths[: cut + 1].clone()
    out[-1] -= int(ends[cut]) - frames
    return out[out > 0]


def targets(lengths: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Within each utterance, runs of 3-15 frames of one random phone, states in thirds: (F,) 183-class
    targets, (F,) int64 each frame's run within its utterance, (U, L) int64 the runs' phones (-1 padded;
    the last run may be cut short by the utterance's end, and still counts)."""
    out, segments, sequences = [], [], []
    for n in lengths.tolist():
        runs = torch.randint(3, 16, (n // 3 + 1,), generator=gen)
        runs = runs[: int(torch.searchsorted(torch.cumsum(runs, 0), torch.tensor(n))) + 1]
        phones = torch.randint(0, len(speech.PHONES), (len(runs),), generator=gen)
        position = torch.cat([torch.arange(r) * speech.STATES // r for r in runs.tolist()])  # state in its run
        out.append((torch.repeat_interleave(phones, runs) * speech.STATES + position)[:n])
        segments.append(torch.repeat_interleave(torch.arange(len(runs)), runs)[:n])
        sequences.append(phones.tolist())
    return torch.cat(out), torch.cat(segments), speech.pad_sequences(sequences)


def load(root: str | None = None, frames: int = 1_100_000, context: int = 7, seed: int = 0) -> Raw:
    if frames < 1000:
        raise UserError(f"timit-shaped frames={frames} must be at least 1000 (train frames; dev and test are "
                        "11% and 5.2% of it)")
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(speech.CLASSES, 3, speech.MEL + 1, generator=gen).half()  # (183, 3, 41)
    made = {}
    for split, share in SPLITS.items():
        lengths = utterances(max(int(frames * share), 150), gen)
        y, segments, phones = targets(lengths, gen)
        x = torch.empty(len(y), 3, speech.MEL + 1, dtype=torch.float16)
        for part in torch.arange(len(y)).split(1 << 18):  # fp16 noise chunk by chunk: no fp32 copy of the split
            x[part] = means[y[part]] + torch.randn(len(part), 3, speech.MEL + 1, generator=gen).half()
        made[split] = (x, y, lengths, segments, phones)
    fields = {f"{split}_{name}": v for split, values in made.items()
              for name, v in zip(("x", "y", "lengths", "segments", "phones"), values, strict=True)}
    del fields["val_segments"], fields["test_segments"]  # only train frames are realigned
    return Raw(**fields, classes=speech.CLASSES, flips=False, context=context, fold=speech.fold_table())
