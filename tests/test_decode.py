"""Phone decoding: Viterbi against brute force (one weight for all, or one per utterance), a grid decoded
in one pass against one point at a time, the estimated tables, dev-only tuning, forced realignment, and
decoding against frame collapse on frames with 5% of their argmax flipped."""

import inspect
import itertools

import pytest
import torch

from distill import decode, speech

P61 = len(speech.PHONES)


@pytest.fixture(autouse=True, scope="module")
def single_threaded(one_thread):
    """Small tensors: one torch thread (conftest.one_thread)."""


def random_model(gen: torch.Generator, phones: int) -> tuple[decode.Hmm, torch.Tensor]:
    stay = torch.rand(phones * 3, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    lm = torch.log_softmax(2 * torch.randn(phones + 1, phones + 1, generator=gen, dtype=torch.float64), 1)
    return decode.Hmm(log_stay=stay.log(), log_move=(1 - stay).log()), lm


def brute_force(loglik, hmm, lm, w, pen):
    """Best score and state path of one utterance (T, S) over every sequence in S^T, scored with a
    dense (S, S) transition matrix written out from the rules (illegal moves are -inf)."""
    T, S = loglik.shape
    P = S // 3
    ninf = float("-inf")
    move = torch.full((S, S), ninf, dtype=loglik.dtype)
    start = torch.full((S,), ninf, dtype=loglik.dtype)
    end = torch.full((S,), ninf, dtype=loglik.dtype)
    for j in range(S):
        move[j, j] = hmm.log_stay[j]
        if j % 3 < 2:
            move[j, j + 1] = hmm.log_move[j]
        else:  # leave phone j // 3: into state 0 of any phone, or end the utterance
            end[j] = hmm.log_move[j] + w * lm[j // 3, P]
            for q in range(P):
                move[j, 3 * q] = hmm.log_move[j] + w * lm[j // 3, q] + pen
        if j % 3 == 0:
            start[j] = w * lm[P, j // 3] + pen
    paths = torch.tensor(list(itertools.product(range(S), repeat=T)))  # (S^T, T)
    score = start[paths[:, 0]] + end[paths[:, -1]] + loglik[torch.arange(T), paths].sum(1)
    score = score + move[paths[:, :-1], paths[:, 1:]].sum(1)
    best = int(score.argmax())
    return float(score[best]), paths[best]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("phones", [2, 3])
def test_viterbi_equals_brute_force(seed, phones):
    """Batched, padded utterances of different lengths: each one's best score and path equal the
    exhaustive search's; padding frames (here huge values) change nothing."""
    gen = torch.Generator().manual_seed(seed)
    hmm, lm = random_model(gen, phones)
    lengths = torch.tensor([6, 3, 6, 5, 4, 6] if phones == 2 else [5, 3, 5, 4, 5, 5])
    loglik = 2 * torch.randn(len(lengths), int(lengths.max()), 3 * phones, generator=gen, dtype=torch.float64)
    for u, n in enumerate(lengths.tolist()):
        loglik[u, n:] = 1e3
    w, pen = 1.5, -0.7
    paths, best = decode.viterbi(loglik, lengths, hmm, lm, w, pen)
    assert best.dtype == torch.float64
    for u, n in enumerate(lengths.tolist()):
        score, path = brute_force(loglik[u, :n], hmm, lm, w, pen)
        assert float(best[u]) == pytest.approx(score, abs=1e-9)
        assert paths[u].tolist() == path.tolist()


def test_per_utterance_weights_and_a_grid_in_one_pass_decode_as_one_point_at_a_time():
    """Viterbi with a weight and penalty per utterance equals brute force at each utterance's own point, and
    `decode_grid` (every point's utterances batched together, as `choose` runs it) equals `decode` per point."""
    gen = torch.Generator().manual_seed(7)
    hmm, lm = random_model(gen, 2)
    loglik = 2 * torch.randn(4, 5, 6, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 4, 5, 3])
    w, pen = torch.tensor([0.5, 1.0, 3.0, 1.5]), torch.tensor([-2.0, 0.0, 1.0, -0.5])
    paths, best = decode.viterbi(loglik, lengths, hmm, lm, w, pen)
    for u, n in enumerate(lengths.tolist()):
        score, path = brute_force(loglik[u, :n], hmm, lm, float(w[u]), float(pen[u]))
        assert float(best[u]) == pytest.approx(score, abs=1e-9) and paths[u].tolist() == path.tolist()

    model = decode.Decoder.fit(*corpus(gen, 30))
    targets, lengths, _ = corpus(gen, 12)
    logits = logits_of(gen, targets, model.log_priors, margin=2.0, flip=0.2)  # noisy: the points disagree
    points = [(w, p) for w in (0.5, 4.0) for p in (-6.0, 0.0, 3.0)]
    grid = decode.decode_grid(logits, lengths, model, points, batch=5)  # batches cut across points
    singles = [decode.decode(logits, lengths, model, w, p) for w, p in points]
    assert grid == singles and len({str(h) for h in grid}) > 1


def test_phones_of_a_path():
    """A phone starts where state 0 is entered from elsewhere, so a phone repeated back to back stays two."""
    assert decode.phones(torch.tensor([0, 0, 1, 2, 0, 1, 1, 2, 3, 4, 5, 5])) == [0, 0, 1]


def test_tables_from_train():
    """Priors have no -inf and sum to 1; transitions counted within utterances only, add-one smoothed;
    every bigram row (given a phone or start) sums to 1 over next phones and end."""
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 5])  # utterances [0 0 0 1 1 2] and [3 4 5]
    lengths = torch.tensor([6, 3])
    priors = decode.state_log_priors(targets)
    assert priors.isfinite().all() and priors.exp().sum() == pytest.approx(1)
    hmm = decode.hmm(targets, lengths)
    stay, move = hmm.log_stay.exp(), hmm.log_move.exp()
    assert stay[0] == pytest.approx(3 / 5) and stay[1] == pytest.approx(2 / 4)
    assert move[2] == pytest.approx(1 / 2)  # the 2 -> 3 pair crosses utterances: not counted
    assert torch.allclose(stay + move, torch.ones(speech.CLASSES))

    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, P61, (int(n),), generator=gen).tolist() for n in torch.randint(1, 40, (50,))]
    seqs.append([7, 8] * 30)
    lm = decode.bigram(seqs)
    assert lm.shape == (P61 + 1, P61 + 1)
    assert torch.allclose(lm.exp().sum(1).double(), torch.ones(P61 + 1, dtype=torch.float64), atol=1e-6)
    assert int(lm[7].argmax()) == 8 and int(lm[8].argmax()) == 7


