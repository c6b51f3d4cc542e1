"""K-FAC on JAX as DeepMind ships it: ``kfac_jax.Optimizer`` 0.0.8 behind the step contract.

The method, its defaults and what is counted are in ``ngbench_reference.kfac_deepmind.card``. What
this module does:

* **The model, through the model hook.** kfac-jax needs a loss function of a parameter tree that
  registers its layers and its loss. :func:`to_tree` views the flat vector as one leaf per layout
  block; a Linear weight on 2-D inputs is stored transposed, ``w = W^T`` (``(d_in, d_out)``, kfac-jax's
  ``y = x w + b``). :func:`loss_function` rebuilds the flat vector and calls
  ``problem.apply(flat, x, at_tap=...)``, whose hook wraps each such layer's pre-activation in
  ``kfac_jax.register_dense(s, a, w, b)`` with the leaves themselves, then registers the loss on the
  logits. Other parameters are left to kfac-jax's generic blocks.
* **One kfac-jax step per ngbench step**, inside the harness's compiled step: kfac-jax decides
  whether to adapt the damping from a Python step number; the adapter takes both branches under
  ``lax.cond`` on the traced step counter (``global_step_int`` chosen so each branch makes one
  decision). The optimizer object is rebuilt from ``(problem, hparams)`` when a step is traced.
* **dtype.** JAX runs with 64-bit types enabled; floating state leaves and the new parameters are
  cast to the problem's dtype after every step, so a float32 run stays float32.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from backends.spec import Batch, adapter_class
from ngbench_reference.kfac_deepmind.card import CARD


@functools.cache
def kfac() -> Any:
    """``kfac_jax`` with its jax >= 0.9.2 patch installed (``compat``), imported when the row is first
    used: listing or registering the row (every JAX worker scans the entry points) imports neither."""
    from ngbench_reference.kfac_deepmind import compat

    return compat.install()


Array = jax.Array
Tree = dict[str, Array]


class KfacJaxState(NamedTuple):
    hparams: Any
    kfac: Any  # kfac_jax.Optimizer.State
    damping: Array  # kfac-jax's current damping (its state's), where the approximation track reads it


# --------------------------------------------------------------------------- flat vector <-> tree


def dense_layers(layout: Any) -> dict[int, tuple[str, str | None]]:
    """Tap index -> (weight block, bias block) of every Linear layer on 2-D inputs (kfac-jax dense)."""
    return {
        t.tap_index: (t.weight.name, t.bias.name if t.bias is not None else None)
        for t in layout.tapped
        if t.kind == "linear" and len(t.input_shape) == 1
    }


def transposed_blocks(layout: Any) -> frozenset[str]:
    return frozenset(w for w, _ in dense_layers(layout).values())


def to_tree(layout: Any, flat: Array) -> Tree:
    """One leaf per layout block; dense weights as ``W^T``."""
    flip = transposed_blocks(layout)
    tree = {}
    for b in layout.blocks:
        leaf = flat[b.offset : b.offset + b.size].reshape(b.shape)
        tree[b.name] = leaf.T if b.name in flip else leaf
    return tree


def to_flat(layout: Any, tree: Tree) -> Array:
    """Inverse of :func:`to_tree`, in canonical order."""
    flip = transposed_blocks(layout)
    return jnp.concatenate([(tree[b.name].T if b.name in flip else tree[b.name]).reshape(-1) for b in layout.blocks])


def per_sample_loss(likelihood: str, z: Array, y: Array) -> Array:
    """ngbench's per-sample losses: ``-log softmax(z)[y]`` or ``0.5 ||z - y||^2``."""
    if likelihood == "softmax_ce":
        return -jnp.take_along_axis(jax.nn.log_softmax(z, axis=-1), y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return 0.5 * jnp.sum((z - y) ** 2, axis=-1)


def loss_function(problem: Any) -> Callable[[Tree, tuple[Array, Array]], Array]:
    """The mean batch loss of a parameter tree, with kfac-jax's layer and loss registrations."""
    layout, likelihood = problem.layout, problem.likelihood
    dense = dense_layers(layout)

    def loss(tree: Tree, batch: tuple[Array, Array]) -> Array:
        x, y = batch

        def at_tap(k: int, s: Array, a: Array) -> Array:
            if k not in dense:
                return s
            w, b = dense[k]
            return kfac().register_dense(s, a, tree[w], tree[b] if b is not None else None)

        z = problem.apply(to_flat(layout, tree), x, at_tap=at_tap)
        if likelihood == "softmax_ce":
            kfac().register_softmax_cross_entropy_loss(z, y)
        else:
            kfac().register_squared_error_loss(z, y, weight=0.5)  # kfac-jax: sum (z - y)^2
        return jnp.mean(per_sample_loss(likelihood, z, y))

    return loss


def build_optimizer(problem: Any, hp: Any) -> Any:
    """``kfac_jax.Optimizer`` for ``problem`` at ``hp`` (README-style, no burn-in)."""
    return kfac().Optimizer(
        value_and_grad_func=jax.value_and_grad(loss_function(problem)),
        l2_reg=hp.l2_reg,
        use_adaptive_learning_rate=hp.adaptive,
        use_adaptive_momentum=hp.adaptive,
        use_adaptive_damping=hp.adaptive_damping,
        initial_damping=hp.damping,
        min_damping=hp.min_damping,
        damping_adaptation_interval=hp.damping_adaptation_interval,
        damping_adaptation_decay=hp.damping_adaptation_decay,
        curvature_ema=hp.curvature_ema,
        inverse_update_period=hp.inverse_update_period,
        estimation_mode=hp.estimation_mode,
        num_burnin_steps=0,
        multi_device=False,
    )


def working_precision(problem: Any) -> Any:
    """JAX's 64-bit mode as the run's dtype wants it, for kfac-jax's own arrays: ngbench enables
    64-bit types process-wide, where kfac-jax's random draws and constants come out float64 and
    clash with a float32 model inside its ``lax.cond``s."""
    return jax.enable_x64(jnp.dtype(problem.dtype) == jnp.float64)


def _cast(tree: Any, dtype: Any) -> Any:
    def cast(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.astype(dtype)
        return leaf

    return jax.tree_util.tree_map(cast, tree)


def _fixed_args(hp: Any, dtype: Any) -> dict[str, Array]:
    """The values kfac-jax wants passed to ``step`` when it does not adapt them."""
    kw = {}
    if not hp.adaptive:
        kw["learning_rate"] = jnp.asarray(hp.lr, dtype)
        kw["momentum"] = jnp.asarray(hp.momentum, dtype)
    if not hp.adaptive_damping:
        kw["damping"] = jnp.asarray(hp.damping, dtype)
    return kw


#: kfac-jax's ``init`` takes a key; nothing it draws reaches a step (fixed, not the run's seed).
INIT_KEY = jax.random.PRNGKey(0)


def noise_key(batch: Batch[Array]) -> Array:
    """kfac-jax's key for one step, from the batch's label-sampling noise (the contract's only
    source of randomness): its first uniform, as 31 bits, folded into a fixed key."""
    u = batch.noise.reshape(-1)[0]
    return jax.random.fold_in(INIT_KEY, (u * 2.0**31).astype(jnp.uint32))


def current_damping(hp: Any, kstate: Any, dtype: Any) -> Array:
    """The damping the next step preconditions with: kfac-jax's adapted value, or the fixed one."""
    return kstate.damping.astype(dtype) if hp.adaptive_damping else jnp.asarray(hp.damping, dtype)


_STATS = {"loss": "loss", "lr": "learning_rate", "momentum": "momentum", "damping": "damping", "rho": "rho"}


class KfacJax(adapter_class(CARD, "jax")):  # type: ignore[misc]
    """``kfac_jax.Optimizer`` (kfac-jax 0.0.8) on ngbench's model, through ``problem.apply``."""

    def init(self, problem: Any, hparams: Any) -> KfacJaxState:
        optimizer = build_optimizer(problem, hparams)
        example = problem.device_batch(0)  # shapes for kfac-jax's tracing only
        with working_precision(problem):
            kstate = optimizer.init(to_tree(problem.layout, problem.params0), INIT_KEY, (example.x, example.y))
        kstate = _cast(kstate, problem.dtype)
        return KfacJaxState(hparams, kstate, current_damping(hparams, kstate, problem.dtype))

    def step(
        self, problem: Any, params: Array, state: KfacJaxState, batch: Batch[Array]
    ) -> tuple[Array, KfacJaxState, dict[str, Any]]:
        hp = state.hparams
        optimizer = build_optimizer(problem, hp)
        step_key = noise_key(batch)
        tree = to_tree(problem.layout, params)
        fixed = _fixed_args(hp, problem.dtype)

        def run(global_step: int) -> Callable[[], Any]:
            def call() -> Any:
                new_tree, kstate, stats = optimizer.step(
                    tree, state.kfac, step_key, batch=(batch.x, batch.y), global_step_int=global_step, **fixed
                )
                picked = {ours: stats[theirs] for ours, theirs in _STATS.items() if theirs in stats}
                return _cast((new_tree, kstate, picked), problem.dtype)

            return call

        interval = hp.damping_adaptation_interval
        with working_precision(problem):
            if hp.adaptive_damping and interval > 1:
                # kfac-jax adapts the damping when (t + 1) % interval == 0, t a Python int.
                adapt = (state.kfac.step_counter + 1) % interval == 0
                new_tree, kstate, stats = jax.lax.cond(adapt, run(interval - 1), run(interval))
            else:
                new_tree, kstate, stats = run(interval - 1)()
        self._count_passes(problem, hp)
        return (
            to_flat(problem.layout, new_tree),
            KfacJaxState(hp, kstate, current_damping(hp, kstate, problem.dtype)),
            stats,
        )

    @staticmethod
    def _count_passes(problem: Any, hp: Any) -> None:
        """kfac-jax differentiates the model itself; book what one of its steps does (card)."""
        problem.counters.add("forward", 1)
        problem.counters.add("backward", 1)
        problem.counters.add("vjp", 1)  # the curvature estimate's reverse pass
        problem.counters.add("jvp", 2 if hp.adaptive else 1)  # the quadratic model's GGN products

    def direction(self, problem: Any, params: Array, state: KfacJaxState, batch: Batch[Array]) -> Array:
        """kfac-jax's preconditioned gradient on ``batch`` before its step size and momentum:
        ``(F + (lambda + l2) I)^{-1} g`` with this batch's curvature estimate folded into the factor
        EMA first, as its step does, and the factors inverted afresh with its factored (pi-adjusted)
        damping (no cached, possibly stale inverses). The state is not advanced. Only the gradient
        (the oracle's) is counted; the estimate's passes are kfac-jax's own."""
        hp = state.hparams
        estimator = build_optimizer(problem, hp)._estimator  # kfac-jax exposes it only as this attribute
        tree = to_tree(problem.layout, params)
        args = (tree, (batch.x, batch.y))
        g = problem.oracle(params, batch).grad()
        key = noise_key(batch)
        with working_precision(problem):
            if not estimator.finalized:
                estimator.finalize(args)
            factors = estimator.update_curvature_matrix_estimate(
                state=state.kfac.estimator_state,
                ema_old=hp.curvature_ema,
                ema_new=1.0,
                identity_weight=hp.l2_reg + state.damping,
                batch_size=batch.x.shape[0],
                rng=key,  # the key a step on this batch uses
                func_args=args,
                pmap_axis_name=None,
            )
            p = estimator.multiply_inverse(
                factors,
                to_tree(problem.layout, g),
                identity_weight=state.damping + hp.l2_reg,
                exact_power=False,
                use_cached=False,
                pmap_axis_name=None,
            )
        return _cast(to_flat(problem.layout, p), problem.dtype)
