"""``digits-mlp`` and ``digits-cnn``: scikit-learn's bundled handwritten digits.

1,797 real 8x8 grey-scale digit images (UCI optdigits test set), pixels scaled to [0, 1]
(divided by 16), a fixed 80/20 train/validation split (1,438 / 359).

* ``digits-mlp``: MLP 64-128-128-10 with tanh, softmax cross-entropy, 26,122 parameters, batch
  32: the model and data of the anchor-cost measurements (docs/measurement.md, "Anchor step costs"), an
  MNIST-like classification problem in miniature as used by the AdamQLR and EGN papers.
* ``digits-cnn``: the same images as ``(1, 8, 8)`` through a small ConvNet,
  ``conv3x3(16)-ReLU-maxpool2-conv3x3(32)-ReLU-maxpool2-Linear(128, 10)`` (padding 1), 6,090
  parameters, batch 32: the convolution blocks of K-FAC (Grosse & Martens 2016, KFC) and FNGD's
  conv per-sample Grams on a CPU budget; AdamQLR, FNGD and EGN all train CNNs on image data.
"""

from __future__ import annotations

from sklearn.datasets import load_digits

from suites.layers import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU, Tanh
from suites.preprocessing import as_classification, split
from suites.registry import register
from suites.spec import Budget, Calibration, Dataset, Suite, Target


def _digits() -> Dataset:
    x, y = as_classification(*load_digits(return_X_y=True))
    return split(x / 16.0, y, 0.2)


def _digit_images() -> Dataset:
    d = _digits()
    return Dataset(d.x_train.reshape(-1, 1, 8, 8), d.y_train, d.x_val.reshape(-1, 1, 8, 8), d.y_val)


DIGITS_MLP = register(
    Suite(
        name="digits-mlp",
        version=2,
        description=(
            "scikit-learn digits (1,797 real 8x8 images, 10 classes), pixels/16, fixed 80/20 split; "
            "MLP 64-128-128-10 with tanh, softmax cross-entropy, batch 32."
        ),
        paper="MNIST-like MLP classification (AdamQLR Fashion-MNIST MLP; EGN MNIST), in miniature",
        model=ModelSpec((64,), (Linear(64, 128), Tanh(), Linear(128, 128), Tanh(), Linear(128, 10))),
        source="scikit-learn load_digits (bundled)",
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=1500, time_s=120.0),
        eval_every=50,
        load=_digits,
        target=Target("val_accuracy", 0.983),
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.001),),
            grid="lr in {0.0003, 0.001, 0.003, 0.01}",
            seeds=3,
            steps=1125,
            values=(
                0.983287,
                0.977716,
                0.983287,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=1.84,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=0.100279,
        ),
    )
)

DIGITS_CNN = register(
    Suite(
        name="digits-cnn",
        version=1,
        description=(
            "scikit-learn digits as (1, 8, 8) images, fixed 80/20 split; ConvNet conv3x3(16)-ReLU-maxpool-"
            "conv3x3(32)-ReLU-maxpool-Linear(128, 10), softmax cross-entropy, batch 32."
        ),
        paper="CNN image classification (K-FAC/KFC conv blocks; AdamQLR, FNGD, EGN CNNs), in miniature",
        model=ModelSpec(
            (1, 8, 8),
            (
                Conv2d(1, 16, 3, padding=1),
                ReLU(),
                MaxPool2d(2),
                Conv2d(16, 32, 3, padding=1),
                ReLU(),
                MaxPool2d(2),
                Flatten(),
                Linear(128, 10),
            ),
        ),
        source="scikit-learn load_digits (bundled)",
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=1000, time_s=120.0),
        eval_every=50,
        load=_digit_images,
        target=Target("val_accuracy", 0.98),
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.01),),
            grid="lr in {0.0003, 0.001, 0.003, 0.01}",
            seeds=3,
            steps=750,
            values=(
                0.980501,
                0.986072,
                0.980501,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=1.68,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=0.066852,
        ),
    )
)
