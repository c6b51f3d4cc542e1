"""The JAX backend: models from suite specs, the curvature oracle, the adapters.

Same problem, same numbers, same contract as ``backends.torch`` (parity is tested in
``tests/test_parity.py``); this package never imports torch.

Process-wide JAX settings made on import
----------------------------------------
* ``jax_enable_x64 = True``: float64 problems must work, and labels/indices are int64 as in
  torch. Consequence for adapter code: a bare ``jnp.zeros(n)`` or ``jnp.arange(n) * 1.0`` is
  now **float64**; always pass ``dtype=problem.dtype`` (or use ``jnp.zeros_like(params)``).
  Python scalars stay weakly typed, so ``params * 0.9`` keeps the parameters' dtype.
  ``tests/test_jax_oracle.py`` checks that every JAX adapter keeps float32 state float32.
* ``jax_default_matmul_precision = "highest"``: full float32 matrix products and convolutions
  on GPU (no TF32), the arithmetic of PyTorch's default ``allow_tf32 = False`` matmuls, so the
  two backends compute the same thing and step times compare like with like.

Writing a JAX adapter (the contract is ``backends.spec``)
---------------------------------------------------------
::

    class MyState(NamedTuple):
        hparams: MyHyperparams          # frozen dataclass: static under jit
        count: jax.Array                # arrays (never Python ints that change per step)
        ...

    class Mine(adapter_class(mine.CARD, "jax")):
        def init(self, problem, hparams):
            return MyState(hparams, jnp.zeros((), jnp.int32), ...)

        def step(self, problem, params, state, batch):
            hp = state.hparams                         # a plain Python object: branch on it
            o = problem.oracle(params, batch, taps=True)
            loss, g = o.loss_and_grad()
            ...
            return new_params, state._replace(...), {"loss": loss, "lr": hp.lr}

* ``problem.make_step(adapter)`` jits the whole ``step`` (``backends.jax.counting.CountedJit``).
  Leaves of ``(params, state, batch)`` that are arrays or Python numbers are traced; every
  other leaf (the hyperparameter dataclass, strings, enums) is a static, hashable argument,
  so ``if hp.nesterov:`` is ordinary Python. This works for any adapter, built-in or
  third-party, with no registration: keep hyperparameters in frozen dataclasses and
  everything that changes between steps in arrays. Non-array outputs (``stats["lr"] =
  hp.lr``) come back as the values seen at trace time.
* Create the oracle inside ``step`` with ``problem.oracle(params, batch, taps=...)``; one
  linearised forward serves loss, logits, gradient, taps, JVPs and any number of reverse
  passes (``reverse(R, kind=...)``, ``tap_grads_for``, ``weighted_grad``, ``vjp``).
* Sampled labels: ``oracle.sample_targets(k)`` / ``sampled_logit_grads(k)`` read the batch
  noise, so a seed gives the same labels as in torch. Never use ``jax.random`` for them.
* Pass counts are recorded at trace time and replayed per call. Loops whose trip count
  depends on data (line searches) and ``lax.cond`` branches must book their passes with
  ``problem.counters.capture()`` and ``add_scaled`` (see ``backends.jax.counting``; both
  patterns are tested in ``tests/test_jax_oracle.py``). Passes computed outside the oracle
  (e.g. a ``jax.jvp`` of ``problem.apply``) are booked with ``problem.counters.add(kind)``,
  exactly where the torch twin books them: passes per step are compared across backends.
* ``direction`` is called eagerly by ``harness.api.direction`` (and may be jitted with
  ``problem.make_direction``): it must work both ways, without advancing the state.

Pitfalls under ``jit``: no ``float(x)``, ``x.item()``, ``if x > 0:`` or ``while`` on traced
values (use ``jnp.where``, ``lax.cond``, ``lax.while_loop``); no data-dependent shapes
(boolean masks); keep the state's tree structure and dtypes fixed from ``init`` on (a
``None`` that becomes an array, or a float64 that becomes float32, recompiles: the harness
books it as compile time, but it is wasted); update tables with ``x.at[i].set(v)``; read
``problem.step_budget`` and other problem attributes as Python constants (they are fixed
when the step is traced); call the model through ``problem.apply(params, x)`` so frozen
parameters stay arguments of the executable.
"""

from __future__ import annotations

import os

# Peak device memory is only meaningful without XLA's up-front pool (docs/measurement.md, "Memory"); the harness
# sets this too (harness.registry), this covers direct imports. Read when JAX initialises.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_default_matmul_precision", "highest")

from backends.jax.flops import step_flops  # noqa: E402
from backends.jax.problem import JaxProblem  # noqa: E402  (after the configuration above)

NAME = "jax"


def build_problem(suite, seed: int = 0, dtype: str = "float32", device: str = "cpu") -> JaxProblem:  # type: ignore[no-untyped-def]
    """Build ``suite`` for JAX (see :class:`JaxProblem`)."""
    return JaxProblem(suite, seed=seed, dtype=dtype, device=device)


__all__ = ["NAME", "JaxProblem", "build_problem", "step_flops"]
