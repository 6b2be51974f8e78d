"""Speech logic for TIMIT in plain PyTorch: phone tables, features, frame targets, phone sequences, PER.

Frames: 25 ms Hamming windows every 10 ms (400 and 160 samples at 16 kHz), Kaldi's framing
(`snip_edges`): frame t covers samples [160 t, 160 t + 400), so an utterance of S samples has
1 + (S - 400) // 160 frames and frame t's centre is sample 160 t + 200.

Targets: 61 phones x 3 states = 183 classes, class = 3 * phone + state. The reference phone of a frame
is the PHN segment that covers the frame's centre; its state is the third of that segment the centre
falls in (unless an alignment gives the states).

Scoring folds the 61 phones to the standard 39 (Lee & Hon 1989, as in Kaldi's phones.60-48-39.map):
closures, pau, epi and h# become `sil`; the glottal stop `q` is a training target but is ignored when
scoring (its frames count in no frame error, and it is dropped from every phone sequence before PER).
"""

from __future__ import annotations

import torch
import torchaudio

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # samples: 25 ms
FRAME_SHIFT = 160  # samples: 10 ms
MEL = 40
STATES = 3
DELTA_WINDOW = 5  # frames of the delta regression (+-2), torchaudio's and HTK's default

# The 61 TIMIT phone labels (TIMIT's phoncode.doc), in a fixed order: phone index = position here.
PHONES = (
    "aa", "ae", "ah", "ao", "aw", "ax", "ax-h", "axr", "ay", "b", "bcl", "ch", "d", "dcl", "dh", "dx", "eh",
    "el", "em", "en", "eng", "epi", "er", "ey", "f", "g", "gcl", "h#", "hh", "hv", "ih", "ix", "iy", "jh", "k",
    "kcl", "l", "m", "n", "ng", "nx", "ow", "oy", "p", "pau", "pcl", "q", "r", "s", "sh", "t", "tcl", "th",
    "uh", "uw", "ux", "v", "w", "y", "z", "zh")
CLASSES = len(PHONES) * STATES  # 183

# 61 -> 39 (Lee & Hon 1989); phones not listed fold to themselves; q folds to nothing (None).
FOLDS = {"ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m",
         "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw", "pcl": "sil", "tcl": "sil", "kcl": "sil",
         "bcl": "sil", "dcl": "sil", "gcl": "sil", "h#": "sil", "pau": "sil", "epi": "sil", "q": None}
PHONES39 = tuple(sorted({FOLDS.get(p, p) for p in PHONES} - {None}))  # 39 labels


def fold(phone: str) -> str | None:
    """The 39-phone label of a TIMIT phone, or None for `q` (not scored)."""
    return FOLDS.get(phone, phone)


def fold_table() -> torch.Tensor:
    """(183,) int64: class 3 * phone + state -> index into PHONES39, -1 for the states of `q`."""
    ids = [PHONES39.index(fold(p)) if fold(p) is not None else -1 for p in PHONES]
    return torch.tensor(ids, dtype=torch.int64).repeat_interleave(STATES)


def features(wave: torch.Tensor, mel: int = MEL) -> torch.Tensor:
    """Log mel filterbanks plus energy, with deltas and delta-deltas: (S,) samples -> (T, 3, mel + 1).

    `wave` holds 16 kHz samples on the 16-bit scale (as Kaldi reads them). Channel 0 is static, 1 delta,
    2 delta-delta; along the last axis, row 0 is the log energy and rows 1..mel the log mel bands, low to
    high (Kaldi's order). Deltas are computed within the utterance, edges replicated.
    """
    static = torchaudio.compliance.kaldi.fbank(
        wave.float()[None], sample_frequency=SAMPLE_RATE, frame_length=1000 * FRAME_LENGTH / SAMPLE_RATE,
        frame_shift=1000 * FRAME_SHIFT / SAMPLE_RATE, num_mel_bins=mel, use_energy=True, dither=0.0,
        window_type="hamming")  # (T, mel + 1), energy first
    delta = torchaudio.functional.compute_deltas(static.T, win_length=DELTA_WINDOW)  # (mel + 1, T)
    delta2 = torchaudio.functional.compute_deltas(delta, win_length=DELTA_WINDOW)
    return torch.stack([static.T, delta, delta2]).permute(2, 0, 1).contiguous()  # (T, 3, mel + 1)


def frames(samples: int) -> int:
    """How many frames an utterance of `samples` samples has (Kaldi's snip_edges framing)."""
    return 0 if samples < FRAME_LENGTH else 1 + (samples - FRAME_LENGTH) // FRAME_SHIFT


