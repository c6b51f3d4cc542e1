"""SGD with momentum on JAX, built on optax; the update rule is in ``backends.methods.sgd``.

``optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum, nesterov))`` is
``torch.optim.SGD`` (dampening 0) exactly: ``add_decayed_weights`` forms ``d_t = g_t + wd theta_t``;
``optax.trace`` keeps ``b_t = d_t + mu b_{t-1}`` from ``b_0 = 0``, so its first buffer is
``d_1`` as torch's ``clone``; with Nesterov it returns ``d_t + mu b_t``; the update is
``-lr u_t``. ``tests/test_jax_optax.py`` checks this against ``torch.optim.SGD``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from backends.jax.wrap import optax_update
from backends.methods import sgd
from backends.spec import Batch, Problem, adapter_class


class SGDState(NamedTuple):
    hparams: sgd.SGDHyperparams
    opt_state: optax.OptState


def transformation(hp: sgd.SGDHyperparams) -> optax.GradientTransformation:
    """The optax chain with ``torch.optim.SGD`` semantics (coupled L2, then momentum)."""
    momentum = hp.momentum or None  # no trace state when there is no momentum, as in torch
    parts = [optax.add_decayed_weights(hp.weight_decay)] if hp.weight_decay else []
    parts.append(optax.sgd(hp.lr, momentum=momentum, nesterov=hp.nesterov and momentum is not None))
    return optax.chain(*parts)


def update(
    hp: sgd.SGDHyperparams, params: jax.Array, opt_state: optax.OptState, g: jax.Array
) -> tuple[jax.Array, optax.OptState]:
    """``(theta_{t+1}, opt_state_{t+1})`` from the gradient ``g`` by :func:`transformation`
    (:func:`backends.jax.wrap.optax_update`), without passes."""
    return optax_update(transformation(hp), params, opt_state, g)


class SGD(adapter_class(sgd.CARD, "jax")):  # type: ignore[misc]
    def init(self, problem: Problem, hparams: sgd.SGDHyperparams) -> SGDState:
        return SGDState(hparams, transformation(hparams).init(problem.params0))

    def direction(self, problem: Problem, params: jax.Array, state: SGDState, batch: Batch[jax.Array]) -> jax.Array:
        return problem.oracle(params, batch).grad()

    def step(
        self, problem: Problem, params: jax.Array, state: SGDState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, SGDState, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        new, opt_state = update(hp, params, state.opt_state, g)
        return new, SGDState(hp, opt_state), {"loss": loss, "lr": hp.lr}


ADAPTER = SGD
