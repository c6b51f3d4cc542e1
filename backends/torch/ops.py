"""PyTorch's spelling of :class:`backends.array_ops.ArrayOps` (the shared maths' operations)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


class TorchOps:
    """:class:`backends.array_ops.ArrayOps` on ``torch.Tensor`` (eager; Cholesky's status is read
    on the host)."""

    float64 = torch.float64

    @staticmethod
    def concat(arrays: Sequence[Tensor], axis: int = 0) -> Tensor:
        arrays = list(arrays)
        # One array: itself, not an eager copy (SF's single label draw, one-block layouts).
        return arrays[0] if len(arrays) == 1 else torch.cat(arrays, dim=axis)

    @staticmethod
    def stack(arrays: Sequence[Tensor], axis: int = 0) -> Tensor:
        return torch.stack(list(arrays), dim=axis)

    @staticmethod
    def einsum(subscripts: str, *operands: Tensor) -> Tensor:
        return torch.einsum(subscripts, *operands)

    @staticmethod
    def tile(x: Tensor, reps: tuple[int, ...]) -> Tensor:
        return x.repeat(*reps)

    @staticmethod
    def eye(n: int, dtype: torch.dtype, like: Tensor) -> Tensor:
        return torch.eye(n, dtype=dtype, device=like.device)

    @staticmethod
    def asarray(x: Any, dtype: torch.dtype, like: Tensor) -> Tensor:
        return torch.as_tensor(x, dtype=dtype, device=like.device)

    @staticmethod
    def astype(x: Tensor, dtype: torch.dtype) -> Tensor:
        return x.to(dtype)

    @staticmethod
    def where(cond: Tensor, x: Any, y: Any) -> Tensor:
        return torch.where(cond, x, y)

    @staticmethod
    def zeros_like(x: Tensor) -> Tensor:
        return torch.zeros_like(x)

    @staticmethod
    def ones_like(x: Tensor) -> Tensor:
        return torch.ones_like(x)

    @staticmethod
    def sum(x: Tensor, axis: int | None = None) -> Tensor:
        return x.sum() if axis is None else x.sum(dim=axis)

    @staticmethod
    def mean(x: Tensor, axis: int | None = None) -> Tensor:
        return x.mean() if axis is None else x.mean(dim=axis)

    @staticmethod
    def any(x: Tensor, axis: int | None = None) -> Tensor:
        return x.any() if axis is None else x.any(dim=axis)

    @staticmethod
    def amax(x: Tensor, axis: int, keepdims: bool = False) -> Tensor:
        return x.amax(dim=axis, keepdim=keepdims)

    @staticmethod
    def maximum(x: Tensor, floor: float) -> Tensor:
        return x.clamp_min(floor)

    @staticmethod
    def clip(x: Tensor, low: float, high: float) -> Tensor:
        return x.clamp(low, high)

    @staticmethod
    def sqrt(x: Tensor) -> Tensor:
        return x.sqrt()

    @staticmethod
    def softmax(x: Tensor, axis: int = -1) -> Tensor:
        return torch.softmax(x, dim=axis)

    @staticmethod
    def lerp(start: Tensor, end: Tensor, weight: float) -> Tensor:
        return torch.lerp(start, end, weight)

    @staticmethod
    def abs(x: Tensor) -> Tensor:
        return x.abs()

    @staticmethod
    def norm(x: Tensor, axis: int | None = None) -> Tensor:
        return torch.linalg.vector_norm(x, dim=axis)

    @staticmethod
    def finfo(dtype: torch.dtype) -> torch.finfo:
        return torch.finfo(dtype)

    @staticmethod
    def diagonal(x: Tensor) -> Tensor:
        return x.diagonal(dim1=-2, dim2=-1)

    @staticmethod
    def add_to_diagonal(x: Tensor, value: Tensor | float) -> Tensor:
        out = x.clone()
        out.diagonal(dim1=-2, dim2=-1).add_(value)
        return out

    @staticmethod
    def swap_last(x: Tensor) -> Tensor:
        return x.transpose(-1, -2)

    @staticmethod
    def argsort(x: Tensor) -> Tensor:
        return torch.argsort(x, dim=-1, stable=True)

    @staticmethod
    def cholesky(x: Tensor) -> tuple[Tensor, bool]:
        chol, info = torch.linalg.cholesky_ex(x)
        return chol, bool(info.any())

    @staticmethod
    def spd_inverse(x: Tensor) -> Tensor:
        return torch.cholesky_inverse(torch.linalg.cholesky(x))

    @staticmethod
    def solve_lower(chol: Tensor, b: Tensor) -> Tensor:
        return torch.linalg.solve_triangular(chol, b.unsqueeze(-1), upper=False).squeeze(-1)

    @staticmethod
    def cho_solve(chol: Tensor, b: Tensor) -> Tensor:
        return torch.cholesky_solve(b.unsqueeze(-1), chol).squeeze(-1)

    @staticmethod
    def eigh(x: Tensor) -> tuple[Tensor, Tensor]:
        evals, vecs = torch.linalg.eigh(x)
        return evals, vecs

    @staticmethod
    def cond(pred: Any, true_fn: Callable[[], Tensor], false_fn: Callable[[], Tensor]) -> Tensor:
        return true_fn() if bool(pred) else false_fn()

    @staticmethod
    def map_rows(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        return torch.stack([fn(row) for row in x])

    @staticmethod
    def conv_patches(x: Tensor, kernel_size: int, stride: int, padding: int) -> Tensor:
        return F.unfold(x, kernel_size, padding=padding, stride=stride).transpose(1, 2)


#: The instance the torch backend passes to the shared maths.
TORCH_OPS = TorchOps()


class HostScalarOps:
    """The scalar part of :class:`backends.array_ops.ArrayOps` on the host, for a CPU device.

    A 0-d CPU tensor is read as a NumPy ``float64`` (``Tensor.item()``: no synchronisation on
    the CPU), and the scalar maths (AdamQLR's step size, reduction ratio and damping update)
    runs on NumPy scalars: the same IEEE double operations as 0-d ``float64`` tensors, so the
    same numbers, at a fraction of a microsecond each instead of a torch dispatch of several
    (docs/profiling.md). AdamQLR's step size and K-FAC's quadratic model and damping update
    run on it. ``astype`` to a torch dtype gives a 0-d tensor back (the step size
    that scales the update). On CUDA the adapters keep :data:`TORCH_OPS` (a host read would
    synchronise).
    """

    float64 = np.float64

    @staticmethod
    def astype(x: Any, dtype: Any) -> Any:
        value = x.item() if isinstance(x, Tensor) else x
        if dtype is np.float64:
            return np.float64(value)
        return torch.tensor(float(value), dtype=dtype)

    @staticmethod
    def asarray(x: Any, dtype: Any, like: Any = None) -> Any:
        return HostScalarOps.astype(x, dtype)

    @staticmethod
    def abs(x: Any) -> Any:
        return np.abs(x)

    @staticmethod
    def clip(x: Any, low: float, high: float) -> Any:
        return np.clip(x, low, high)

    @staticmethod
    def where(cond: Any, x: Any, y: Any) -> Any:
        return x if cond else y


#: Scalar maths on the host for CPU problems (see :class:`HostScalarOps`).
HOST_SCALAR_OPS = HostScalarOps()


def scalar_ops(device: torch.device) -> Any:
    """Host scalars (:data:`HOST_SCALAR_OPS`) for an eager step on the CPU; device tensors
    (:data:`TORCH_OPS`) on CUDA (a host read would synchronise) and under ``torch.compile``
    (a host read would break the graph)."""
    if device.type == "cpu" and not torch.compiler.is_compiling():
        return HOST_SCALAR_OPS
    return TORCH_OPS
