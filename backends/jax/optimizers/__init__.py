"""Built-in JAX adapters, one module per method (``backends.methods`` holds their cards)."""

from __future__ import annotations

import importlib

from backends.methods import BUILTIN_METHODS
from backends.spec import Adapter


def builtin_adapters() -> dict[str, type[Adapter]]:
    """Name -> adapter class for every built-in method implemented in this backend."""
    out: dict[str, type[Adapter]] = {}
    for name in BUILTIN_METHODS:
        try:
            module = importlib.import_module(f"backends.jax.optimizers.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"backends.jax.optimizers.{name}":
                continue
            raise
        out[name] = module.ADAPTER
    return out
