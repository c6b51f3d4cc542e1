"""JAX's spelling of :class:`backends.array_ops.ArrayOps` (the shared maths' operations).

Everything traces under ``jit``: Cholesky reports failure as a 0-d bool array (NaNs in the
factor), and :meth:`JaxOps.cond` is ``lax.cond``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

Array = jax.Array


class JaxOps:
    """:class:`backends.array_ops.ArrayOps` on ``jax.Array`` (pure, traceable)."""

    float64 = jnp.float64

    @staticmethod
    def concat(arrays: Sequence[Array], axis: int = 0) -> Array:
        return jnp.concatenate(list(arrays), axis=axis)

    @staticmethod
    def stack(arrays: Sequence[Array], axis: int = 0) -> Array:
        return jnp.stack(list(arrays), axis=axis)

    @staticmethod
    def einsum(subscripts: str, *operands: Array) -> Array:
        return jnp.einsum(subscripts, *operands)

    @staticmethod
    def tile(x: Array, reps: tuple[int, ...]) -> Array:
        return jnp.tile(x, reps)

    @staticmethod
    def eye(n: int, dtype: Any, like: Array) -> Array:
        return jnp.eye(n, dtype=dtype)

    @staticmethod
    def asarray(x: Any, dtype: Any, like: Array) -> Array:
        return jnp.asarray(x, dtype=dtype)

    @staticmethod
    def astype(x: Array, dtype: Any) -> Array:
        return x.astype(dtype)

    @staticmethod
    def where(cond: Array, x: Any, y: Any) -> Array:
        return jnp.where(cond, x, y)

    @staticmethod
    def zeros_like(x: Array) -> Array:
        return jnp.zeros_like(x)

    @staticmethod
    def ones_like(x: Array) -> Array:
        return jnp.ones_like(x)

    @staticmethod
    def sum(x: Array, axis: int | None = None) -> Array:
        return jnp.sum(x, axis=axis)

    @staticmethod
    def mean(x: Array, axis: int | None = None) -> Array:
        return jnp.mean(x, axis=axis)

    @staticmethod
    def any(x: Array, axis: int | None = None) -> Array:
        return jnp.any(x, axis=axis)

    @staticmethod
    def amax(x: Array, axis: int, keepdims: bool = False) -> Array:
        return jnp.max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def maximum(x: Array, floor: float) -> Array:
        return jnp.maximum(x, floor)

    @staticmethod
    def clip(x: Array, low: float, high: float) -> Array:
        return jnp.clip(x, low, high)

    @staticmethod
    def sqrt(x: Array) -> Array:
        return jnp.sqrt(x)

    @staticmethod
    def softmax(x: Array, axis: int = -1) -> Array:
        return jax.nn.softmax(x, axis=axis)

    @staticmethod
    def lerp(start: Array, end: Array, weight: float) -> Array:
        if weight < 0.5:
            return start + weight * (end - start)
        return end - (end - start) * (1.0 - weight)

    @staticmethod
    def abs(x: Array) -> Array:
        return jnp.abs(x)

    @staticmethod
    def norm(x: Array, axis: int | None = None) -> Array:
        return jnp.linalg.norm(x, axis=axis)

    @staticmethod
    def finfo(dtype: Any) -> Any:
        return jnp.finfo(dtype)

    @staticmethod
    def diagonal(x: Array) -> Array:
        return jnp.diagonal(x, axis1=-2, axis2=-1)

    @staticmethod
    def add_to_diagonal(x: Array, value: Array | float) -> Array:
        diag = jnp.arange(x.shape[-1])
        return x.at[..., diag, diag].add(value)

    @staticmethod
    def swap_last(x: Array) -> Array:
        return jnp.swapaxes(x, -1, -2)

    @staticmethod
    def argsort(x: Array) -> Array:
        return jnp.argsort(x, axis=-1, stable=True)

    @staticmethod
    def cholesky(x: Array) -> tuple[Array, Array]:
        # Only the lower triangle is read, as torch's ``cholesky_ex`` and LAPACK's ``potrf``
        # do: ``jnp.linalg.cholesky`` would first average ``x`` with its transpose, two more
        # passes over the matrix that change nothing for the exactly symmetric Grams given here.
        chol = jax.lax.linalg.cholesky(x, symmetrize_input=False)
        # A failed factorisation is NaN throughout, and a NaN below the diagonal reaches the
        # diagonal (every ``L_ij`` enters ``L_ii``): checking ``n`` entries, not ``n^2``, is the same test.
        return chol, jnp.any(jnp.isnan(jnp.diagonal(chol, axis1=-2, axis2=-1)))

    @staticmethod
    def spd_inverse(x: Array) -> Array:
        chol = jnp.linalg.cholesky(x)
        return cho_solve((chol, True), jnp.eye(x.shape[-1], dtype=x.dtype))

    @staticmethod
    def solve_lower(chol: Array, b: Array) -> Array:
        return solve_triangular(chol, b[..., None], lower=True)[..., 0]

    @staticmethod
    def cho_solve(chol: Array, b: Array) -> Array:
        return cho_solve((chol, True), b[..., None])[..., 0]

    @staticmethod
    def eigh(x: Array) -> tuple[Array, Array]:
        evals, vecs = jnp.linalg.eigh(x)
        return evals, vecs

    @staticmethod
    def cond(pred: Any, true_fn: Callable[[], Array], false_fn: Callable[[], Array]) -> Array:
        return jax.lax.cond(pred, true_fn, false_fn)

    @staticmethod
    def map_rows(fn: Callable[[Array], Array], x: Array) -> Array:
        return jax.vmap(fn)(x)

    @staticmethod
    def conv_patches(x: Array, kernel_size: int, stride: int, padding: int) -> Array:
        k, s, p = kernel_size, stride, padding
        patches = jax.lax.conv_general_dilated_patches(
            x, (k, k), (s, s), ((p, p), (p, p)), dimension_numbers=("NCHW", "OIHW", "NCHW")
        )  # (B, C k k, H', W'), features channel-major
        return patches.reshape(x.shape[0], patches.shape[1], -1).transpose(0, 2, 1)


#: The instance the JAX backend passes to the shared maths.
JAX_OPS = JaxOps()
