"""MNIST through torchvision, from a local data directory ROOT."""

from torchvision.datasets import MNIST

from distill.datasets._torchvision import read

FILES = "the MNIST idx files (train-images-idx3-ubyte, ...) in ROOT/MNIST/raw/"
PRESENT = "MNIST/raw"  # there when the user put the files in place: never download over it


def load(root: str | None = None):
    return read("mnist", lambda r, train, dl: MNIST(r, train=train, download=dl), FILES, PRESENT, 10, False, root)
