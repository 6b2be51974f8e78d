"""distill.data: real data sets split, normalised and augmented as documented (CPU only, no network)."""

import collections
import dataclasses
import os
import pickle
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

import distill.data
from distill.datasets import digits as digits_module
from distill.datasets import mnist5k
from distill.errors import UserError


@pytest.fixture(scope="module")
def mnist():
    return distill.data.load("mnist5k", val_size=500, seed=0)


@pytest.fixture(scope="module")
def digits():
    return distill.data.load("digits", val_size=100, seed=0)


def unnormalise(s: distill.data.Splits, name: str, hi: float) -> torch.Tensor:
    """Raw pixels of one split, recovered without knowing the loader's statistics: train's raw pixels
    span exactly [0, hi] (background 0, full ink), so its normalised min/max give the affine map back."""
    lo_n, hi_n = s.train_x[:].min().double(), s.train_x[:].max().double()
    raw = (s.split(name)[0][:].double() - lo_n) * hi / (hi_n - lo_n)
    # Only if this split was normalised with *train's* statistics do we get integers back.
    assert (raw - raw.round()).abs().max() < 1e-3
    return raw.round()


def rows(x: torch.Tensor, y: torch.Tensor) -> collections.Counter:
    """Multiset of (image bytes, label): duplicates in the raw data are counted, not merged."""
    return collections.Counter((img.to(torch.uint8).numpy().tobytes(), int(lab)) for img, lab in zip(x, y, strict=True))


# --- mnist5k -------------------------------------------------------------------------------------

def test_mnist5k_splits_partition_the_raw_digits(mnist):
    assert (len(mnist.train_x), len(mnist.val_x), len(mnist.test_x)) == (3500, 500, 1000)
    assert mnist.shape == (1, 28, 28) and mnist.classes == 10 and not mnist.flips
    raw = mnist5k.load()
    parts = [rows(unnormalise(mnist, n, 255), mnist.split(n)[1]) for n in ("train", "val", "test")]
    # Every raw (image, label) is used exactly once across the three splits: disjoint and complete.
    assert parts[0] + parts[1] + parts[2] == rows(raw.train_x, raw.train_y)


def test_mnist5k_classes_balanced_in_every_split(mnist):
    # The raw file is sorted by class; an unshuffled split would miss classes entirely.
    for name, least in (("train", 250), ("val", 20), ("test", 30)):
        counts = torch.bincount(mnist.split(name)[1], minlength=10)
        assert len(counts) == 10 and counts.min() >= least, (name, counts)


def test_mnist5k_normalised_with_train_statistics(mnist):
    assert abs(mnist.train_x[:].mean()) < 1e-4 and abs(mnist.train_x[:].std() - 1) < 1e-4
    # val/test are shifted by train's mean, not their own, so their means are close to but not 0.
    for name in ("val", "test"):
        x = mnist.split(name)[0][:]
        assert 1e-4 < abs(x.mean()) < 0.2 and abs(x.std() - 1) < 0.2


def test_mnist5k_seeded(mnist):
    again = distill.data.load("mnist5k", val_size=500, seed=0)
    for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(mnist, f)[:], getattr(again, f)[:]), f
    other = distill.data.load("mnist5k", val_size=500, seed=1)
    assert rows(unnormalise(other, "val", 255), other.val_y) != rows(unnormalise(mnist, "val", 255), mnist.val_y)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_device_honoured(device):
    s = distill.data.load("digits", val_size=100, device=torch.device(device))
    for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert getattr(s, f).device.type == device, f


# --- digits and argument checks ------------------------------------------------------------------

def test_digits_sizes(digits):
    # 1,797 images: 360 carved out as test, then val out of the rest.
    assert (len(digits.train_x), len(digits.val_x), len(digits.test_x)) == (1797 - 360 - 100, 100, 360)
    assert digits.shape == (1, 8, 8) and digits.classes == 10 and not digits.flips
    raw = digits_module.load()
    parts = [rows(unnormalise(digits, n, 16), digits.split(n)[1]) for n in ("train", "val", "test")]
    assert parts[0] + parts[1] + parts[2] == rows(raw.train_x, raw.train_y)


