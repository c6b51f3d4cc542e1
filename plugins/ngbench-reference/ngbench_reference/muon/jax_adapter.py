"""Muon on JAX: ``optax.contrib.muon`` (optax 0.2.8), its Adam on the non-matrix leaves.

The update and defaults are in ``ngbench_reference.muon.card``. Matrices (and the head with
``head_optimizer = "muon"``) get ``MuonDimensionNumbers()`` (rows are outputs, the reduction is
over inputs); every other leaf gets ``None``, which optax routes to its Adam.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax
from optax.contrib import MuonDimensionNumbers

from backends.spec import wrap_optax
from ngbench_reference.muon.card import CARD


def muon_transformation(hp: Any, labels: Mapping[str, str]) -> optax.GradientTransformation:
    on_muon = {"matrix", "head"} if hp.head_optimizer == "muon" else {"matrix"}
    dims = {name: (MuonDimensionNumbers() if label in on_muon else None) for name, label in labels.items()}
    return optax.contrib.muon(
        learning_rate=hp.lr,
        beta=hp.momentum,
        ns_steps=hp.ns_steps,
        eps=1e-7,
        weight_decay=hp.weight_decay,
        nesterov=hp.nesterov,
        adam_b1=hp.adam_b1,
        adam_b2=hp.adam_b2,
        adam_learning_rate=hp.adam_lr,
        muon_weight_dimension_numbers=dims,
    )


class Muon(wrap_optax(muon_transformation, card=CARD, as_2d=True)):
    """``optax.contrib.muon`` (optax 0.2.8)."""
