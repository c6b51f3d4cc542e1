"""PSGD Kron on JAX: ``psgd_jax.kron.kron`` (psgd-jax 0.2.3; update, defaults, reference: ``.card``).

psgd-jax 0.2.3 is the newest release whose ``kron`` imports with the pinned optax 0.2.8 and without
flax (0.2.4 and later import ``flax.linen`` in ``kron.py``; every release's other modules import
``optax._src.clipping``, which optax 0.2.8 no longer has; only ``psgd_jax.kron`` is used here).
Its random probe vectors, update coin and balancing coin come from a fixed key folded with its
step count, held in its own state, so a run is deterministic; they are not the batch noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax
from psgd_jax.kron import kron

from backends.spec import wrap_optax
from ngbench_reference.psgd_kron.card import CARD


def kron_transformation(hp: Any, labels: Mapping[str, str]) -> optax.GradientTransformation:
    del labels  # one transformation for every leaf: Kronecker factors on matrices, diagonal on vectors
    return kron(learning_rate=hp.lr, b1=hp.b1, weight_decay=hp.weight_decay)


class Kron(wrap_optax(kron_transformation, card=CARD)):
    """``psgd_jax.kron.kron`` (psgd-jax 0.2.3); lr, b1 and weight decay from the card."""
