"""CIFAR-100 through torchvision, from a local data directory ROOT."""

from torchvision.datasets import CIFAR100

from distill.datasets._torchvision import read

FILES = "ROOT/cifar-100-python/ (extract cifar-100-python.tar.gz there)"
PRESENT = "cifar-100-python"  # there when the user put the files in place: never download over it


def load(root: str | None = None):
    return read("cifar100", lambda r, train, dl: CIFAR100(r, train=train, download=dl), FILES, PRESENT, 100, True, root)
