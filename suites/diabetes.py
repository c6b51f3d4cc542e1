"""``diabetes-mlp``: scikit-learn's bundled diabetes regression through an MLP.

442 patients, 10 standardized baseline variables, the standardized disease-progression target
one year later; fixed 80/20 split. MLP 10-64-64-1 with tanh, squared error
(``0.5 * (z - y)^2``, Gaussian likelihood), 4,929 parameters, batch 32: a small UCI-style
regression of the kind AdamQLR (UCI Energy/Protein) and EGN (diabetes is in its task list) use.
"""

from __future__ import annotations

from sklearn.datasets import load_diabetes

from suites.layers import Linear, ModelSpec, Tanh
from suites.preprocessing import as_regression, split, standardize
from suites.registry import register
from suites.spec import Budget, Dataset, Suite, Target


def _diabetes() -> Dataset:
    x, y = as_regression(*load_diabetes(return_X_y=True))
    return standardize(split(x, y, 0.2), targets=True)


DIABETES_MLP = register(
    Suite(
        name="diabetes-mlp",
        version=1,
        description=(
            "scikit-learn diabetes (442 patients, 10 standardized features, standardized target), "
            "fixed 80/20 split; MLP 10-64-64-1 with tanh, squared error, batch 32."
        ),
        paper="UCI-style tabular regression (AdamQLR UCI Energy/Protein; EGN diabetes)",
        model=ModelSpec((10,), (Linear(10, 64), Tanh(), Linear(64, 64), Tanh(), Linear(64, 1))),
        likelihood="mse",
        batch_size=32,
        budget=Budget(steps=1000, time_s=60.0),
        eval_every=25,
        load=_diabetes,
        target=Target("val_loss", 0.28, mode="min"),
        val_metric="val_loss",
    )
)
