"""TIMIT (LDC93S1) read from the user's own copy in its original layout, as frames of speech features.

Layout: ROOT/TRAIN|TEST/DR1..DR8/<speaker>/<utterance>.WAV|.PHN (NIST SPHERE, 16 kHz, 16-bit PCM; the
.PHN lines are `begin_sample end_sample phone`); upper or lower case. The standard splits, SA sentences
dropped everywhere: train = every TRAIN speaker (462), val = the 50-speaker dev set and test = the
24-speaker core test set, both from TEST (the other 92 TEST speakers are not used).

Each example is one 10 ms frame as an image (3, 41, 2c+1): channels static / delta / delta-delta,
height log energy + 40 log mel bands, width the frame and its +-c neighbours (c = 7: 15 frames, 1,845
inputs when flattened; the 2-D `cnn` convolves over frequency x time). Frames are kept once each and the
context is gathered per batch (`distill.data.Inputs`). Features are normalised with one global mean and
standard deviation per feature (123 of them) over all training frames (`distill.data.load`'s per-channel
standardisation then changes them by almost nothing). Labels are the
183 phone-state classes of `distill.speech`. Every split also carries its .PHN phone sequences, which
decoding is estimated from (train) and scored against (dev, core test), and train the .PHN segment of
each frame, for forced alignment (`distill.decode`).

A copy whose speaker or utterance counts differ from the standard ones (`STANDARD`) loads with a warning;
a split with no utterances at all is an error.

Extraction is the slow part, so its result per split is cached under $DISTILL_CACHE/timit (default
~/.cache/distill/timit; never inside the TIMIT copy, which may be read-only), named by a hash of the
copy's resolved path, its files' names, sizes and modification times, and the feature settings. A cache
file whose sha256 does not match its manifest is recomputed and rewritten.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch

from distill import files, speech
from distill.datasets import Raw, default_root
from distill.errors import UserError

CONTEXT = 7  # frames each side: 15 frames x 123 features = 1,845 inputs
# The standard 50-speaker dev set and 24-speaker core test set (as in Kaldi's egs/timit/s5/conf).
DEV_SPEAKERS = frozenset("""
faks0 fdac1 fjem0 mgwt0 mjar0 mmdb1 mmdm2 mpdf0 fcmh0 fkms0 mbdg0 mbwm0 mcsh0 fadg0 fdms0 fedw0 mgjf0
mglb0 mrtk0 mtaa0 mtdt0 mthc0 mwjg0 fnmr0 frew0 fsem0 mbns0 mmjr0 mdls0 mdlf0 mdvc0 mers0 fmah0 fdrw0
mrcs0 mrjm4 fcal1 mmwh0 fjsj0 majc0 mjsw0 mreb0 fgjd0 fjmg0 mroa0 mteb0 mjfc0 mrjr0 fmml0 mrws1""".split())
CORE_TEST_SPEAKERS = frozenset("""
mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 fnlp0 mcmj0 mjdh0
fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0""".split())
# Everything that changes the cached features; bump `version` when the extraction code changes.
SETTINGS = {"version": 2, "mel": speech.MEL, "frame_length": speech.FRAME_LENGTH,
            "frame_shift": speech.FRAME_SHIFT, "window": "hamming", "energy": True,
            "delta_window": speech.DELTA_WINDOW, "states": speech.STATES, "phones": speech.PHONES}
# A full copy (SA dropped): speakers and utterances per split. Another count still trains, with a warning.
STANDARD = {"train": (462, 3696), "val": (50, 400), "test": (24, 192)}
FIX = "pass --data-root pointing at the folder that holds TRAIN/ and TEST/ (LDC93S1's layout)"


@dataclass(frozen=True)
class Utterance:
    speaker: str  # lower case, e.g. "fcjf0"
    name: str  # lower case, e.g. "sx127"
    wav: Path
    phn: Path


def child(folder: Path, name: str) -> Path | None:
    """The entry of `folder` called `name` in any case (TIMIT copies come upper or lower case)."""
    return next((p for p in sorted(folder.iterdir()) if p.name.lower() == name), None)


def find(root: str | Path) -> dict[str, list[Utterance]]:
    """The utterances of each split {'train', 'val', 'test'}, SA sentences left out, in a fixed order."""
    root = Path(root).expanduser()
    tops = {name: child(root, name) for name in ("train", "test")} if root.is_dir() else {}
    if not tops or None in tops.values():
        inner = child(root, "timit") if root.is_dir() else None  # the LDC disc nests TIMIT/TRAIN
        hint = f" (did you mean {inner}?)" if inner is not None and child(inner, "train") is not None else ""
        raise UserError(f"TIMIT not found at {root}{hint}: {FIX}")
    found: dict[str, list[Utterance]] = {}
    for top, folder in tops.items():
        utts = []
        for speaker in sorted(p for region in folder.iterdir()
                              if region.is_dir() and region.name.lower().startswith("dr")
                              for p in region.iterdir() if p.is_dir()):
            for wav in sorted(speaker.iterdir()):
                # One dot only: some copies add converted `SX1.WAV.wav` files beside the originals.
                if wav.suffix.lower() != ".wav" or wav.name.count(".") != 1 or wav.stem.lower().startswith("sa"):
                    continue
                phn = next((wav.with_suffix(s) for s in (".PHN", ".phn") if wav.with_suffix(s).exists()), None)
                if phn is None:
                    raise UserError(f"TIMIT at {root} is incomplete: {wav} has no .PHN file beside it; {FIX}")
                utts.append(Utterance(speaker.name.lower(), wav.stem.lower(), wav, phn))
        found[top] = utts
    splits = {"train": found["train"], "val": [u for u in found["test"] if u.speaker in DEV_SPEAKERS],
              "test": [u for u in found["test"] if u.speaker in CORE_TEST_SPEAKERS]}
    for split, utts in splits.items():
        if not utts:
            where = {"train": "TRAIN/", "val": "the dev-set speakers in TEST/", "test": "the core-test speakers "
                     "in TEST/"}[split]
            raise UserError(f"TIMIT at {root} has no utterances of {where} (e.g. TEST/DR1/MDAB0): {FIX}")
    if note := nonstandard(root, splits):
        warnings.warn(note, stacklevel=2)
    return splits


def nonstandard(root: str | Path, splits: dict[str, list[Utterance]]) -> str:
    """The one-line warning for a copy of other than the standard sizes ('' for a full copy)."""
    odd = size_mismatch(splits)
    return odd and f"TIMIT at {root} is not the standard corpus: {odd}; scores are not comparable with the paper's"


def size_mismatch(splits: dict[str, list[Utterance]]) -> str:
    """'' for a full copy, else each split whose speakers / utterances differ from `STANDARD`, in words."""
    found = {split: (len({u.speaker for u in utts}), len(utts)) for split, utts in splits.items()}
    return "; ".join(f"{split} has {found[split][0]} speakers / {found[split][1]} utterances, not {want[0]} / "
                     f"{want[1]}" for split, want in STANDARD.items() if found[split] != want)


def read(utt: Utterance) -> tuple[torch.Tensor, torch.Tensor]:
    """One utterance: (S,) float samples on the 16-bit scale, and its .PHN as (P, 3) int64 rows
    (begin sample, end sample, index into speech.PHONES)."""
    try:
        wave, rate = sf.read(utt.wav, dtype="int16")
    except (RuntimeError, sf.LibsndfileError) as e:
        raise UserError(f"cannot read {utt.wav} ({e}): TIMIT's .WAV files must be NIST SPHERE PCM (decompress "
                        "shorten-compressed ones with sph2pipe)") from None
    if rate != speech.SAMPLE_RATE or wave.ndim != 1:
        raise UserError(f"{utt.wav} is {rate} Hz with shape {wave.shape}: TIMIT is 16 kHz mono")
    rows = []
    for n, line in enumerate(utt.phn.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in speech.PHONES:
            raise UserError(f"{utt.phn} line {n} is {line!r}: expected `begin end phone` with a TIMIT phone")
        rows.append((int(parts[0]), int(parts[1]), speech.PHONES.index(parts[2])))
    if not rows:
        raise UserError(f"{utt.phn} has no phones")
    return torch.from_numpy(wave).float(), torch.tensor(rows, dtype=torch.int64)


def extract(utts: list[Utterance]) -> dict[str, torch.Tensor]:
    """Features and targets of every frame, utterances back to back: feats (F, 3, 41) float32,
    targets (F,) int64, lengths (U,) int64 frames per utterance, segments (F,) int64 each frame's .PHN
    segment within its utterance, phones (U, L) int64 each .PHN's phone sequence (-1 padded)."""
    feats, targets, lengths, segs, phones = [], [], [], [], []
    # One utterance is a small tensor: with several threads on busy cores, fbank's ops spent 20-80x
    # longer waiting on each other than computing (measured: 100-150 ms vs 2-5 ms per utterance).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for utt in utts:
            wave, segments = read(utt)
            f = speech.features(wave)  # (T, 3, 41)
            feats.append(f)
            targets.append(speech.frame_targets(segments, len(f)))
            segs.append(speech.frame_segments(segments, len(f)))
            lengths.append(len(f))
            phones.append(segments[:, 2].tolist())  # every phone of the transcription, however short
    finally:
        torch.set_num_threads(threads)
    return {"feats": torch.cat(feats), "targets": torch.cat(targets),
            "lengths": torch.tensor(lengths, dtype=torch.int64), "segments": torch.cat(segs),
            "phones": speech.pad_sequences(phones)}


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_CACHE", "~/.cache/distill")).expanduser() / "timit"


