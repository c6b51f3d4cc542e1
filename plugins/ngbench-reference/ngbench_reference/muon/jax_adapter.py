"""Muon on JAX: ``optax.contrib.muon`` (optax 0.2.8), its Adam on the non-matrix leaves.

The update and defaults are in ``ngbench_reference.muon.card``. Matrices (and the head with
``head_optimizer = "muon"``) get ``MuonDimensionNumbers(reduction_axis=1, output_axis=0)``: ngbench
lays weights out as PyTorch does, ``(d_out, d_in)``, while optax's default dimension numbers assume
a Flax kernel ``(d_in, d_out)`` and would scale the step by ``sqrt(max(1, d_in / d_out))`` instead of
``sqrt(max(1, d_out / d_in))`` (the closed-form test in tests/test_reference_rows.py caught it).
Every other leaf gets ``None``, which optax routes to its Adam.
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
    torch_layout = MuonDimensionNumbers(reduction_axis=1, output_axis=0)
    dims = {name: (torch_layout if label in on_muon else None) for name, label in labels.items()}
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
