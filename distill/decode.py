"""Phone decoding for TIMIT as hybrid NN/HMM systems score it (Ba & Caruana 2014 follow the standard
recipes: the network's 183 state posteriors drive a Viterbi search over phone HMMs and a phone bigram).

Model. Each of the 61 phones is a 3-state left-to-right HMM (class = 3 * phone + state, as in
`distill.speech`): a state either stays (log_stay) or advances (log_move) to the next state, and from
state 2 it leaves the phone. A phone bigram with start and end symbols scores every phone that follows
another. The network's posteriors become scaled likelihoods, log p(x | s) + const = log p(s | x) - log
p(s). Decoding finds the best state path through the composite graph, scoring per frame the scaled
likelihood, per transition the HMM, and per phone entered `lm_weight * log P(q | p) + insertion_penalty`
(the first phone is entered from start; the last one is left by its state 2's move, plus `lm_weight *
log P(end | p)`). Without skips a decoded phone lasts at least 3 frames, as in Kaldi's TIMIT topology.

Estimated from TRAIN only (`Decoder.fit`): the state priors (frame targets), the HMM transitions (the
frame targets of each utterance) and the bigram (the .PHN phone sequences). Chosen on DEV only
(`choose`): the LM weight and the insertion penalty; `choose` takes no test data at all, and decodes the
dev set at every point of its grid in one pass (`decode_grid`: each row of a batch has its own point).

Forced alignment (`realign`) runs the same search inside each known phone segment, over that phone's 3
states only: the phones and their boundaries stay, the state boundaries move.

Scoring (`phone_error`) follows Kaldi's TIMIT recipe (local/timit_norm_trans.pl): both hypothesis and
reference are mapped 61 -> 39 phone by phone, `q` is deleted, and nothing is merged (`h# pcl` stays
`sil sil`); PER = total edit distance / total reference phones. (`speech.per` instead merges repeats: it
has only frames, where a repeat cannot be told from a longer phone.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from distill import speech

STATES = speech.STATES  # states per phone; every function below takes any number of phones


@dataclass(frozen=True)
class Hmm:
    """Per state (S,) = (3 * phones,): log P(stay in the state), log P(advance / leave the phone)."""
    log_stay: torch.Tensor
    log_move: torch.Tensor


def state_log_priors(targets: torch.Tensor, classes: int = speech.CLASSES) -> torch.Tensor:
    """(classes,) log prior of each state in the train frame targets (F,), add-one smoothed (no -inf)."""
    counts = torch.bincount(targets, minlength=classes).double() + 1
    return (counts / counts.sum()).log().float()


def hmm(train_targets: torch.Tensor, lengths: torch.Tensor, classes: int = speech.CLASSES) -> Hmm:
    """Transitions counted on the train alignments: frame t -> t + 1 within an utterance either keeps
    the class (stay) or not (move: next state, or any other phone after state 2; a 1- or 2-frame phone
    skips states in the thirds alignment, and that too ends its state). Add-one smoothed."""
    a, b = train_targets[:-1], train_targets[1:]  # (F - 1,) pairs of consecutive frames
    within = torch.ones(len(a), dtype=torch.bool)
    within[torch.cumsum(lengths, 0)[:-1] - 1] = False  # the pair from an utterance's last frame to the next's first
    stay = torch.bincount(a[within & (a == b)], minlength=classes).double() + 1
    move = torch.bincount(a[within & (a != b)], minlength=classes).double() + 1
    return Hmm(log_stay=(stay / (stay + move)).log().float(), log_move=(move / (stay + move)).log().float())


def bigram(sequences: list[list[int]], phones: int = len(speech.PHONES), smoothing: float = 1.0) -> torch.Tensor:
    """(phones + 1, phones + 1) log P(next | previous) from train phone sequences, additively smoothed.
    Row `phones` is the start symbol, column `phones` the end symbol: row p is a distribution over the
    next phone or the end of the utterance."""
    counts = torch.full((phones + 1, phones + 1), smoothing, dtype=torch.float64)
    prev = torch.tensor([p for seq in sequences for p in [phones, *seq]])  # each phone's predecessor ...
    nxt = torch.tensor([p for seq in sequences for p in [*seq, phones]])  # ... and the phone itself
    counts.index_put_((prev, nxt), torch.ones(len(prev), dtype=torch.float64), accumulate=True)
    return (counts / counts.sum(1, keepdim=True)).log().float()


def search(loglik: torch.Tensor, lengths: torch.Tensor, log_stay: torch.Tensor, log_move: torch.Tensor,
           graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-plus Viterbi over P phones x 3 left-to-right states, batched over U padded utterances.

    loglik (U, T, P, 3); lengths (U,) valid frames (>= 3, else no path); log_stay, log_move (U or 1, P, 3);
    graph (U or 1, P + 1, P + 1): score of entering phone q after phone p (row P: at the start), and of ending
    after p (column P), per utterance or shared. Returns paths (U, T) int64 state indices 3 * phone + state
    (frames past an utterance's length hold junk) and the best scores (U,).

    The forward pass keeps, per frame, only whether each state was reached by staying (T, U, S bool) and the
    scores of leaving each phone (T, U, P): the phone a path came from is worked out again at backtrace, for
    the path's own phone changes only. That is cheaper than an argmax over P x P per frame in the forward pass.
    """
    U, T, P, _ = loglik.shape
    dev = loglik.device
    lengths = lengths.to(dev)
    graph = graph.expand(U, P + 1, P + 1)
    into, start, end = graph[:, :P, :P], graph[:, P, :P], graph[:, :P, P]  # (U, P, P), (U, P), (U, P)
    score = torch.full((U, P, STATES), float("-inf"), dtype=loglik.dtype, device=dev)
    score[:, :, 0] = start
    score = score + loglik[:, 0]  # (U, P, 3): best path ending in each state at frame 0
    final = score.clone()  # each utterance's scores at its last frame
    stayed = torch.zeros(T, U, P * STATES, dtype=torch.bool, device=dev)  # (T, U, S): reached by a self-loop
    exits = torch.empty(T, U, P, dtype=loglik.dtype, device=dev)  # (T, U, P): leaving phone p into frame t
    for t in range(1, T):
        stay = score + log_stay
        move = score + log_move
        exits[t] = move[:, :, 2]
        enter = (move[:, :, 2, None] + into).amax(1)  # (U, P): best phone p to leave into each q
        inc = torch.cat([enter[..., None], move[..., :2]], 2)  # (U, P, 3): best arrival from another state
        keep = stay >= inc
        score = torch.where(keep, stay, inc) + loglik[:, t]
        stayed[t] = keep.flatten(1)
        final = torch.where((lengths - 1 == t)[:, None, None], score, final)
    best, phone = (final[:, :, 2] + log_move[:, :, 2] + end).max(1)  # (U,): leave the last phone, end
    cur = STATES * phone + 2  # (U,) state at each utterance's last frame
    rows = torch.arange(U, device=dev)
    paths = torch.empty(U, T, dtype=torch.int64, device=dev)
    for t in range(T - 1, -1, -1):  # an utterance ending before t holds its last state until t reaches it
        paths[:, t] = cur
        if t:
            came = (exits[t] + into[rows, :, cur // STATES]).argmax(1)  # (U,) phone left, if cur was entered
            prev = torch.where(cur % STATES == 0, STATES * came + 2, cur - 1)
            prev = torch.where(stayed[t, rows, cur], cur, prev)
            cur = torch.where(t < lengths, prev, cur)
    return paths, best


def viterbi(loglik: torch.Tensor, lengths: torch.Tensor, hmm: Hmm, lm: torch.Tensor, lm_weight: float | torch.Tensor,
            insertion_penalty: float | torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Best state path of each utterance and its score: loglik (U, T, S = 3 P) padded, lengths (U,),
    lm (P + 1, P + 1) from `bigram`; lm_weight and insertion_penalty shared, or (U,) one per utterance.
    Returns [(length_u,) int64 states] and (U,) best scores."""
    U, T, S = loglik.shape
    P = S // STATES
    w, pen = (torch.as_tensor(x, dtype=loglik.dtype, device=loglik.device).reshape(-1, 1, 1)
              for x in (lm_weight, insertion_penalty))  # (U or 1, 1, 1)
    graph = w * lm.to(loglik)[None]  # (U or 1, P + 1, P + 1)
    graph[..., :P] += pen  # every phone entered pays it; ending does not
    stay, move = (x.to(loglik).view(1, P, STATES) for x in (hmm.log_stay, hmm.log_move))  # shared by all
    paths, best = search(loglik.view(U, T, P, STATES), lengths, stay, move, graph)
    return [paths[u, :n] for u, n in enumerate(lengths.tolist())], best


def phones(path: torch.Tensor) -> list[int]:
    """State path (T,) -> phone sequence: a phone starts wherever state 0 is entered from elsewhere."""
    prev = torch.cat([path.new_full((1,), -1), path[:-1]])
    return (path[(path % STATES == 0) & (path != prev)] // STATES).tolist()


def scaled_loglik(logits: torch.Tensor, log_priors: torch.Tensor) -> torch.Tensor:
    """(F, S) hybrid-HMM scaled likelihoods log p(s | x) - log p(s) = log p(x | s) - log p(x)."""
    return torch.log_softmax(logits, -1) - log_priors.to(logits)


@dataclass(frozen=True)
class Decoder:
    """Everything estimated from train: (S,) state log priors, the HMM, the (P + 1, P + 1) log bigram."""
    log_priors: torch.Tensor
    hmm: Hmm
    lm: torch.Tensor

    @classmethod
    def fit(cls, train_targets: torch.Tensor, train_lengths: torch.Tensor, train_sequences: list[list[int]],
            classes: int = speech.CLASSES, smoothing: float = 1.0) -> Decoder:
        """From train frame targets (F,), frames per utterance (U,) and each utterance's phone sequence."""
        return cls(state_log_priors(train_targets, classes), hmm(train_targets, train_lengths, classes),
                   bigram(train_sequences, classes // STATES, smoothing))


def decode(logits: torch.Tensor, lengths: torch.Tensor, model: Decoder, lm_weight: float,
           insertion_penalty: float, batch: int | None = None) -> list[list[int]]:
    """Phone sequence of every utterance: logits (F, S) back to back, lengths (U,)."""
    return decode_grid(logits, lengths, model, [(lm_weight, insertion_penalty)], batch)[0]


def decode_grid(logits: torch.Tensor, lengths: torch.Tensor, model: Decoder, points: list[tuple[float, float]],
                batch: int | None = None) -> list[list[list[int]]]:
    """Every utterance decoded at every (lm_weight, insertion_penalty) point: [point][utterance] -> phones.
    logits (F, S) back to back, lengths (U,). The (point, utterance) pairs are searched `batch` at a time
    (default 64 on a CPU, 512 on a GPU, where a step costs little more for more rows), utterances of similar
    length together (less padding): one pass over the frames serves every point of a grid."""
    batch = batch or (512 if logits.is_cuda else 64)
    utts = scaled_loglik(logits, model.log_priors).split(lengths.tolist())
    pairs = sorted((len(utts[u]), k, u) for k in range(len(points)) for u in range(len(utts)))
    weights, penalties = (torch.tensor(x, dtype=torch.float64) for x in zip(*points, strict=True))  # (K,) each
    out: list[list[list[int]]] = [[[] for _ in utts] for _ in points]
    for i in range(0, len(pairs), batch):
        _, k, u = (list(x) for x in zip(*pairs[i:i + batch], strict=True))  # this chunk's points and utterances
        paths, _ = viterbi(pad_sequence([utts[j] for j in u], batch_first=True), lengths[u], model.hmm, model.lm,
                           weights[k], penalties[k])
        for kk, uu, path in zip(k, u, paths, strict=True):
            out[kk][uu] = phones(path)
    return out


FOLD39 = [speech.PHONES39.index(speech.fold(p)) if speech.fold(p) else -1 for p in speech.PHONES]  # -1: q


def phone_error(hyps: list[list[int]], refs: list[list[int]]) -> float:
    """PER of 61-phone sequences: both folded to 39, q deleted, nothing merged (Kaldi); edits / ref phones."""
    edits = total = 0
    for hyp, ref in zip(hyps, refs, strict=True):
        h, r = ([FOLD39[p] for p in seq if FOLD39[p] >= 0] for seq in (hyp, ref))
        edits += sum(speech.edit_ops(r, h))
        total += len(r)
    return edits / max(total, 1)


LM_WEIGHTS = (1.0, 2.0, 4.0, 8.0)  # `choose`'s grid: 16 points, decoded in one pass
PENALTIES = (-4.0, -2.0, 0.0, 2.0)


def choose(dev_logits: torch.Tensor, dev_lengths: torch.Tensor, dev_refs: list[list[int]], model: Decoder,
           lm_weights: tuple[float, ...] = LM_WEIGHTS,
           penalties: tuple[float, ...] = PENALTIES) -> tuple[float, float, float]:
    """(lm_weight, insertion_penalty, dev PER) of the grid point with the lowest dev PER (the first in
    grid order on ties). Only dev data comes in: test never takes part in the choice."""
    points = [(w, p) for w in lm_weights for p in penalties]
    hyps = decode_grid(dev_logits, dev_lengths, model, points)
    return min(((w, p, phone_error(h, dev_refs)) for (w, p), h in zip(points, hyps, strict=True)),
               key=lambda r: r[2])


def realign(loglik: torch.Tensor, phone: torch.Tensor, lengths: torch.Tensor, hmm: Hmm,
            segment: torch.Tensor | None = None, batch: int = 4096) -> torch.Tensor:
    """Forced alignment inside known phone segments: (F,) new 183-class targets, same phones per frame.

    loglik (F, S) scaled likelihoods; phone (F,) the reference phone of each frame; lengths (U,). A
    segment is a maximal run of one phone within an utterance, or, where `segment` (F,) ids are given,
    of one id too (keeping two adjacent segments of one phone apart). A segment of >= 3 frames gets the
    best path 0 -> 1 -> 2 (each state >= 1 frame) under `hmm`; in a shorter one, frame i of n takes the
    third of the segment its centre lies in, floor(3 (i + 1/2) / n): 1 frame -> state 1; 2 -> 0, 2.
    """
    F = len(phone)
    new = torch.ones(F, dtype=torch.bool)  # (F,) first frame of a segment
    new[1:] = phone[1:] != phone[:-1]
    if segment is not None:
        new[1:] |= segment[1:] != segment[:-1]
    new[torch.cumsum(lengths, 0)[:-1]] = True  # utterance starts
    first = new.nonzero()[:, 0]  # (G,) segments
    size = torch.diff(first, append=torch.tensor([F]))  # (G,)
    offset = torch.arange(F) - first.repeat_interleave(size)  # (F,) frame index within its segment
    n = size.repeat_interleave(size)
    state = torch.div((2 * offset + 1) * STATES, 2 * n, rounding_mode="floor")  # (F,) thirds; long ones redone
    log_stay, log_move = hmm.log_stay.view(-1, STATES), hmm.log_move.view(-1, STATES)  # (P, 3)
    # One phone (P = 1): entered from start, left only to end; re-entering it (row 0, column 0) is barred.
    graph = torch.tensor([[float("-inf"), 0.0], [0.0, float("-inf")]])
    long = (size >= STATES).nonzero()[:, 0]
    long = long[size[long].argsort()]  # similar lengths together: little padding
    for i in range(0, len(long), batch):
        g = long[i:i + batch]  # (B,) segments
        frame = (first[g, None] + torch.arange(int(size[g].max()))).clamp_max(F - 1)  # (B, L)
        p = phone[first[g]]  # (B,)
        cols = STATES * p[:, None, None] + torch.arange(STATES)  # (B, 1, 3) the segment's phone's states
        ll = loglik[frame[:, :, None], cols].unsqueeze(2)  # (B, L, 1, 3)
        paths, _ = search(ll, size[g], log_stay[p, None].to(ll), log_move[p, None].to(ll), graph.to(ll))
        valid = torch.arange(frame.shape[1]) < size[g, None]  # (B, L)
        state[frame[valid]] = paths.cpu()[valid]
    return STATES * phone + state
