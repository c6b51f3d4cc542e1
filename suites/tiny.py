"""Two tiny suites for dense-reference tests (a few hundred parameters, real data).

``tiny-ce``: scikit-learn's wine data (178 samples, 13 features, 3 classes), MLP 13-16-3 with
tanh, softmax cross-entropy; 275 parameters. ``tiny-mse``: scikit-learn's diabetes data (442
samples, 10 features, one standardized target), MLP 10-16-1 with tanh, squared error; 193
parameters. With batch 16 the stacked output Jacobian (16x3 resp. 16x1 rows) has fewer rows
than there are parameters, so the sample-space solves of EF/iEF/SF/EGN and the exact natural
gradient are well posed; the scalar-output ``tiny-mse`` is the known-exact case where iEF,
Gauss-Newton and the natural gradient coincide (iEF paper, App. A).
"""

from __future__ import annotations

from sklearn.datasets import load_diabetes, load_wine

from suites.layers import Linear, ModelSpec, Tanh
from suites.preprocessing import as_classification, as_regression, split, standardize
from suites.registry import register
from suites.spec import Budget, Dataset, Suite, Target


def _wine() -> Dataset:
    x, y = as_classification(*load_wine(return_X_y=True))
    return standardize(split(x, y, 0.25))


def _diabetes_scalar() -> Dataset:
    x, y = as_regression(*load_diabetes(return_X_y=True))
    return standardize(split(x, y, 0.2), targets=True)


TINY_CE = register(
    Suite(
        name="tiny-ce",
        version=1,
        description="Wine (13 features, 3 classes) through a 13-16-3 tanh MLP; for dense-reference tests.",
        paper="test problem",
        source="scikit-learn load_wine (bundled)",
        model=ModelSpec((13,), (Linear(13, 16), Tanh(), Linear(16, 3))),
        likelihood="softmax_ce",
        batch_size=16,
        budget=Budget(steps=200),
        eval_every=20,
        load=_wine,
        target=Target("val_accuracy", 0.9),
        size="test",
    )
)

TINY_MSE = register(
    Suite(
        name="tiny-mse",
        version=1,
        description="Diabetes (10 features, scalar target) through a 10-16-1 tanh MLP; for dense-reference tests.",
        paper="test problem",
        source="scikit-learn load_diabetes (bundled)",
        model=ModelSpec((10,), (Linear(10, 16), Tanh(), Linear(16, 1))),
        likelihood="mse",
        batch_size=16,
        budget=Budget(steps=200),
        eval_every=20,
        load=_diabetes_scalar,
        target=Target("val_loss", 0.35, mode="min"),
        val_metric="val_loss",
        size="test",
    )
)
