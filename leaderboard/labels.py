"""Backend labels: what the board calls the framework a run measured.

A board separates backends because their step times are not comparable (docs/site.md). Compiled
PyTorch (a torch run with ``torch_compile`` in its stored spec, ``ngbench run --torch-compile``)
is measured apart from eager PyTorch for the same reason: the compiled step removes the Python
overhead that the eager step pays, as ``jax.jit`` does. Its label is :data:`COMPILED_TORCH`; the
database keeps ``backend = torch`` and the option in the run's ``spec`` JSON, so the label is
derived here, on reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The board's backend of compiled PyTorch runs.
COMPILED_TORCH = "torch-compiled"


def backend_label(backend: Any, spec: Any) -> Any:
    """``torch-compiled`` for a torch run whose spec asked for ``torch_compile``, else ``backend``."""
    compiled = isinstance(spec, Mapping) and spec.get("torch_compile") is True
    return COMPILED_TORCH if backend == "torch" and compiled else backend


def framework(label: Any) -> Any:
    """The framework behind a label (``torch`` for ``torch-compiled``): adapter versions are per framework."""
    return "torch" if label == COMPILED_TORCH else label
