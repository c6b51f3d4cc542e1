"""``digits-mlp``: scikit-learn's bundled handwritten digits through an MLP.

1,797 real 8x8 grey-scale digit images (UCI optdigits test set), pixels scaled to [0, 1]
(divided by 16), a fixed 80/20 train/validation split. MLP 64-128-128-10 with tanh, softmax
cross-entropy, 26,122 parameters, batch 32: the model and data of the anchor-cost measurements
(``research/anchor-costs.md``), an MNIST-like classification problem in miniature as used by
the AdamQLR and EGN papers.
"""

from __future__ import annotations

from sklearn.datasets import load_digits

from suites.layers import Linear, ModelSpec, Tanh
from suites.preprocessing import as_classification, split
from suites.registry import register
from suites.spec import Budget, Dataset, Suite, Target


def _digits() -> Dataset:
    x, y = as_classification(*load_digits(return_X_y=True))
    return split(x / 16.0, y, 0.2)


DIGITS_MLP = register(
    Suite(
        name="digits-mlp",
        version=1,
        description=(
            "scikit-learn digits (1,797 real 8x8 images, 10 classes), pixels/16, fixed 80/20 split; "
            "MLP 64-128-128-10 with tanh, softmax cross-entropy, batch 32."
        ),
        paper="MNIST-like MLP classification (AdamQLR Fashion-MNIST MLP; EGN MNIST), in miniature",
        model=ModelSpec((64,), (Linear(64, 128), Tanh(), Linear(128, 128), Tanh(), Linear(128, 10))),
        likelihood="softmax_ce",
        batch_size=32,
        budget=Budget(steps=1500, time_s=120.0),
        eval_every=50,
        load=_digits,
        target=Target("val_accuracy", 0.96),
    )
)
