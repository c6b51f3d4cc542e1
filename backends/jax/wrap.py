"""``wrap_optax``: an optax gradient transformation as an ngbench adapter.

::

    def muon_tx(hp, labels):
        return optax.contrib.muon(hp.lr, beta=hp.momentum, ...)

    class Muon(wrap_optax(muon_tx, card=CARD)):
        \"\"\"Muon from optax.contrib.\"\"\"

``tx_factory(hp, labels)`` builds the transformation from the resolved hyperparameters and the
parameter labels (``{block name: "matrix" | "head" | "vector"}``, ``backends.param_groups``), so a
method can route hidden matrices and the rest to different transformations
(``optax.multi_transform(..., labels)``, or Muon's own dimension numbers). The transformation
sees a dict of per-layer arrays keyed by block name (``problem.layout``:
``flat[offset:offset + size].reshape(shape)``; with ``as_2d=True`` Conv2d weights as
``(d_out, rest)`` matrices); the adapter splits the flat gradient into it and joins the updates
back, in canonical order.

Each ``step``: ``loss, g = oracle.loss_and_grad()``; ``updates, opt_state = tx.update(g, opt_state,
params)``; ``params + updates``. The state is ``(hparams, opt_state)``; optax is functional, so
``step`` is pure as it stands and the harness jits it whole.

**dtype.** JAX runs with 64-bit types enabled, where optax creates some state in float64 (a
step count's bias correction, Schedule-Free's weight sum). Every floating leaf of the state, and
the update, is cast to the problem's dtype after ``init`` and after every update, so a float32
run stays float32.

**Direction** is ``-updates / lr`` from the current state (not advanced), ``lr`` the hyperparameter
named ``lr_name``; the first update is ``-lr * direction``. **Evaluation**: ``eval_params=fn(opt_state,
params_tree) -> params_tree`` (``optax.contrib.schedule_free_eval_params``) makes :meth:`eval_params`
return the parameters to evaluate at.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from backends.param_groups import Label, param_labels
from backends.spec import Adapter, Batch, MethodCard, adapter_class

TxFactory = Callable[[Any, Mapping[str, Label]], optax.GradientTransformation]


def optax_update(
    tx: optax.GradientTransformation, params: Any, opt_state: optax.OptState, g: Any
) -> tuple[Any, optax.OptState]:
    """``(theta_{t+1}, opt_state_{t+1})``: ``updates, opt_state = tx.update(g, opt_state, theta)``,
    then ``optax.apply_updates(theta, updates)``."""
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


class OptaxState(NamedTuple):
    hparams: Any
    opt_state: Any


def _shape(shape: tuple[int, ...], label: str, as_2d: bool) -> tuple[int, ...]:
    if as_2d and label in ("matrix", "head") and len(shape) > 2:
        return (shape[0], math.prod(shape[1:]))
    return shape


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating array leaf of ``tree`` in ``dtype`` (integers, e.g. step counts, unchanged)."""

    def cast(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != dtype:
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


class WrappedOptax(Adapter):
    """Base of the adapters :func:`wrap_optax` builds (set the class attributes below)."""

    tx_factory: Callable[..., optax.GradientTransformation]
    lr_name: str = "lr"
    as_2d: bool = False
    eval_fn: Callable[[Any, Any], Any] | None = None

    # -- the flat vector <-> per-layer dict
    def _labels(self, problem: Any) -> dict[str, Label]:
        return param_labels(problem.layout)

    def split(self, problem: Any, flat: jax.Array) -> dict[str, jax.Array]:
        labels = self._labels(problem)
        return {
            b.name: flat[b.offset : b.stop].reshape(_shape(b.shape, labels[b.name], self.as_2d))
            for b in problem.layout.blocks
        }

    def join(self, problem: Any, tree: Mapping[str, jax.Array]) -> jax.Array:
        return jnp.concatenate([tree[b.name].reshape(-1) for b in problem.layout.blocks])

    def transformation(self, problem: Any, hp: Any) -> optax.GradientTransformation:
        return type(self).tx_factory(hp, self._labels(problem))

    # -- the contract
    def init(self, problem: Any, hparams: Any) -> OptaxState:
        opt_state = self.transformation(problem, hparams).init(self.split(problem, problem.params0))
        return OptaxState(hparams, cast_floating(opt_state, problem.dtype))

    def _update(self, problem: Any, params: jax.Array, state: OptaxState, g: jax.Array) -> tuple[jax.Array, Any]:
        tx = self.transformation(problem, state.hparams)
        updates, opt_state = tx.update(self.split(problem, g), state.opt_state, self.split(problem, params))
        return self.join(problem, updates).astype(params.dtype), cast_floating(opt_state, problem.dtype)

    def step(
        self, problem: Any, params: jax.Array, state: OptaxState, batch: Batch[jax.Array]
    ) -> tuple[jax.Array, OptaxState, dict[str, Any]]:
        hp = state.hparams
        loss, g = problem.oracle(params, batch).loss_and_grad()
        update, opt_state = self._update(problem, params, state, g)
        return params + update, OptaxState(hp, opt_state), {"loss": loss, "lr": float(getattr(hp, self.lr_name))}

    def direction(self, problem: Any, params: jax.Array, state: OptaxState, batch: Batch[jax.Array]) -> jax.Array:
        update, _ = self._update(problem, params, state, problem.oracle(params, batch).grad())
        return -update / float(getattr(state.hparams, self.lr_name))

    def eval_params(self, problem: Any, params: jax.Array, state: OptaxState) -> jax.Array:
        fn = type(self).eval_fn
        if fn is None:
            return params
        tree = fn(state.opt_state, self.split(problem, params))
        return self.join(problem, tree).astype(params.dtype)


def wrap_optax(
    tx_factory: TxFactory,
    *,
    card: MethodCard,
    lr_name: str = "lr",
    as_2d: bool = False,
    eval_params: Callable[[Any, Any], Any] | None = None,
) -> type[WrappedOptax]:
    """An adapter class running ``tx_factory(hp, labels)`` on ``card``'s hyperparameters (module docstring)."""
    base = adapter_class(card, "jax")
    return type(
        f"Wrapped{card.name.title().replace('-', '').replace('_', '')}",
        (WrappedOptax, base),
        {
            "tx_factory": staticmethod(tx_factory),
            "lr_name": lr_name,
            "as_2d": as_2d,
            "eval_fn": staticmethod(eval_params) if eval_params is not None else None,
            "__module__": str(sys._getframe(1).f_globals.get("__name__", __name__)),
        },
    )
