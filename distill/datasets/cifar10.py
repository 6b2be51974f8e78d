"""CIFAR-10 through torchvision, from a local data directory ROOT."""

from torchvision.datasets import CIFAR10

from distill.datasets._torchvision import read

FILES = "ROOT/cifar-10-batches-py/ (extract cifar-10-python.tar.gz there)"
PRESENT = "cifar-10-batches-py"  # there when the user put the files in place: never download over it


def load(root: str | None = None):
    return read("cifar10", lambda r, train, dl: CIFAR10(r, train=train, download=dl), FILES, PRESENT, 10, True, root)