def frame_targets(segments: torch.Tensor, n_frames: int, states: torch.Tensor | None = None) -> torch.Tensor:
    """The 183-class target of every frame: (T,) int64, class = 3 * phone + state.

    segments: (P, 3) int64 rows (begin sample, end sample, phone index), sorted and contiguous as in a
    .PHN file. A frame takes the segment that covers its centre sample (begin <= centre < end; centres
    past the last segment take the last). Its state is the third of the segment the centre lies in,
    unless `states` (T,) gives them (e.g. from a forced alignment).
    """
    centre = torch.arange(n_frames) * FRAME_SHIFT + FRAME_LENGTH // 2  # (T,)
    begin, end, phone = segments[frame_segments(segments, n_frames)].unbind(1)  # each (T,)
    if states is None:
        # floor(3 * (centre - begin) / (end - begin)), in integers: exact thirds, no rounding surprises.
        states = ((centre - begin).clamp_min(0) * STATES // (end - begin).clamp_min(1)).clamp(0, STATES - 1)
    return phone * STATES + states


def frame_segments(segments: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(T,) int64 index of the .PHN segment (a row of `segments`, see `frame_targets`) under each frame's centre.
    Two segments of one phone side by side stay apart here, which frame targets alone cannot tell."""
    centre = torch.arange(n_frames) * FRAME_SHIFT + FRAME_LENGTH // 2  # (T,)
    return torch.searchsorted(segments[:, 1].contiguous(), centre, right=True).clamp_max(len(segments) - 1)


def pad_sequences(sequences: list[list[int]]) -> torch.Tensor:
    """Phone sequences of different lengths as one (U, L) int64 tensor, -1 after each sequence's end (a
    tensor, not a list, so that it travels through the object store like every other field of a split)."""
    out = torch.full((len(sequences), max(map(len, sequences), default=0)), -1, dtype=torch.int64)
    for u, seq in enumerate(sequences):
        out[u, :len(seq)] = torch.tensor(seq, dtype=torch.int64)
    return out


def unpad_sequences(padded: torch.Tensor) -> list[list[int]]:
    """(U, L) from `pad_sequences` -> the U phone sequences."""
    return [[p for p in row if p >= 0] for row in padded.tolist()]


def phone_sequence(classes: torch.Tensor, fold_ids: torch.Tensor) -> list[int]:
    """Frame classes (T,) -> the folded phone sequence: fold each frame, drop `q`, merge repeats."""
    ids = fold_ids[classes]
    ids = ids[ids >= 0]
    if len(ids) == 0:
        return []
    keep = torch.ones(len(ids), dtype=torch.bool)
    keep[1:] = ids[1:] != ids[:-1]
    return ids[keep].tolist()


def edit_ops(ref: list, hyp: list) -> tuple[int, int, int]:
    """(substitutions, insertions, deletions) of a minimum edit-distance alignment of hyp to ref.

    Among alignments of equal cost the backtrace prefers match/substitution, then deletion.
    """
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]  # cost[i][j]: ref[:i] vs hyp[:j]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        row, prev = cost[i], cost[i - 1]
        for j in range(1, m + 1):
            row[j] = min(prev[j - 1] + (ref[i - 1] != hyp[j - 1]), prev[j] + 1, row[j - 1] + 1)
    subs = ins = dels = 0
    i, j = n, m
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            subs += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            dels, i = dels + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return subs, ins, dels


def per(pred: torch.Tensor, ref: torch.Tensor, lengths: torch.Tensor, fold_ids: torch.Tensor) -> float:
    """Phone error rate: frame predictions collapsed to folded phone sequences, per utterance, scored by
    edit distance against the reference frames' sequence; total edits / total reference phones.

    pred, ref: (F,) 183-class frame labels of utterances back to back; lengths: (U,) frames per utterance.
    The reference sequence comes from the reference frames the same way, so a perfect frame classifier
    scores 0 (a phone too short to cover any frame centre is not in it).
    """
    pred, ref, fold_ids = pred.cpu(), ref.cpu(), fold_ids.cpu()
    edits = total = 0
    for p, r in zip(pred.split(lengths.tolist()), ref.split(lengths.tolist()), strict=True):
        r_seq = phone_sequence(r, fold_ids)
        edits += sum(edit_ops(r_seq, phone_sequence(p, fold_ids)))
        total += len(r_seq)
    return edits / max(total, 1)


def frame_error(pred: torch.Tensor, ref: torch.Tensor, fold_ids: torch.Tensor) -> float:
    """Frame error on the 39 folded phones (state and within-fold confusions are not errors; frames
    whose reference is `q` are not scored). pred, ref: (F,) 183-class labels."""
    p, r = fold_ids[pred], fold_ids[ref]
    scored = r >= 0
    return (p[scored] != r[scored]).float().mean().item() if scored.any() else 0.0
