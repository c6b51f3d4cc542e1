"""``rosenbrock``: the Rosenbrock function as a least-squares problem (AdamQLR's toy).

Rosenbrock (1960): ``f(x, y) = (a - x)^2 + b (y - x^2)^2`` with ``a = 1``, ``b = 100``; minimum
``f = 0`` at ``(1, 1)`` at the bottom of a long curved valley, the classic pathological-curvature
test. AdamQLR (Clarke & Hernandez-Lobato 2024, ``configs/rosenbrock*``) writes it as least
squares, residuals ``r = [a - x, sqrt(b) (y - x^2)]``, starts at ``(1, -1)`` and runs 200 steps
of batch size 1.

As a suite: the "model" is the residual map (layer ``Rosenbrock``: two parameters
``theta = (x, y)``, output ``r`` whatever the input), the "dataset" is one sample with input
``1`` and target ``(0, 0)`` (training and validation alike; the batch size is 1, every batch is
that sample), and the likelihood is ``mse``. Our loss is ``0.5 ||r||^2 = f / 2``; AdamQLR's
``optax.l2_loss(r).mean()`` is ``0.25 ||r||^2 = f / 4``, so our loss, gradient and Gauss-Newton
matrix (``J_r^T J_r``, the Fisher of the unit Gaussian) are twice AdamQLR's; learning rates
and damping values translate by that factor. Deterministic: there is no sampling noise, only
the sampled targets of SF and K-FAC.
"""

from __future__ import annotations

import numpy as np

from suites.layers import ModelSpec, Rosenbrock
from suites.registry import register
from suites.spec import Budget, Calibration, Dataset, Suite, Target


def _single_point() -> Dataset:
    x = np.ones((1, 1))
    y = np.zeros((1, 2))
    return Dataset(x, y, x.copy(), y.copy())


ROSENBROCK = register(
    Suite(
        name="rosenbrock",
        version=1,
        description=(
            "Rosenbrock's function (a=1, b=100) as least squares r = [a-x, sqrt(b)(y-x^2)], start (1, -1), "
            "loss 0.5||r||^2 = f/2, one constant sample."
        ),
        paper="AdamQLR (Clarke & Hernandez-Lobato 2024): Rosenbrock least-squares toy",
        model=ModelSpec((1,), (Rosenbrock(1.0, 100.0, (1.0, -1.0)),)),
        source="generated (one constant sample)",
        likelihood="mse",
        batch_size=1,
        budget=Budget(steps=1000, time_s=60.0),
        eval_every=25,
        load=_single_point,
        target=Target("val_loss", 1.16e-08, mode="min"),
        val_metric="val_loss",
        calibration=Calibration(
            optimizer="adamw",
            hparams=(
                ("lr", 1.0),
                ("weight_decay", 0.0),
            ),
            grid="lr in {0.1, 0.3, 1, 3}; weight_decay in {0, 0.01}",
            seeds=3,
            steps=750,
            values=(
                1.15259e-08,
                1.15259e-08,
                1.15259e-08,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=0.5,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=200.0,
        ),
    )
)
