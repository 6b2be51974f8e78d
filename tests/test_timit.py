"""TIMIT: the reader on a synthesized TIMIT-format corpus, features against torchaudio, targets, folding,
PER on hand-made cases, the feature cache, and the smoke sweep end to end through Ray."""

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
from distill import cache, experiment, files, ray_shared, report, results, speech
from distill.__main__ import main
from distill.config import StudentConfig, load_sweep
from distill.datasets import timit
from distill.errors import UserError


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


@pytest.mark.parametrize("damage", ["missing", "no TEST", "no core test", "bad phone", "one level up"])
def test_missing_or_incomplete_root_is_one_line_user_error(damage, corpus, tmp_path):
    root = tmp_path / "TIMIT"
    if damage == "one level up":  # the LDC disc's layout: the user passes the folder that holds TIMIT/
        shutil.copytree(corpus[0], root / "TIMIT")
    elif damage != "missing":
        shutil.copytree(corpus[0], root)
    if damage == "no TEST":
        shutil.rmtree(root / "TEST")
    if damage == "no core test":
        for name in ("MDAB0", "FELC0"):
            shutil.rmtree(root / "TEST" / "DR1" / name)
    if damage == "bad phone":
        phn = next((root / "TRAIN").rglob("SX*.PHN"))
        phn.write_text(phn.read_text().replace(" h#\n", " silence\n", 1))
    with pytest.raises(UserError) as e:
        distill.data.load("timit", str(root))
    msg = str(e.value)
    assert "\n" not in msg
    expected = {"missing": f"TIMIT not found at {root}", "no TEST": f"TIMIT not found at {root}",
                "no core test": "no utterances of the core-test speakers", "bad phone": "silence': expected",
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
    for key in ("val_per", "test_per", "val_fer", "test_fer"):
        assert math.isfinite(row[key]) and row[key] >= 0, key
    assert 0 <= row["test_fer"] <= row["test_error"]  # folding can only merge classes
    digits = distill.data.load("digits", val_size=100)
    assert "test_per" not in experiment.run_student(StudentConfig(hidden=8, target="labels"), digits,
                                                    distill.data.transfer_set(digits, 0), None, None)


@pytest.mark.ray
def test_smoke_sweep_runs_end_to_end_through_ray(ray_local, corpus, tmp_path):
    argv = ["run", "sweeps/timit.py", "--variant", "smoke", "--data-root", str(corpus[0]), "--storage", str(tmp_path)]
    assert main(argv) == 0
    frame = results.load(tmp_path / "timit-smoke")
    assert sorted(frame["target"]) == ["labels", "mimic"] and set(frame["status"]) == {"ok"}
    assert (frame["params"] == 1845 * 16 + 16 * 128 + 128 + 128 * 183 + 183).all()
    assert frame["test_error"].between(0, 1).all() and frame["test_fer"].between(0, 1).all()
    assert (frame["test_per"] >= 0).all() and np.isfinite(frame["test_per"]).all()
    manifest = files.read_json(cache.cache_paths(tmp_path / "timit-smoke", "ecnn")[1])
    assert manifest["shapes"]["transfer"][2] == 183 and len(manifest["members"]) == 2
    assert 0 <= manifest["ensemble"]["test_per"] and 0 <= manifest["ensemble"]["test_fer"] <= 1
    assert all(0 <= m["test_per"] and 0 <= m["test_fer"] <= m["test_error"] for m in manifest["members"])
    # The report names every teacher's architecture and size from what the run recorded (no lookup table).
    member = files.read_json(cache.member_dir(tmp_path / "timit-smoke", "ecnn", 0) / "result.json")
    text = report.write(tmp_path / "timit-smoke").read_text()
    assert member["architecture"] == "8c3-p-64-183" and member["params"] > 0
    assert f"| {member['architecture']} | {member['params']:,} |" in text
