"""TIMIT: the reader on a synthesized TIMIT-format corpus, features against torchaudio, targets, folding,
transcriptions and split sizes, PER on hand-made cases, the feature cache, decoded PER (weights chosen on
dev alone, flipped frames), forced realignment, and the smoke sweep end to end through Ray."""

import dataclasses
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from timit_corpus import SPEAKERS
from timit_corpus import write as write_corpus

import distill.data
from distill import cache, experiment, files, local, pipeline, ray_shared, record, report, results, speech
from distill.__main__ import main
from distill.config import DataConfig, StudentConfig, SweepConfig, TeacherConfig, load_sweep
from distill.datasets import timit
from distill.errors import UserError
from distill.train import infer

# The synthesized corpus is tiny, so every load warns that it is not the standard corpus: said once, in
# test_a_partial_copy_loads_with_a_warning_naming_its_sizes, and not in every other test's summary.
pytestmark = pytest.mark.filterwarnings("ignore:TIMIT at .* is not the standard corpus")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(root, {path of .PHN: segments written}) of a TIMIT-layout corpus of synthesized speech."""
    root = tmp_path_factory.mktemp("timit") / "TIMIT"
    return root, write_corpus(root)


@pytest.fixture(autouse=True, scope="module")
def single_threaded(one_thread):
    """Small tensors: one torch thread (conftest.one_thread)."""


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """No test writes to ~/.cache: every test gets its own feature cache."""
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def raw(corpus, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        return timit.load(str(corpus[0]))


# --- reader --------------------------------------------------------------------------------------

def test_reader_splits_by_speaker_and_drops_sa(corpus):
    found = timit.find(corpus[0])
    speakers = {split: {u.speaker for u in utts} for split, utts in found.items()}
    assert speakers["train"] == {s.name.lower() for s in SPEAKERS if s.split == "TRAIN"}
    assert speakers["val"] == {"faks0", "mgwt0"} <= timit.DEV_SPEAKERS
    assert speakers["test"] == {"mdab0", "felc0"} <= timit.CORE_TEST_SPEAKERS
    assert "mkch0" not in set().union(*speakers.values())  # a TEST speaker in neither list
    for utts in found.values():
        assert all(not u.name.startswith("sa") for u in utts)  # SA1/SA2 exist on disk but are dropped
        assert all(sum(u.speaker == s for u in utts) == 3 for s in {u.speaker for u in utts})
    assert len(timit.DEV_SPEAKERS) == 50 and len(timit.CORE_TEST_SPEAKERS) == 24
    assert not timit.DEV_SPEAKERS & timit.CORE_TEST_SPEAKERS


def test_reader_is_sample_accurate(corpus):
    root, written = corpus
    for utt in [u for utts in timit.find(root).values() for u in utts]:
        wave, segments = timit.read(utt)
        audio, rate = sf.read(utt.wav, dtype="int16")
        assert rate == 16000 and torch.equal(wave, torch.from_numpy(audio).float())
        expected = written[str(utt.phn)]
        assert segments.tolist() == [[b, e, speech.PHONES.index(lab)] for b, e, lab in expected]
        assert segments[0, 0] == 0 and segments[-1, 1] == len(wave)  # h# to h#, the whole file
        # Each frame's phone is the segment under its centre sample, found here the slow way.
        n = speech.frames(len(wave))
        phones = speech.frame_targets(segments, n) // speech.STATES
        for t in range(0, n, 7):
            centre = 160 * t + 200
            assert phones[t] == next(p for b, e, p in segments.tolist() if b <= centre < e)


def test_lowercase_copy_reads_the_same(corpus, tmp_path):
    copy = tmp_path / "timit"
    shutil.copytree(corpus[0], copy)
    for p in sorted(copy.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first
        p.rename(p.with_name(p.name.lower()))
    lower, upper = timit.find(copy), timit.find(corpus[0])
    assert [(u.speaker, u.name) for u in lower["test"]] == [(u.speaker, u.name) for u in upper["test"]]


def test_a_partial_copy_loads_with_a_warning_naming_its_sizes(corpus):
    with pytest.warns(UserWarning, match="not the standard corpus") as caught:
        found = timit.find(corpus[0])
    msg = str(caught[0].message)
    assert "\n" not in msg and "train has 6 speakers / 18 utterances, not 462 / 3696" in msg
    assert "test has 2 speakers / 6 utterances, not 24 / 192" in msg
    # A full copy's counts (speakers repeated to size) warn of nothing.
    full = {split: [timit.Utterance(f"s{i % speakers}", f"u{i}", None, None) for i in range(utts)]
            for split, (speakers, utts) in timit.STANDARD.items()}
    assert timit.size_mismatch(full) == "" and timit.size_mismatch(found) != ""


def test_transcriptions_come_from_the_phn_files_not_from_frames(corpus, raw):
    """Each split's phone sequences are the .PHN files' own, every phone however short (so a phone that
    covers no frame centre is still scored); train frames know their segment, so two segments of one
    phone side by side stay two."""
    root, written = corpus
    found = timit.find(root)
    for split in ("train", "val", "test"):
        want = [[speech.PHONES.index(lab) for _, _, lab in written[str(u.phn)]] for u in found[split]]
        assert speech.unpad_sequences(getattr(raw, f"{split}_phones")) == want
    short = [(b, e) for u in found["test"] for b, e, _ in written[str(u.phn)] if e - b < 160]
    assert short, "the corpus has phones shorter than a frame shift: the test would not show they are kept"
    segments = raw.train_segments.split(raw.train_lengths.tolist())
    phones = (raw.train_y // 3).split(raw.train_lengths.tolist())
    for utt, seg, ph in zip(found["train"], segments, phones, strict=True):
        rows = timit.read(utt)[1]
        assert torch.equal(seg, speech.frame_segments(rows, len(seg))) and torch.equal(rows[seg, 2], ph)
        assert (seg.diff() >= 0).all()


@pytest.mark.parametrize("damage", ["missing", "no TEST", "no core test", "no dev", "bad phone", "one level up"])
def test_missing_or_incomplete_root_is_one_line_user_error(damage, corpus, tmp_path):
    root = tmp_path / "TIMIT"
    if damage == "one level up":  # the LDC disc's layout: the user passes the folder that holds TIMIT/
        shutil.copytree(corpus[0], root / "TIMIT")
    elif damage != "missing":
        shutil.copytree(corpus[0], root)
    if damage == "no TEST":
        shutil.rmtree(root / "TEST")
    if damage in ("no core test", "no dev"):
        for name in ("MDAB0", "FELC0") if damage == "no core test" else ("FAKS0", "MGWT0"):
            shutil.rmtree(root / "TEST" / "DR1" / name)
    if damage == "bad phone":
        phn = next((root / "TRAIN").rglob("SX*.PHN"))
        phn.write_text(phn.read_text().replace(" h#\n", " silence\n", 1))
    with pytest.raises(UserError) as e:
        distill.data.load("timit", str(root))
    msg = str(e.value)
    assert "\n" not in msg
    expected = {"missing": f"TIMIT not found at {root}", "no TEST": f"TIMIT not found at {root}",
                "no core test": "no utterances of the core-test speakers",
                "no dev": "no utterances of the dev-set speakers", "bad phone": "silence': expected",
                "one level up": f"(did you mean {root / 'TIMIT'}?)"}[damage]
    assert expected in msg and ("--data-root" in msg or damage == "bad phone")


# --- features ------------------------------------------------------------------------------------

def test_features_match_torchaudio(corpus):
    utt = timit.find(corpus[0])["val"][0]
    audio, _ = sf.read(utt.wav, dtype="int16")
    wave = torch.from_numpy(audio).float()
    fbank = torchaudio.compliance.kaldi.fbank(wave[None], sample_frequency=16000, frame_length=25, frame_shift=10,
                                              num_mel_bins=40, use_energy=True, dither=0.0, window_type="hamming")
    delta = torchaudio.functional.compute_deltas(fbank.T)
    delta2 = torchaudio.functional.compute_deltas(delta)
    feats = speech.features(wave)
    assert feats.shape == (1 + (len(audio) - 400) // 160, 3, 41) == (speech.frames(len(audio)), 3, 41)
    torch.testing.assert_close(feats[:, 0], fbank)
    torch.testing.assert_close(feats[:, 1], delta.T)
    torch.testing.assert_close(feats[:, 2], delta2.T)
    # Row 0 is the log energy of the frame: log of the sum of squares of its (DC-removed) samples.
    frame = wave[:400] - wave[:400].mean()
    assert abs(feats[0, 0, 0].item() - math.log(frame.double().pow(2).sum().item())) < 1e-3


def test_load_layout_and_global_normalisation(corpus, raw):
    found = timit.find(corpus[0])
    for split, x, y in (("train", raw.train_x, raw.train_y), ("val", raw.val_x, raw.val_y),
                        ("test", raw.test_x, raw.test_y)):
        frames = [speech.frames(sf.info(u.wav).frames) for u in found[split]]
        # Each frame once: the +-7 context is gathered per batch, never stacked for a whole split.
        assert x.shape == (sum(frames), 3, 41) and y.shape == (sum(frames),)
        assert getattr(raw, f"{split}_lengths").tolist() == frames
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < 183
    assert raw.classes == 183 and raw.fold.shape == (183,) and raw.context == 7
    # One mean and std per feature, from the train frames only: train is standardised.
    assert raw.train_x.mean(0).abs().max() < 1e-4 and (raw.train_x.std(0) - 1).abs().max() < 1e-4
    # The same numbers by hand: a test frame is its own features, normalised with train's statistics.
    train = torch.cat([speech.features(timit.read(u)[0]) for u in found["train"]])
    first = speech.features(timit.read(found["test"][0])[0])
    torch.testing.assert_close(raw.test_x[5], (first[5] - train.mean(0)) / train.std(0))


def stacked(feats: torch.Tensor, lengths: torch.Tensor, context: int) -> torch.Tensor:
    """The obvious way: every frame (F, C, H) with its +-context neighbours, clamped within its utterance, as
    (F, C, H, 2 * context + 1): what the model sees, built here for a whole split (the loader never does)."""
    out, start = [], 0
    for n in lengths.tolist():
        for t in range(n):
            out.append(torch.stack([feats[start + min(max(t + o, 0), n - 1)] for o in range(-context, context + 1)],
                                   -1))
        start += n
    return torch.stack(out)


def test_context_is_gathered_within_utterances_repeating_edges():
    feats = torch.arange(5.0)[:, None, None].expand(5, 1, 2).contiguous()  # frame i holds i
    lengths = torch.tensor([3, 2])
    x = distill.data.Inputs(feats, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), 2,
                            distill.data.utterance_bounds(lengths))
    assert x.shape == (5, 1, 2, 5)
    assert x[:][:, 0, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2],  # utterance 1
                                      [3, 3, 3, 4, 4], [3, 3, 4, 4, 4]]  # utterance 2 never sees utterance 1
    assert torch.equal(x[:], stacked(feats, lengths, 2))


@pytest.mark.parametrize("compact", [False, True])
def test_per_batch_context_equals_the_stacked_context(corpus, raw, compact):
    splits = distill.data.load("timit", str(corpus[0]), compact=compact)
    for split in ("train", "val", "test"):
        x = splits.split(split)[0]
        assert x.stored.shape == getattr(raw, f"{split}_x").shape  # stored once per frame
        assert x.stored.dtype == (torch.float16 if compact else torch.float32)
        feats = getattr(raw, f"{split}_x").to(x.stored.dtype).float()  # what the store holds, as fp32
        want = (stacked(feats, getattr(raw, f"{split}_lengths"), 7) - x.mean) / x.std
        index = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:300]
        assert torch.equal(x[index], want[index]) and torch.equal(x[:], want)
    assert splits.shape == (3, 41, 15)


# --- targets, folding, scoring -------------------------------------------------------------------

def test_183_state_targets():
    aa, b = speech.PHONES.index("aa"), speech.PHONES.index("b")
    # aa covers the centres (200 + 160 t) of frames 0..8, b those of frames 9..11.
    segments = torch.tensor([[0, 1640, aa], [1640, 2120, b]])
    targets = speech.frame_targets(segments, 12)
    assert targets.tolist() == [3 * aa + s for s in (0, 0, 0, 1, 1, 1, 2, 2, 2)] + [3 * b + s for s in (0, 1, 2)]
    given = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 2, 0, 0, 2])  # a forced alignment's states win
    assert (speech.frame_targets(segments, 12, given) % 3).tolist() == given.tolist()
    assert speech.CLASSES == 183 == 3 * len(speech.PHONES) and len(set(speech.PHONES)) == 61


def test_61_to_39_folding():
    assert len(speech.PHONES39) == 39 and "sil" in speech.PHONES39 and "q" not in speech.PHONES39
    for phone, folded in {"ao": "aa", "ax-h": "ah", "ax": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l",
                          "em": "m", "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw", "bcl": "sil",
                          "pcl": "sil", "h#": "sil", "pau": "sil", "epi": "sil", "aa": "aa", "dx": "dx",
                          "q": None}.items():
        assert speech.fold(phone) == folded, phone
    table = speech.fold_table()
    q, ao, aa = (speech.PHONES.index(p) for p in ("q", "ao", "aa"))
    assert table.shape == (183,) and table[3 * q:3 * q + 3].tolist() == [-1] * 3
    assert table[3 * ao:3 * ao + 3].tolist() == [speech.PHONES39.index("aa")] * 3 == table[3 * aa:3 * aa + 3].tolist()
    assert set(table.tolist()) == set(range(39)) | {-1}


def test_edit_operations():
    assert speech.edit_ops([1, 2, 3], [1, 2, 3]) == (0, 0, 0)
    assert speech.edit_ops([1, 2, 3], [1, 4, 3]) == (1, 0, 0)
    assert speech.edit_ops([1, 2, 3], [1, 2, 5, 3]) == (0, 1, 0)
    assert speech.edit_ops([1, 2, 3], [1, 3]) == (0, 0, 1)
    assert speech.edit_ops([1, 2, 3], []) == (0, 0, 3) and speech.edit_ops([], [7, 8]) == (0, 2, 0)
    assert speech.edit_ops([1, 2, 3, 4], [2, 3, 9, 4, 5]) == (0, 2, 1)
    assert speech.edit_ops([1, 2, 3, 4], [2, 3, 9, 5]) == (1, 1, 1)


def frames_of(*phones: str) -> torch.Tensor:
    """Frame classes for a list of (phone, frames) as 'phone*n' strings, state 0."""
    out = []
    for item in phones:
        phone, n = item.split("*")
        out += [3 * speech.PHONES.index(phone)] * int(n)
    return torch.tensor(out)


def test_per_collapses_folds_and_counts_edits():
    fold = speech.fold_table()
    ref = frames_of("h#*3", "sh*4", "iy*5", "pau*2", "hh*4", "h#*2")  # sil sh iy sil hh sil: 6 phones
    assert speech.per(ref, ref, torch.tensor([len(ref)]), fold) == 0
    # Same phones in other states and 61-phone variants that fold together are no error.
    variant = frames_of("pau*3", "zh*4", "iy*5", "epi*2", "hv*4", "bcl*2") + 2
    assert speech.per(variant, ref, torch.tensor([len(ref)]), fold) == 0
    assert speech.frame_error(variant, ref, fold) == 0
    # One substitution (iy -> ih), and a one-frame blip of 'f' inside hh: an insertion (hh f hh: 2 extra).
    hyp = frames_of("h#*3", "sh*4", "ih*5", "pau*2", "hh*2", "f*1", "hh*1", "h#*2")
    assert speech.per(hyp, ref, torch.tensor([len(ref)]), fold) == pytest.approx(3 / 6)
    assert speech.frame_error(hyp, ref, fold) == pytest.approx(6 / 20)
    # Two utterances: the sums, not the mean of rates; q frames are dropped from both sequences.
    short = frames_of("h#*2", "q*2", "aa*3", "h#*2")  # sil aa sil: q is not scored
    two_ref, two_hyp = torch.cat([ref, short]), torch.cat([hyp, frames_of("h#*4", "aa*3", "h#*2")])
    assert speech.per(two_hyp, two_ref, torch.tensor([len(ref), len(short)]), fold) == pytest.approx(3 / 9)
    assert speech.frame_error(two_hyp, two_ref, fold) == pytest.approx(6 / 27)  # 29 frames, 2 of them q


# --- the feature cache ---------------------------------------------------------------------------

def test_feature_cache_is_reused_rebuilt_when_corrupt_and_keyed_by_files(corpus, own_cache, monkeypatch, tmp_path):
    root = tmp_path / "TIMIT"
    shutil.copytree(corpus[0], root)
    first = timit.load(str(root))
    entries = sorted(own_cache.rglob("*.pt"))
    assert [f.name.split("-")[0] for f in entries] == ["test", "train", "val"]
    assert not any(root.rglob("*.pt"))  # never written into the user's copy

    real = timit.extract
    monkeypatch.setattr(timit, "extract", lambda utts: pytest.fail("extracted again despite the cache"))
    assert torch.equal(timit.load(str(root)).train_x, first.train_x)

    train = next(f for f in entries if f.name.startswith("train"))
    damaged = bytearray(train.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    train.write_bytes(bytes(damaged))
    calls = []
    monkeypatch.setattr(timit, "extract", lambda utts: calls.append(len(utts)) or real(utts))
    assert torch.equal(timit.load(str(root)).train_x, first.train_x)
    assert calls == [18]  # only the damaged split was recomputed, and it was rewritten intact
    assert files.sha256(train.read_bytes()) == files.read_json(train.with_suffix(".json"))["sha256"]

    phn = next((root / "TEST").rglob("MDAB0/SX*.PHN"))
    phn.write_text(phn.read_text() + "\n")  # a changed file (size, mtime) is a new key, not a stale hit
    timit.load(str(root))
    assert calls == [18, 6] and len(list(own_cache.rglob("*.pt"))) == 4


# --- through the project -------------------------------------------------------------------------

def test_splits_carry_the_dev_set_lengths_and_fold_through_the_object_store(corpus):
    splits = distill.data.load("timit", str(corpus[0]), args={"context": 3})
    assert splits.shape == (3, 41, 7) and splits.val_lengths.sum() == len(splits.val_x)
    transfer = distill.data.transfer_set(splits, views=0)
    assert transfer.x is splits.train_x and torch.equal(transfer.source, torch.arange(len(splits.train_x)))
    again, back = ray_shared.get(ray_shared.pack(splits, transfer))
    assert back.x is again.train_x and torch.equal(again.fold, splits.fold)
    assert torch.equal(again.test_lengths, splits.test_lengths) and torch.equal(again.val_x[:], splits.val_x[:])
    for name in ("train_lengths", "train_phones", "val_phones", "test_phones", "train_segments"):
        assert torch.equal(getattr(again, name), getattr(splits, name)), name
    assert again.val_x.stored.dtype == torch.float16 and again.val_x.context == 3
    images = distill.data.load("digits", val_size=100)
    assert images.val_lengths is None and images.fold is None
    assert ray_shared.get(ray_shared.pack(images, distill.data.transfer_set(images, 1)))[0].fold is None


def test_data_set_arguments_are_checked():
    with pytest.raises(UserError, match="bad data set arguments"):
        distill.data.load("digits", args={"context": 7})  # only timit takes a context
    with pytest.raises(UserError, match="context=-1 must be >= 0"):
        distill.data.load("timit", "/nonexistent", args={"context": -1})


def test_student_rows_carry_phone_error_rates(corpus):
    sweep = load_sweep("sweeps/timit.py", "smoke")
    splits, transfer = experiment.prepare(dataclasses.replace(sweep.data, root=str(corpus[0])))
    cell = sweep.cells()[-1]
    assert cell.target == "labels"
    row = experiment.run_student(cell, splits, transfer, None, None)
    for key in ("val_per", "test_per", "val_collapse_per", "test_collapse_per", "val_fer", "test_fer"):
        assert math.isfinite(row[key]) and row[key] >= 0, key
    assert row["decode_lm_weight"] > 0 and math.isfinite(row["decode_insertion_penalty"])
    assert 0 <= row["test_fer"] <= row["test_error"]  # folding can only merge classes
    digits = distill.data.load("digits", val_size=100)
    assert "test_per" not in experiment.run_student(StudentConfig(hidden=8, target="labels"), digits,
                                                    distill.data.transfer_set(digits, 0), None, None)


def oracle_logits(targets: torch.Tensor, seed: int, flip: float = 0.0) -> torch.Tensor:
    """(F, 183) logits of a net that knows each frame's target (+8 and N(0, 1) noise), but for a `flip`
    fraction of frames whose argmax is a random wrong class."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(targets), speech.CLASSES, generator=gen)
    logits[torch.arange(len(targets)), targets] += 8
    flipped = (torch.rand(len(targets), generator=gen) < flip).nonzero()[:, 0]
    other = (targets[flipped] + torch.randint(1, speech.CLASSES, (len(flipped),), generator=gen)) % speech.CLASSES
    logits[flipped, other] += 20
    return logits


