"""Built-in JAX adapters, one module per method (``backends.methods`` holds their cards)."""

from __future__ import annotations

from backends import methods
from backends.spec import Adapter


def builtin_adapters() -> dict[str, type[Adapter]]:
    """Name -> adapter class for every built-in method whose card declares this backend
    (``backends.methods.builtin_adapters``: a declared method without its module is an error)."""
    return methods.builtin_adapters("jax")
