"""SVHN (cropped digits) through torchvision, from a local data directory ROOT."""

from torchvision.datasets import SVHN

from distill.datasets._torchvision import read

FILES = "ROOT/train_32x32.mat and ROOT/test_32x32.mat"
PRESENT = "train_32x32.mat"  # there when the user put the files in place: never download over it


def load(root: str | None = None):
    return read("svhn", lambda r, train, dl: SVHN(r, split="train" if train else "test", download=dl), FILES,
                PRESENT, 10, False, root)