def test_decoded_per_shrugs_off_flipped_frames_that_collapse_per_counts(corpus):
    """The synthesized corpus, frames right but for 5% flipped at random: frame collapse turns every flip into
    insertions, decoding (HMMs, bigram, weights chosen on dev) barely moves. Clean frames do not score 0
    decoded: the reference is the .PHN itself, whose phones shorter than 3 frames no 3-state HMM can emit."""
    splits = distill.data.load("timit", str(corpus[0]))
    per = {}
    for flip in (0.0, 0.05):
        logits = {s: oracle_logits(splits.split(s)[1], seed, flip) for seed, s in enumerate(("val", "test"))}
        per[flip] = experiment.speech_scores(splits, logits)
    clean, flipped = per[0.0], per[0.05]
    print(f"\ncore test, 5% frames flipped: collapse PER {clean['test_collapse_per']:.3f} -> "
          f"{flipped['test_collapse_per']:.3f}, decoded PER {clean['test_per']:.3f} -> {flipped['test_per']:.3f}")
    assert clean["test_collapse_per"] == 0 and flipped["test_collapse_per"] > 0.3
    assert clean["test_per"] < 0.2 and flipped["test_per"] - clean["test_per"] < 0.03
    assert flipped["test_fer"] == pytest.approx(0.05, abs=0.02)


