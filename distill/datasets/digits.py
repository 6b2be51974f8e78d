"""scikit-learn's 1,797 real 8x8 digits (pixel values 0..16), for fast tests."""

import torch
from sklearn.datasets import load_digits

from distill.datasets import Raw


def load(root: str | None = None) -> Raw:
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    return Raw(train_x=x, train_y=y, test_x=None, test_y=None, classes=10, flips=False, test_size=360)
