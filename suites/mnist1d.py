"""``mnist1d-mlp``: MNIST-1D (Greydanus 2020), generated offline, through an MLP.

MNIST-1D turns ten hand-designed 1-D digit templates into 5,000 length-40 signals by random
padding, translation, scaling, shear and correlated plus iid noise
(``mnist1d.data.make_dataset(get_dataset_args())``: 4,000 train / 1,000 test, seed 42, the
package defaults of the published data set; ``get_dataset()`` would download it, so it is never
called). Generated once per machine and cached (``suites/cache.py``); the generator seeds
numpy's and Python's global RNGs, so their states are saved and restored around it. The
package's test split is our validation split.

MLP 40-100-100-10 with ReLU (the MNIST-1D paper's MLP baseline, which reaches about 68% test
accuracy where logistic regression gets 32%), softmax cross-entropy, 15,210 parameters, batch
100: small enough for CPU, hard enough that optimizers separate (the data set was designed so
that model and optimizer choices show, unlike MNIST).
"""

from __future__ import annotations

import random

import numpy as np

from suites.cache import cached_arrays
from suites.layers import Linear, ModelSpec, ReLU
from suites.registry import register
from suites.spec import Budget, Calibration, Dataset, Suite, Target


def _generate() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x_train": np.asarray(data["x"], dtype=np.float64),
        "y_train": np.asarray(data["y"], dtype=np.int64),
        "x_val": np.asarray(data["x_test"], dtype=np.float64),
        "y_val": np.asarray(data["y_test"], dtype=np.int64),
    }


def _mnist1d() -> Dataset:
    from importlib.metadata import version

    from mnist1d.data import get_dataset_args

    key = {"args": get_dataset_args(as_dict=True), "mnist1d": version("mnist1d"), "numpy": np.__version__}
    a = cached_arrays("mnist1d", key, _generate)
    return Dataset(a["x_train"], a["y_train"], a["x_val"], a["y_val"])


MNIST1D_MLP = register(
    Suite(
        name="mnist1d-mlp",
        version=1,
        description=(
            "MNIST-1D (4,000 / 1,000 length-40 signals, 10 classes) generated offline with "
            "mnist1d.make_dataset; MLP 40-100-100-10 ReLU, softmax cross-entropy, batch 100."
        ),
        paper="MNIST-like MLP classification (AdamQLR, EGN MLPs on image data), MNIST-1D (Greydanus 2020)",
        model=ModelSpec((40,), (Linear(40, 100), ReLU(), Linear(100, 100), ReLU(), Linear(100, 10))),
        source="mnist1d.make_dataset (generated offline, cached)",
        likelihood="softmax_ce",
        batch_size=100,
        budget=Budget(steps=2000, time_s=120.0),
        eval_every=100,
        load=_mnist1d,
        target=Target("val_accuracy", 0.646),
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.01),),
            grid="lr in {0.001, 0.003, 0.01, 0.03}",
            seeds=3,
            steps=1500,
            values=(
                0.646,
                0.64,
                0.673,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=4.21,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=0.105,
        ),
    )
)
