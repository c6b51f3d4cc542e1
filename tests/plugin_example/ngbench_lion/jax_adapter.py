"""Lion on JAX, built on ``optax.scale_by_lion``; the update rule is in ``ngbench_lion.card``.

``optax.chain(optax.scale_by_lion(b1, b2), optax.add_decayed_weights(wd))`` produces the
direction ``d_t``; the step subtracts ``lr d_t``, which is ``optax.lion`` exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from backends.spec import Batch, adapter_class
from ngbench_lion.card import CARD, LionHyperparams


class LionState(NamedTuple):
    hparams: LionHyperparams
    opt_state: optax.OptState


def direction_transform(hp: LionHyperparams) -> optax.GradientTransformation:
    """Gradient -> Lion direction ``sign(b1 m + (1 - b1) g) + wd theta`` (before the step size)."""
    return optax.chain(optax.scale_by_lion(b1=hp.b1, b2=hp.b2), optax.add_decayed_weights(hp.weight_decay))


class Lion(adapter_class(CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Any, hparams: LionHyperparams) -> LionState:
        return LionState(hparams, direction_transform(hparams).init(problem.params0))

    def direction(self, problem: Any, params: jax.Array, state: LionState, batch: Batch[jax.Array]) -> jax.Array:
        g = problem.oracle(params, batch).grad()
        d, _ = direction_transform(state.hparams).update(g, state.opt_state, params)
        return d

    def step(
        self, problem: Any, params: jax.Array, state: LionState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, LionState, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        d, opt_state = direction_transform(hp).update(g, state.opt_state, params)
        return params - hp.lr * d, LionState(hp, opt_state), {"loss": loss, "lr": hp.lr}
