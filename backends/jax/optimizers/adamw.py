"""AdamW on JAX: ``optax.adamw``; the update rule and references are in ``backends.methods.adamw``.

``optax.adamw(lr, b1, b2, eps, weight_decay)`` is ``scale_by_adam`` (bias-corrected
``m^ / (sqrt(v^) + eps)``), then ``add_decayed_weights`` (``+ wd theta``), then ``-lr``:
``theta_{t+1} = theta_t - lr (m^_t / (sqrt(v^_t) + eps) + wd theta_t)``, the same as
``torch.optim.AdamW``. The direction is ``scale_by_adam``'s output on this batch's gradient
from the current moments, which are not advanced.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from backends.jax.wrap import optax_update
from backends.methods import adamw
from backends.spec import Batch, Problem, adapter_class


class AdamWState(NamedTuple):
    hparams: adamw.AdamWHyperparams
    opt_state: optax.OptState


def transformation(hp: adamw.AdamWHyperparams) -> optax.GradientTransformation:
    return optax.adamw(hp.lr, b1=hp.b1, b2=hp.b2, eps=hp.eps, weight_decay=hp.weight_decay)


def _adam(hp: adamw.AdamWHyperparams) -> optax.GradientTransformation:
    """The first link of :func:`transformation`: the bias-corrected Adam direction."""
    return optax.scale_by_adam(b1=hp.b1, b2=hp.b2, eps=hp.eps)


def update(
    hp: adamw.AdamWHyperparams, params: jax.Array, opt_state: optax.OptState, g: jax.Array
) -> tuple[jax.Array, optax.OptState]:
    """``(theta_{t+1}, opt_state_{t+1})`` from the gradient ``g`` by :func:`transformation`
    (:func:`backends.jax.wrap.optax_update`), without passes."""
    return optax_update(transformation(hp), params, opt_state, g)


class AdamW(adapter_class(adamw.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: adamw.AdamWHyperparams) -> AdamWState:
        return AdamWState(hparams, transformation(hparams).init(problem.params0))

    def direction(self, problem: Problem, params: jax.Array, state: AdamWState, batch: Batch[jax.Array]) -> jax.Array:
        g = problem.oracle(params, batch).grad()
        adam_state = state.opt_state[0]  # optax.adamw = chain(scale_by_adam, decay, -lr)
        return _adam(state.hparams).update(g, adam_state, params)[0]

    def step(
        self, problem: Problem, params: jax.Array, state: AdamWState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, AdamWState, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        new, opt_state = update(hp, params, state.opt_state, g)
        return new, AdamWState(hp, opt_state), {"loss": loss, "lr": hp.lr}


ADAPTER = AdamW