@pytest.mark.parametrize("val_size", [0, 1797 - 360])
def test_bad_val_size_is_user_error(val_size):
    with pytest.raises(UserError, match="val_size"):
        distill.data.load("digits", val_size=val_size)


def test_unknown_name_lists_available():
    with pytest.raises(UserError) as e:
        distill.data.load("no-such-set")
    assert all(n in str(e.value) for n in ("no-such-set", "mnist5k", "digits", "cifar10"))


# --- augment / transfer_set ----------------------------------------------------------------------

def shifted(img: torch.Tensor, oy: int, ox: int, fill: float) -> torch.Tensor:
    """img (C, H, W) with its content moved by (oy, ox), `fill` where nothing moved in."""
    out, (_, h, w) = torch.full_like(img, fill), img.shape
    out[:, max(oy, 0):h + min(oy, 0), max(ox, 0):w + min(ox, 0)] = \
        img[:, max(-oy, 0):h + min(-oy, 0), max(-ox, 0):w + min(-ox, 0)]
    return out


def matches(view: torch.Tensor, src: torch.Tensor, reach: int, fill: float) -> set:
    """Every (flipped, oy, ox) within `reach` that turns src into exactly `view` (brute force)."""
    return {(f, oy, ox) for f in (False, True) for oy in range(-reach, reach + 1)
            for ox in range(-reach, reach + 1)
            if torch.equal(view, shifted(src.flip(2) if f else src, oy, ox, fill))}


def test_transfer_set_layout_and_seed(digits):
    n = len(digits.train_x)
    t = distill.data.transfer_set(digits, views=3, shift=2, seed=0)
    assert t.x.shape == (n * 4, 1, 8, 8) and t.source.dtype == torch.int64
    assert t.x.stored.dtype == digits.train_x.stored.dtype  # views are stored as compactly as train
    assert torch.equal(t.x[:n], digits.train_x[:])
    assert torch.equal(t.source, torch.arange(n).repeat(4))
    assert torch.equal(t.x[:], distill.data.transfer_set(digits, views=3, shift=2, seed=0).x[:])
    assert not torch.equal(t.x[:], distill.data.transfer_set(digits, views=3, shift=2, seed=1).x[:])
    assert not torch.equal(t.x[n:2 * n], t.x[2 * n:3 * n])  # each view draws fresh offsets


@pytest.mark.parametrize("flips", [False, True])
def test_views_are_zero_padded_shifts(digits, flips):
    small = dataclasses.replace(digits, train_x=digits.train_x.take(torch.arange(20)), train_y=digits.train_y[:20],
                                flips=flips)
    shift, n = 2, 20
    t = distill.data.transfer_set(small, views=2, shift=shift, seed=0)
    x = small.train_x
    # The padding is the train mean as stored (fp16 here): zero once normalised, but for its rounding.
    fill = ((distill.data.pad_value(x).float() - x.mean) / x.std).item()
    assert abs(fill) < 1e-3
    found = []
    for i in range(n, len(t.x)):
        # Search one pixel further than allowed: a match out there would mean a too-large shift.
        # Background pixels are not 0 after normalisation, so the padding pins the offset down.
        m = matches(t.x[i:i + 1][0], x[t.source[i:i + 1]][0], shift + 1, fill)
        assert m and all(max(abs(oy), abs(ox)) <= shift for _, oy, ox in m), (i, m)
        found.append(m)
    assert len({next(iter(m))[1:] for m in found}) > 5  # offsets vary, not all (0, 0)
    only_flipped = [m for m in found if all(f for f, _, _ in m)]
    if flips:  # about half the views are mirrored (40 views: all-or-none has chance 2**-39)
        assert 0 < len(only_flipped) < len(found)
    else:
        assert all(any(not f for f, _, _ in m) for m in found)


# --- CIFAR-10 through torchvision's own reader ---------------------------------------------------

