"""The PyTorch backend: models from suite specs, the curvature oracle, the adapters."""

from __future__ import annotations

from backends.torch.flops import step_flops
from backends.torch.problem import TorchProblem

NAME = "torch"


def build_problem(suite, seed: int = 0, dtype: str = "float32", device: str = "cpu") -> TorchProblem:  # type: ignore[no-untyped-def]
    """Build ``suite`` for PyTorch (see :class:`TorchProblem`)."""
    return TorchProblem(suite, seed=seed, dtype=dtype, device=device)


__all__ = ["NAME", "TorchProblem", "build_problem", "step_flops"]