def cache_key(root: str | Path, split: str, utts: list[Utterance]) -> str:
    """Hash of (the copy's resolved path, the split's files with sizes and mtimes, the feature settings)."""
    listing = [[str(p.relative_to(root)), (st := p.stat()).st_size, st.st_mtime_ns]
             for u in utts for p in (u.wav, u.phn)]
    return files.digest({"root": str(Path(root).resolve()), "split": split, "files": listing, "settings": SETTINGS})


def cached_extract(root: str | Path, split: str, utts: list[Utterance]) -> dict[str, torch.Tensor]:
    """`extract(utts)`, from the cache when a verified entry exists, else computed and cached."""
    key = cache_key(root, split, utts)
    pt, manifest = cache_dir() / f"{split}-{key}.pt", cache_dir() / f"{split}-{key}.json"
    if pt.exists() and manifest.exists():
        payload = pt.read_bytes()
        if files.sha256(payload) == files.read_json(manifest).get("sha256"):  # a damaged file is recomputed
            return files.load_tensors(payload, pt)["data"]  # the bytes just verified
    t0 = time.perf_counter()
    data = extract(utts)
    seconds = time.perf_counter() - t0
    payload = files.torch_bytes({"key": key, "data": data})
    files.write_bytes(pt, payload)
    files.write_json(manifest, {"key": key, "sha256": files.sha256(payload), "root": str(Path(root).resolve()),
                             "split": split, "utterances": len(utts), "frames": len(data["targets"]),
                             "seconds": seconds})  # written last: it commits the cache entry
    return data