# A fixed phone chain for the synthetic corpora over all 61 phones (every state is seen in train, as in
# TIMIT), where no two neighbours fold alike, nor the two phones around a `q` (which scoring deletes): so a
# reference's folded sequence has no repeats and frame collapse and `phone_error` score the same phones.
Q = speech.PHONES.index("q")
_fold = torch.tensor(decode.FOLD39)
_chain = torch.softmax(3 * torch.randn(P61, P61, generator=torch.Generator().manual_seed(123)), 1)
_chain[_fold[:, None] == _fold[None, :]] = 0
_chain[Q, Q] = 0
CHAIN = _chain / _chain.sum(1, keepdim=True)  # (61, 61) P(next | previous)


def corpus(gen, utts, durations=(5, 15), phones=(20, 30)):
    """(targets (F,), lengths (U,), sequences): phone chains with states in equal thirds of each phone."""
    targets, lengths, seqs = [], [], []
    for _ in range(utts):
        seq = [int(torch.randint(P61, (1,), generator=gen))]
        while len(seq) < int(torch.randint(*phones, (1,), generator=gen)) or seq[-1] == Q:
            nxt = int(torch.multinomial(CHAIN[seq[-1]], 1, generator=gen))
            if seq[-1] != Q or len(seq) < 2 or _fold[nxt] != _fold[seq[-2]]:
                seq.append(nxt)
        frames = []
        for p in seq:
            n = int(torch.randint(durations[0], durations[1] + 1, (1,), generator=gen))
            frames += [3 * p + 3 * i // n for i in range(n)]
        targets.append(torch.tensor(frames))
        lengths.append(len(frames))
        seqs.append(seq)
    return torch.cat(targets), torch.tensor(lengths), seqs


def logits_of(gen, targets, log_priors, margin=8.0, flip=0.0):
    """Frame logits of a network trained on train: log prior + `margin` on the target class + N(0, 1)
    (a net's posterior is prior x likelihood); a `flip` fraction of frames then swap their target's
    logit with a random other class's, so their argmax is wrong."""
    logits = torch.randn(len(targets), speech.CLASSES, generator=gen) + log_priors
    logits[torch.arange(len(targets)), targets] += margin
    flipped = (torch.rand(len(targets), generator=gen) < flip).nonzero()[:, 0]
    other = (targets[flipped] + torch.randint(1, speech.CLASSES, (len(flipped),), generator=gen)) % speech.CLASSES
    a, b = logits[flipped, targets[flipped]], logits[flipped, other]
    logits[flipped, targets[flipped]], logits[flipped, other] = b, a
    return logits


def test_decoding_shrugs_off_flipped_frames():
    """5% of frames flipped: frame collapse turns each flip into insertions, decoding hardly notices.
    The LM weight and penalty are chosen on a dev set from the same generator, the decoder fitted on train."""
    gen = torch.Generator().manual_seed(0)
    model = decode.Decoder.fit(*corpus(gen, 200))
    dev_targets, dev_lengths, dev_refs = corpus(gen, 20)
    dev_logits = logits_of(gen, dev_targets, model.log_priors, flip=0.05)
    w, pen, dev_per = decode.choose(dev_logits, dev_lengths, dev_refs, model)
    targets, lengths, refs = corpus(gen, 40)
    logits = logits_of(gen, targets, model.log_priors, flip=0.05)
    assert (logits.argmax(1) != targets).float().mean() == pytest.approx(0.05, abs=0.01)
    collapsed = speech.per(logits.argmax(1), targets, lengths, speech.fold_table())
    decoded = decode.phone_error(decode.decode(logits, lengths, model, w, pen), refs)
    print(f"\n5% frames flipped: frame-collapse PER {collapsed:.3f}, decoded PER {decoded:.3f} "
          f"(lm_weight {w}, penalty {pen}, dev PER {dev_per:.3f})")
    assert collapsed > 0.5
    assert decoded < 0.05
    # Clean frames (argmax almost always right): both near perfect, so the gaps above are the flips'.
    clean = logits_of(gen, targets, model.log_priors)
    assert speech.per(clean.argmax(1), targets, lengths, speech.fold_table()) < 0.01
    assert decode.phone_error(decode.decode(clean, lengths, model, w, pen), refs) == 0


def test_choice_reads_dev_only_and_follows_it():
    """`choose` has no test argument, and it follows dev: the same frames, where 3-frame blips between
    phones are real phones in one dev set's references and noise in the other's, get opposite penalties."""
    assert list(inspect.signature(decode.choose).parameters) == [
        "dev_logits", "dev_lengths", "dev_refs", "model", "lm_weights", "penalties"]
    gen = torch.Generator().manual_seed(1)
    model = decode.Decoder.fit(*corpus(gen, 100))
    targets, lengths, seqs = corpus(gen, 10, durations=(9, 15))
    blip = speech.PHONES.index("sh")
    frames, with_blips = [], []
    for utt, seq in zip(targets.split(lengths.tolist()), seqs, strict=True):
        cut = (torch.nonzero(utt[1:] // 3 != utt[:-1] // 3)[:, 0] + 1).tolist()  # phone starts
        parts = [part.tolist() for part in torch.tensor_split(utt, cut)]
        ref = []
        for i, (part, p) in enumerate(zip(parts, seq, strict=True)):
            ref.append(p)
            if i % 2 and i + 1 < len(seq) and blip not in (p, seq[i + 1]):
                parts[i] = part + [3 * blip, 3 * blip + 1, 3 * blip + 2]
                ref.append(blip)
        frames.append(torch.tensor(sum(parts, [])))
        with_blips.append(ref)
    blipped = torch.cat(frames)
    logits, lengths = logits_of(gen, blipped, model.log_priors), torch.tensor([len(f) for f in frames])
    grid = {"lm_weights": (0.0,), "penalties": (-40.0, 0.0)}  # no LM: whether a blip pays for itself
    as_phones = decode.choose(logits, lengths, with_blips, model, **grid)
    as_noise = decode.choose(logits, lengths, seqs, model, **grid)  # the references without the blips
    assert as_phones[1:] == (0.0, 0.0)
    assert as_noise[1] == -40.0 and as_noise[2] < 0.01


def test_realign_moves_states_keeps_phones():
    """States follow the likelihoods (unequal thirds) while every phone boundary stays where it was;
    short segments keep the thirds rule; explicit segment ids keep two runs of one phone apart."""
    # utterance 1: phone 5 x 9, 7 x 12, 9 x 1, 5 x 2; utterance 2: 5 x 6, 5 x 6 (two segments), 3 x 3
    runs = [(5, [0] + [1] * 2 + [2] * 6), (7, [0] * 6 + [1] * 4 + [2] * 2), (9, [1]), (5, [0, 2]),
            (5, [0] * 4 + [1, 2]), (5, [0, 1] + [2] * 4), (3, [0, 1, 2])]
    phone = torch.tensor([p for p, states in runs for _ in states])
    favoured = torch.tensor([3 * p + s for p, states in runs for s in states])
    segment = torch.tensor([i for i, (_, states) in enumerate(runs) for _ in states])
    lengths = torch.tensor([24, 15])
    gen = torch.Generator().manual_seed(0)
    loglik = 0.1 * torch.randn(len(phone), speech.CLASSES, generator=gen)
    loglik[torch.arange(len(phone)), favoured] += 5
    half = torch.full((speech.CLASSES,), 0.5).log()
    hmm = decode.Hmm(log_stay=half, log_move=half)
    new = decode.realign(loglik, phone, lengths, hmm, segment)
    assert torch.equal(new // 3, phone)
    assert torch.equal(new, favoured)
    # Equal thirds would start state 2 of the 9-frame phone at frame 6 and of the 12-frame one at 8.
    assert (new[:9] % 3).tolist().index(2) == 3 and (new[9:21] % 3).tolist().index(2) == 10
    # Without ids, the two runs of phone 5 in utterance 2 are one 12-frame segment: one 0 -> 1 -> 2 pass;
    # the run of phone 5 that ends utterance 1 stays apart from it.
    merged = decode.realign(loglik, phone, lengths, hmm)
    assert torch.equal(merged // 3, phone)
    assert torch.equal(merged[:24], new[:24])
    states = (merged[24:36] % 3).tolist()
    assert states == sorted(states) and states[0] == 0 and states[-1] == 2
