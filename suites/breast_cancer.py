"""``breast-cancer-logreg``: convex logistic regression on the bundled Wisconsin breast-cancer data.

569 real fine-needle-aspirate records (Street et al. 1993; UCI WDBC, shipped with
scikit-learn), 30 features standardized with the training split's statistics, malignant vs
benign, a fixed 80/20 split (455 / 114). The model is one Linear layer 30 -> 2 with a two-class
softmax cross-entropy: binary logistic regression in the softmax form (our likelihoods are
``softmax_ce`` and ``mse``; with logits ``(z_0, z_1)`` the loss depends on ``z_1 - z_0`` only and
equals the sigmoid loss of that difference, so the problem is the convex logistic regression,
over-parameterised by one direction — the shift ``(w, b) -> (w + c, b + c)`` of both rows —
along which loss and Fisher are flat; the damping of second-order methods resolves it).
62 parameters, batch 64. EGN (Korbit et al. 2024) lists breast cancer among its tasks; the
convex, well-conditioned case where second-order methods should shine.
"""

from __future__ import annotations

from sklearn.datasets import load_breast_cancer

from suites.layers import Linear, ModelSpec
from suites.preprocessing import as_classification, split, standardize
from suites.registry import register
from suites.spec import Budget, Calibration, Dataset, Suite, Target


def _breast_cancer() -> Dataset:
    x, y = as_classification(*load_breast_cancer(return_X_y=True))
    return standardize(split(x, y, 0.2))


BREAST_CANCER_LOGREG = register(
    Suite(
        name="breast-cancer-logreg",
        version=1,
        description=(
            "scikit-learn breast cancer (569 patients, 30 standardized features, 2 classes), fixed 80/20 split; "
            "logistic regression as Linear(30, 2) with softmax cross-entropy, batch 64."
        ),
        paper="Convex logistic regression (EGN's breast-cancer task)",
        model=ModelSpec((30,), (Linear(30, 2),)),
        source="scikit-learn load_breast_cancer (bundled)",
        likelihood="softmax_ce",
        batch_size=64,
        budget=Budget(steps=400, time_s=60.0),
        eval_every=20,
        load=_breast_cancer,
        target=Target("val_loss", 0.124, mode="min"),
        val_metric="val_loss",
        calibration=Calibration(
            optimizer="adamw",
            hparams=(("lr", 0.01),),
            grid="lr in {0.001, 0.003, 0.01, 0.03, 0.1}",
            seeds=3,
            steps=300,
            values=(
                0.121383,
                0.12345,
                0.125263,
            ),
            backend="torch",
            dtype="float32",
            time_to_target_s=0.04,
            machine="AMD EPYC, 2 shared cores, OMP_NUM_THREADS=1",
            initial_value=0.728866,
        ),
    )
)
