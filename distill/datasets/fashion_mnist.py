"""Fashion-MNIST through torchvision, from a local data directory ROOT."""

from torchvision.datasets import FashionMNIST

from distill.datasets._torchvision import read

FILES = "the Fashion-MNIST idx files in ROOT/FashionMNIST/raw/"
PRESENT = "FashionMNIST/raw"  # there when the user put the files in place: never download over it


def load(root: str | None = None):
    return read("fashion-mnist", lambda r, train, dl: FashionMNIST(r, train=train, download=dl), FILES, PRESENT, 10,
                False, root)
