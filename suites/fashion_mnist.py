"""``fashion-mnist-mlp`` (GPU size): Fashion-MNIST through AdamQLR's MLP.

Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey-scale images of 10 clothing classes, in the
MNIST IDX format. Read from the data directory (``suites/datadir.py``), never downloaded::

    <data dir>/fashion-mnist/train-images-idx3-ubyte.gz   (or without .gz)
    <data dir>/fashion-mnist/train-labels-idx1-ubyte.gz
    <data dir>/fashion-mnist/t10k-images-idx3-ubyte.gz
    <data dir>/fashion-mnist/t10k-labels-idx1-ubyte.gz

(the file names of the official distribution, github.com/zalandoresearch/fashion-mnist).
Pixels are scaled to [0, 1] and flattened; the official 60,000 / 10,000 train/test split is our
train/validation split (AdamQLR carves 1/6 of the training set out for validation and keeps the
test set apart; a benchmark with frozen targets needs one fixed held-out split, and the official
test set is the one readers know).

Model and protocol after AdamQLR (docs/methods.md, "AdamQLR"): MLP 784-50-10 with ReLU,
softmax cross-entropy, batch 50, 10 epochs (12,000 steps), 15 minutes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from suites.datadir import data_dir
from suites.layers import Linear, ModelSpec, ReLU
from suites.loaders import read_idx
from suites.registry import register
from suites.spec import Budget, DataFile, Dataset, DataUnavailableError, Suite

FOLDER = "fashion-mnist"
FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "val_images": "t10k-images-idx3-ubyte",
    "val_labels": "t10k-labels-idx1-ubyte",
}
DESCRIPTIONS: dict[str, str] = {
    "train_images": "training images",
    "train_labels": "training labels",
    "val_images": "test images (the validation split)",
    "val_labels": "test labels (the validation split)",
}
DATA_FILES: tuple[DataFile, ...] = tuple(
    DataFile((f"{FOLDER}/{name}.gz", f"{FOLDER}/{name}"), f"Fashion-MNIST {DESCRIPTIONS[key]}")
    for key, name in FILES.items()
)


def load_fashion_mnist(root: Path | None = None) -> Dataset:
    """The four IDX files under ``root`` (default: the data directory) as a Dataset."""
    base = data_dir(root)
    arrays = {}
    for (key, _), spec in zip(FILES.items(), DATA_FILES, strict=True):
        path = spec.find(base)
        if path is None:
            raise DataUnavailableError(f"missing {spec.describe()} under {base}")
        arrays[key] = read_idx(path)
    out: list[np.ndarray] = []
    for split in ("train", "val"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[0] != labels.shape[0]:
            raise DataUnavailableError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
        out += [(images.reshape(len(images), -1) / np.float32(255.0)).astype(np.float32), labels.astype(np.int64)]
    return Dataset(*out)


FASHION_MNIST_MLP = register(
    Suite(
        name="fashion-mnist-mlp",
        version=1,
        description=(
            "Fashion-MNIST (60,000 / 10,000 28x28 images, 10 classes, official split), pixels/255; "
            "MLP 784-50-10 ReLU, softmax cross-entropy, batch 50, 10 epochs."
        ),
        paper="AdamQLR (Clarke & Hernandez-Lobato 2024): Fashion-MNIST MLP",
        model=ModelSpec((784,), (Linear(784, 50), ReLU(), Linear(50, 10))),
        source="official IDX files in the data directory (github.com/zalandoresearch/fashion-mnist)",
        likelihood="softmax_ce",
        batch_size=50,
        budget=Budget(steps=12_000, time_s=900.0),
        eval_every=600,
        load=functools.partial(load_fashion_mnist, None),
        target=None,
        size="gpu",
        data_files=DATA_FILES,
    )
)
