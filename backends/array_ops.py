"""The array operations the framework-neutral method maths is written against.

The maths every backend shares (``backends/sample_space.py``; ``damping.py``, ``schedules.py``
and ``blocks.py`` before it) is written once, on arrays of whatever framework runs it, using
only what the two frameworks spell alike (``@``, ``.T``, ``.reshape``, ``.shape``, ``.ndim``,
``.dtype``, indexing with ``None``/``...``, arithmetic) plus the operations of
:class:`ArrayOps`, injected by the backend: ``backends/torch/ops.py`` and ``backends/jax/ops.py``
each define one instance. That is the pattern of kfac-jax's and optax's pure functions, with the
namespace passed in instead of imported.

Why not the Python array API (``array-api-compat``): the solves need what the standard does not
have (Cholesky with a failure flag, triangular solves from a factor, a traced branch, conv patch
extraction), so an injected namespace would still be needed for those, and the compat wrapper
adds a Python call layer on every torch operation of an eager step.

Conventions: axes follow NumPy (``axis=`` not ``dim=``); every function is pure (torch
implementations may use in-place updates on arrays they allocated themselves); nothing reads a
device value on the host except where the docstring says so (torch's Cholesky status).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

Array = Any
DType = Any


class ArrayOps(Protocol):
    """One framework's spelling of the operations the shared maths needs."""

    float64: DType

    def concat(self, arrays: Sequence[Array], axis: int = 0) -> Array:
        """Join along an existing axis (``torch.cat``, ``jnp.concatenate``); with one array the
        result may be that array itself (callers never update it in place)."""
        ...

    def stack(self, arrays: Sequence[Array], axis: int = 0) -> Array:
        """Join along a new axis."""
        ...

    def einsum(self, subscripts: str, *operands: Array) -> Array: ...

    def tile(self, x: Array, reps: tuple[int, ...]) -> Array:
        """Repeat the whole array ``reps[i]`` times along axis ``i`` (``np.tile``)."""
        ...

    def eye(self, n: int, dtype: DType, like: Array) -> Array:
        """``n x n`` identity in ``dtype`` on ``like``'s device."""
        ...

    def asarray(self, x: Any, dtype: DType, like: Array) -> Array:
        """``x`` (a Python number or an array) as an array of ``dtype`` on ``like``'s device."""
        ...

    def astype(self, x: Array, dtype: DType) -> Array: ...

    def where(self, cond: Array, x: Array, y: Array) -> Array: ...

    def zeros_like(self, x: Array) -> Array: ...

    def ones_like(self, x: Array) -> Array: ...

    def sum(self, x: Array, axis: int | None = None) -> Array: ...

    def mean(self, x: Array, axis: int | None = None) -> Array: ...

    def any(self, x: Array, axis: int | None = None) -> Array: ...

    def amax(self, x: Array, axis: int, keepdims: bool = False) -> Array: ...

    def maximum(self, x: Array, floor: float) -> Array:
        """Elementwise ``max(x, floor)`` for a Python number ``floor``."""
        ...

    def clip(self, x: Array, low: float, high: float) -> Array:
        """Elementwise ``min(max(x, low), high)`` for Python numbers ``low``, ``high``."""
        ...

    def sqrt(self, x: Array) -> Array: ...

    def softmax(self, x: Array, axis: int = -1) -> Array: ...

    def lerp(self, start: Array, end: Array, weight: float) -> Array:
        """``start + weight (end - start)`` with torch's two-sided rounding (``end - (end - start)
        (1 - weight)`` for ``weight >= 0.5``), so both frameworks round alike."""
        ...

    def abs(self, x: Array) -> Array: ...

    def norm(self, x: Array, axis: int | None = None) -> Array:
        """Euclidean norm over ``axis`` (all entries when ``None``)."""
        ...

    def finfo(self, dtype: DType) -> Any:
        """``eps`` and ``tiny`` of a floating dtype."""
        ...

    def diagonal(self, x: Array) -> Array:
        """The diagonal of the last two axes."""
        ...

    def add_to_diagonal(self, x: Array, value: Array | float) -> Array:
        """``x`` with ``value`` added to the diagonal of its last two axes; ``value`` is a number
        or broadcasts against ``(..., 1)`` (one value per matrix). Returns a new array."""
        ...

    def swap_last(self, x: Array) -> Array:
        """Swap the last two axes (batched transpose)."""
        ...

    def argsort(self, x: Array) -> Array:
        """Stable ascending sort order along the last axis (ties keep index order)."""
        ...

    def cholesky(self, x: Array) -> tuple[Array, Any]:
        """Lower Cholesky factor of (a batch of) SPD matrices and whether any factorisation
        failed: a Python ``bool`` where the framework reports the failure on the host (torch's
        ``cholesky_ex`` status, one device synchronisation), a 0-d bool array otherwise (JAX,
        NaNs in the factor)."""
        ...

    def spd_inverse(self, x: Array) -> Array:
        """Inverse of a symmetric positive-definite matrix from its Cholesky factor (torch raises
        when ``x`` is not positive definite; JAX returns NaNs)."""
        ...

    def solve_lower(self, chol: Array, b: Array) -> Array:
        """``L^{-1} b`` for lower-triangular ``L`` ``(..., n, n)`` and vectors ``b`` ``(..., n)``."""
        ...

    def cho_solve(self, chol: Array, b: Array) -> Array:
        """``(L L^T)^{-1} b`` for a factor ``L`` ``(..., n, n)`` and vectors ``b`` ``(..., n)``."""
        ...

    def eigh(self, x: Array) -> tuple[Array, Array]:
        """Eigenvalues (ascending) and eigenvectors of symmetric matrices."""
        ...

    def cond(self, pred: Any, true_fn: Callable[[], Array], false_fn: Callable[[], Array]) -> Array:
        """``true_fn()`` if ``pred`` else ``false_fn()``: a Python branch where ``pred`` is a
        host ``bool`` (torch), ``lax.cond`` where it is traced (JAX)."""
        ...

    def map_rows(self, fn: Callable[[Array], Array], x: Array) -> Array:
        """``stack([fn(row) for row in x])`` (``jax.vmap`` in JAX)."""
        ...

    def conv_patches(self, x: Array, kernel_size: int, stride: int, padding: int) -> Array:
        """Unfolded ``(B, T, C_in kh kw)`` patches of an NCHW input, features channel-major
        ``(C_in, kh, kw)`` (the layout of the flattened ``(out, in, kh, kw)`` weight), positions
        ``T = H' W'`` row-major."""
        ...