def load(root: str | None = None, context: int = CONTEXT) -> Raw:
    """Train (TRAIN), val (dev set) and test (core test set) frames of the TIMIT copy at `root`
    (default $DISTILL_DATA/TIMIT), each frame once, (F, 3, 41); the model sees it with +-`context` neighbours
    within its utterance, gathered per batch (`distill.data.Inputs`): (3, 41, 2c+1)."""
    root = Path(root or Path(default_root()) / "TIMIT").expanduser()
    if context < 0:
        raise UserError(f"timit context={context} must be >= 0 (frames each side of the centre frame)")
    found = find(root)
    data = {split: cached_extract(root, split, utts) for split, utts in found.items()}
    train = data["train"]["feats"]
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)  # (3, 41): one per feature, train frames only

    def frames(split: str) -> torch.Tensor:
        # Normalised here, before the store rounds to fp16: raw log energies near 20 would keep 2 decimals.
        return (data[split]["feats"] - mean) / std

    return Raw(train_x=frames("train"), train_y=data["train"]["targets"], test_x=frames("test"),
               test_y=data["test"]["targets"], classes=speech.CLASSES, flips=False, val_x=frames("val"),
               val_y=data["val"]["targets"], val_lengths=data["val"]["lengths"],
               test_lengths=data["test"]["lengths"], train_lengths=data["train"]["lengths"], context=context,
               fold=speech.fold_table(), train_phones=data["train"]["phones"], val_phones=data["val"]["phones"],
               test_phones=data["test"]["phones"], train_segments=data["train"]["segments"],
               notes=tuple(n for n in [nonstandard(root, found)] if n))
