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
from suites.spec import Budget, Calibration, Dataset, Suite, Target


def _diabetes() -> Dataset:
    x, y = as_regression(*load_diabetes(return_X_y=True))
    return standardize(split(x, y, 0.2), targets=True)


DIABETES_MLP = register(
    Suite(
        name="diabetes-mlp",
        version=2,
        description=(
            "scikit-learn diabetes (442 patients, 10 standardized features, standardized target), "
            "fixed 80/20 split; MLP 10-64-64-1 with tanh, squared error, batch 32."
        ),
        paper="UCI-style tabular regression (AdamQLR UCI Energy/Protein; EGN diabetes)",
        model=ModelSpec((10,), (Linear(10, 64), Tanh(), Linear(64, 64), Tanh(), Linear(64, 1))),
        source="scikit-learn load_diabetes (bundled)",
        likelihood="mse",
        batch_size=32,
        budget=Budget(steps=1000, time_s=60.0),
        eval_every=25,
        load=_diabetes,
        target=Target("val_loss", 0.278, mode="min"),
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.0003),),
            grid="lr in {0.0001, 0.0003, 0.001, 0.003}",
            seeds=3,
            steps=750,
            values=(
                0.270835,
                0.277579,
                0.281061,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=0.07,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=0.404044,
        ),
        val_metric="val_loss",
    )
)
