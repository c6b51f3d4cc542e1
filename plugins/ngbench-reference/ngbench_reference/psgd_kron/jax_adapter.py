"""PSGD Kron on JAX: ``psgd_jax.kron`` 0.2.9 (update, defaults, reference: ``.card``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax
from psgd_jax.kron import kron

from backends.spec import wrap_optax
from ngbench_reference.psgd_kron.card import CARD


def kron_transformation(hp: Any, labels: Mapping[str, str]) -> optax.GradientTransformation:
    # precond_update_precision: the library's default asks for TensorFloat-32 matmuls; "highest" keeps
    # the working dtype (float64 in the battery), as on a CPU anyway.
    return kron(learning_rate=hp.lr, b1=hp.b1, weight_decay=hp.weight_decay, precond_update_precision="highest")


class Kron(wrap_optax(kron_transformation, card=CARD, as_2d=True)):
    """``psgd_jax.kron`` (psgd-jax 0.2.9)."""