def write_cifar(root, per_batch=20, seed=0):
    """A miniature cifar-10-batches-py/ in the real on-disk format; returns (train, test) (pixels, labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    out = []
    for names in ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]):
        xs, ys = [], []
        for name in names:
            # Rows are R plane, G plane, B plane (each 32x32 row-major); random pixels keep channels distinct.
            x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, 10, per_batch)]
            # The real files are Python 2 pickles whose str keys torchvision reads back as str
            # (pickle.load(encoding="latin1")), so a Python 3 fixture must use str keys, not bytes.
            with open(folder / name, "wb") as f:
                pickle.dump({"data": x, "labels": y, "batch_label": name,
                             "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}, f)
            xs.append(x)
            ys.extend(y)
        out.append((np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys)))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, f)
    return out


@pytest.fixture
def no_md5(monkeypatch):
    # torchvision checks every file (and batches.meta) against the md5 of the real CIFAR-10 release via
    # cifar.check_integrity; a fixture can't match those, so check only that the file exists.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def test_cifar10_round_trip(tmp_path, no_md5):
    (train_raw, train_lab), (test_raw, test_lab) = write_cifar(tmp_path)
    s = distill.data.load("cifar10", root=str(tmp_path), val_size=10)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (90, 10, 20)
    assert s.shape == (3, 32, 32) and s.classes == 10 and s.flips
    # Which fixture image each train/val row is, without the loader's statistics: the first 8 values
    # of a row are red pixels, normalised by one increasing map, so sorting rows by them (lexicographic,
    # first pixel first) orders the normalised rows exactly as it orders the raw fixture images.
    both = torch.cat([s.train_x[:], s.val_x[:]]).flatten(1)
    fixture_rank = np.lexsort(train_raw.reshape(100, -1)[:, :8].T[::-1])
    loaded_rank = np.lexsort(both[:, :8].numpy().T[::-1])
    index = np.empty(100, int)
    index[loaded_rank] = fixture_rank  # row r of `both` is fixture image index[r]
    train_idx, val_idx = index[:90], index[90:]
    # Statistics recomputed from the fixture's train images only (val and test must not inform them).
    ref = torch.from_numpy(train_raw[train_idx]).double()
    mean, std = ref.mean(dim=(0, 2, 3), keepdim=True), ref.std(dim=(0, 2, 3), keepdim=True)
    for x, raw, y, lab in ((s.train_x, train_raw[train_idx], s.train_y, train_lab[train_idx]),
                           (s.val_x, train_raw[val_idx], s.val_y, train_lab[val_idx]),
                           (s.test_x, test_raw, s.test_y, test_lab)):
        back = x[:].double() * std + mean  # CHW, as the fixture's R, G, B planes
        assert (back - torch.from_numpy(raw).double()).abs().max() < 0.01
        assert torch.equal(y, torch.from_numpy(lab))


def test_cifar10_missing_is_one_line_user_error(tmp_path, monkeypatch):
    calls = []

    def offline(*args, **kwargs):  # no internet, and never a real download of 170 MB in a test
        calls.append(args)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as e:
        distill.data.load("cifar10", root=str(tmp_path))
    msg = str(e.value)
    assert calls, "the loader should try torchvision's download before giving up"
    assert "\n" not in msg and "cifar10" in msg and "cifar-10-batches-py" in msg and str(tmp_path) in msg


def test_compact_store_holds_uint8_images_and_batches_them_exactly(mnist):
    full = distill.data.load("mnist5k", val_size=500, seed=0, compact=False)
    assert mnist.train_x.stored.dtype == torch.uint8 and full.train_x.stored.dtype == torch.float32
    assert full.train_x.nbytes > 3.9 * mnist.train_x.nbytes  # a quarter of the bytes
    for f in ("train_x", "val_x", "test_x"):  # normalised per batch, the same values as from fp32
        torch.testing.assert_close(getattr(mnist, f)[:], getattr(full, f)[:], rtol=0, atol=1e-6)
    index = torch.tensor([7, 0, 3499, 7])
    assert torch.equal(mnist.train_x[index], mnist.train_x[:][index])  # any order, repeats
    assert torch.equal(mnist.train_x.take(index)[1:3], mnist.train_x[:][index[1:3]])