def test_timit_shaped_carries_transcriptions_that_match_its_frames():
    """The synthetic data set decodes like TIMIT: each utterance's transcription is its runs' phones, each
    train frame knows its run, and frames that are right decode to nearly its transcriptions."""
    splits = distill.data.load("timit-shaped", args={"frames": 3000})
    frames = zip((splits.train_y // 3).split(splits.train_lengths.tolist()),
                 splits.train_segments.split(splits.train_lengths.tolist()),
                 speech.unpad_sequences(splits.train_phones), strict=True)
    for phone, seg, seq in frames:
        starts = torch.cat([torch.tensor([True]), seg[1:] != seg[:-1]])
        assert phone[starts].tolist() == seq and seg[-1] == len(seq) - 1
    logits = {s: oracle_logits(splits.split(s)[1], seed) for seed, s in enumerate(("val", "test"))}
    scores = experiment.speech_scores(splits, logits)
    assert scores["test_per"] < 0.05 and scores["val_per"] < 0.05


def test_decoding_weights_are_chosen_on_dev_without_reading_test(corpus):
    """Poison test (random logits, and references of another utterance order): the LM weight, the penalty and
    the dev PER stay exactly as they were; only the test PER changes."""
    splits = distill.data.load("timit", str(corpus[0]))
    val = oracle_logits(splits.val_y, 0, flip=0.05)
    clean = experiment.speech_scores(splits, {"val": val, "test": oracle_logits(splits.test_y, 1)})
    poisoned = dataclasses.replace(splits, test_phones=splits.test_phones.flip(0))
    garbage = torch.randn(len(splits.test_y), speech.CLASSES, generator=torch.Generator().manual_seed(2))
    dirty = experiment.speech_scores(poisoned, {"val": val, "test": garbage})
    chosen = ("decode_lm_weight", "decode_insertion_penalty", "val_per", "val_collapse_per")
    assert {k: dirty[k] for k in chosen} == {k: clean[k] for k in chosen}
    assert dirty["test_per"] > clean["test_per"] + 0.3
    assert experiment.speech_scores(splits, {"val": val}).keys() == {"val_per", "val_collapse_per", "val_fer",
                                                                      "decode_lm_weight", "decode_insertion_penalty"}


def test_realigned_targets_keep_every_phone_boundary_and_move_states(corpus):
    """Forced alignment under a net whose state 0 always lasts one frame: every frame keeps its phone and every
    .PHN segment stays where it was (two segments of one phone side by side included), while the states move
    off the equal thirds to follow the net."""
    splits = distill.data.load("timit", str(corpus[0]))
    y, seg = splits.train_y, splits.train_segments
    # Each segment's wanted states: 0 for its first frame, 2 for its last third, 1 between.
    starts = torch.ones(len(y), dtype=torch.bool)
    starts[1:] = seg[1:] != seg[:-1]
    starts[torch.cumsum(splits.train_lengths, 0)[:-1]] = True
    first = starts.nonzero()[:, 0]
    size = torch.diff(first, append=torch.tensor([len(y)]))
    offset = torch.arange(len(y)) - first.repeat_interleave(size)
    n = size.repeat_interleave(size)
    wanted = torch.where(offset == 0, 0, torch.where(3 * offset >= 2 * n, 2, 1))
    wanted = torch.where(n >= 3, wanted, (2 * offset + 1) * 3 // (2 * n))  # shorter ones: the third of each centre
    new = experiment.realigned_targets(splits, oracle_logits(y // 3 * 3 + wanted, 0))
    assert torch.equal(new // 3, y // 3)
    assert torch.equal(new, y // 3 * 3 + wanted)
    moved = (new != y) & (n >= 6)
    assert moved.float().mean() > 0.1  # thirds and the net disagree on many frames
    # Every segment still runs 0 -> 1 -> 2 (for >= 3 frames): states never go back within a segment.
    same = ~starts[1:]
    assert ((new[1:] % 3 >= new[:-1] % 3) | ~same).all()


def test_realign_under_a_trained_member_changes_only_states(corpus):
    """One pass as the teacher phase would run it: a member trained on the thirds, its train logits, new
    targets. Phones, every other field and the transfer set's view of the labels follow."""
    sweep = load_sweep("sweeps/timit.py", "smoke")
    splits, transfer = experiment.prepare(dataclasses.replace(sweep.data, root=str(corpus[0])))
    teacher = dataclasses.replace(sweep.teachers[0], train=dataclasses.replace(sweep.teachers[0].train, epochs=1))
    model, _ = experiment.train_member(teacher, 0, splits, transfer)
    # As pipeline.realigned does, on the member's train-frame logits (there read from its cache).
    again = dataclasses.replace(splits, train_y=experiment.realigned_targets(splits, infer(model, splits.train_x)))
    assert torch.equal(again.train_y // 3, splits.train_y // 3) and not torch.equal(again.train_y, splits.train_y)
    assert again.train_x is splits.train_x and again.test_y is splits.test_y
    x, y, _ = experiment.member_task(teacher, 1, again, transfer)
    assert torch.equal(y, again.train_y[transfer.source])


@pytest.mark.ray
def test_smoke_sweep_runs_end_to_end_through_ray(ray_local, corpus, tmp_path):
    argv = ["run", "sweeps/timit.py", "--variant", "smoke", "--data-root", str(corpus[0]), "--storage", str(tmp_path)]
    assert main(argv) == 0
    frame = results.load(tmp_path / "timit-smoke")
    assert sorted(frame["target"]) == ["labels", "mimic"] and set(frame["status"]) == {"ok"}
    assert (frame["params"] == 1845 * 16 + 16 * 128 + 128 + 128 * 183 + 183).all()
    assert frame["test_error"].between(0, 1).all() and frame["test_fer"].between(0, 1).all()
    assert (frame["test_per"] >= 0).all() and np.isfinite(frame["test_per"]).all()  # decoded
    assert (frame["test_collapse_per"] >= 0).all() and frame["decode_lm_weight"].notna().all()
    manifest = files.read_json(cache.cache_paths(tmp_path / "timit-smoke", "ecnn")[1])
    assert manifest["shapes"]["transfer"][2] == 183 and len(manifest["members"]) == 2
    assert 0 <= manifest["ensemble"]["test_per"] and 0 <= manifest["ensemble"]["test_fer"] <= 1
    assert "decode_lm_weight" in manifest["ensemble"] and "test_collapse_per" in manifest["ensemble"]
    assert all(0 <= m["test_per"] and 0 <= m["test_fer"] <= m["test_error"] for m in manifest["members"])
    # The report names every teacher's architecture and size from what the run recorded (no lookup table).
    member = files.read_json(cache.member_dir(tmp_path / "timit-smoke", "ecnn", 0) / "result.json")
    text = report.write(tmp_path / "timit-smoke").read_text()
    assert member["architecture"] == "8c3-p-64-183" and member["params"] > 0
    assert f"| {member['architecture']} | {member['params']:,} |" in text


def test_realign_trains_an_aligner_then_every_net_on_its_alignment(corpus, tmp_path):
    """DataConfig(realign=True) through the pipeline (--local): member 0 of the first teacher trains on the thirds
    (the aligner), its logits realign the states once, and the members and students train on that; the record
    names the alignment, and a second run reuses it."""
    sweep = load_sweep("sweeps/timit.py", "smoke")
    short = dataclasses.replace(sweep.teachers[0].train, epochs=2)
    sweep = dataclasses.replace(
        sweep, data=dataclasses.replace(sweep.data, root=str(corpus[0]), realign=True),
        teachers=(dataclasses.replace(sweep.teachers[0], train=short),),
        student=dataclasses.replace(sweep.student, train=dataclasses.replace(sweep.student.train, epochs=2)))
    splits, transfer = experiment.prepare(sweep.data)
    logs: list[str] = []
    pipeline.run(sweep, tmp_path, local.Executor(sweep, tmp_path, splits, transfer, logs.append), "run", logs.append)
    aligner = files.read_json(cache.member_dir(tmp_path, "ecnn-aligner", 0) / "result.json")
    member = files.read_json(cache.member_dir(tmp_path, "ecnn", 0) / "result.json")
    assert aligner["identity"]["data"]["realign"] is False and member["identity"]["data"]["realign"] is True
    (path,) = (tmp_path / "alignment").glob("*.pt")
    targets = torch.load(path, weights_only=True)["targets"]
    assert torch.equal(targets // 3, splits.train_y // 3) and not torch.equal(targets, splits.train_y)
    (run,) = (tmp_path / "runs").glob("*.json")
    assert files.read_json(run)["alignment"]["frames_changed"] == float((targets != splits.train_y).float().mean())
    assert set(results.load(tmp_path)["status"]) == {"ok"}
    before = path.stat().st_mtime_ns
    pipeline.run(sweep, tmp_path, local.Executor(sweep, tmp_path, splits, transfer, logs.append), "run", logs.append)
    assert path.stat().st_mtime_ns == before and any("not retrained" in line for line in logs)


def test_realign_needs_transcriptions(tmp_path):
    sweep = SweepConfig(name="x", data=DataConfig(name="digits", realign=True), teachers=(TeacherConfig(name="t"),))
    splits, transfer = experiment.prepare(sweep.data)
    with pytest.raises(UserError, match=r"realign=True\) needs a speech data set"):
        pipeline.run(sweep, tmp_path, local.Executor(sweep, tmp_path, splits, transfer), "teachers")


def test_a_partial_copy_is_named_in_the_run_record(corpus):
    sweep = load_sweep("sweeps/timit.py", "smoke")
    with pytest.warns(UserWarning, match="not the standard corpus"):
        splits, _ = experiment.prepare(dataclasses.replace(sweep.data, root=str(corpus[0])))
    (note,) = record.build(sweep, ["distill", "run"], splits)["data"]["notes"]
    assert "train has 6 speakers / 18 utterances, not 462 / 3696" in note and "\n" not in note
