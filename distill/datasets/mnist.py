"""MNIST through torchvision, from a local data directory ROOT."""

from torchvision.datasets import MNIST

from distill.datasets._torchvision import read

FILES = "the MNIST idx files (train-images-idx3-ubyte, ...) in ROOT/MNIST/raw/"


def load(root: str | None = None):
    return read("mnist", lambda r, train, dl: MNIST(r, train=train, download=dl), FILES, 10, False, root)
