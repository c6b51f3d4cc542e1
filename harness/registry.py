"""Backends and optimizer adapters by name.

Built-in adapters come from ``backends.<backend>.optimizers``; third-party adapters from the
entry-point group ``ngbench.optimizers`` (see ``backends.spec.ENTRY_POINT_GROUP``) or a
``module:Class`` reference. Backends are imported lazily, so a torch run never imports JAX.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
from functools import cache
from types import ModuleType

from backends.spec import BACKENDS, ENTRY_POINT_GROUP, Adapter
from harness.errors import UnknownBackendError, UnknownOptimizerError


def backend_available(backend: str) -> bool:
    """Whether ``backend``'s framework is installed (without importing it)."""
    module = {"torch": "torch", "jax": "jax"}.get(backend)
    return module is not None and importlib.util.find_spec(module) is not None


def backend_module(backend: str) -> ModuleType:
    """``backends.torch`` or ``backends.jax`` (imported on first use)."""
    if backend not in BACKENDS:
        raise UnknownBackendError(f"unknown backend {backend!r} (known: {', '.join(BACKENDS)})")
    if not backend_available(backend):
        extra = " (install the 'jax' extra: pip install 'ngbench[jax]')" if backend == "jax" else ""
        raise UnknownBackendError(f"backend {backend!r} is not installed{extra}")
    if backend == "jax":
        # Peak device memory is only meaningful without XLA's up-front pool (DESIGN.md); these
        # must be set before JAX initialises and are recorded with the run's environment.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return importlib.import_module(f"backends.{backend}")


@cache
def _builtin(backend: str) -> dict[str, type[Adapter]]:
    module = importlib.import_module(f"backends.{backend}.optimizers")
    return dict(module.builtin_adapters())


@cache
def _entry_points() -> dict[tuple[str, str], type[Adapter]]:
    """Third-party adapters from installed distributions, keyed by (name, backend)."""
    out: dict[tuple[str, str], type[Adapter]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        out[(cls.name, cls.backend)] = cls
    return out


def load_reference(ref: str) -> type[Adapter]:
    """Import an adapter class from ``module:Class`` (a module name or a ``.py`` path)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise UnknownOptimizerError(f"adapter reference {ref!r} is not of the form module:Class")
    try:
        if module_name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"ngbench_user_{abs(hash(module_name))}", module_name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {module_name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, OSError, SyntaxError) as exc:
        raise UnknownOptimizerError(f"cannot import adapter module {module_name!r}: {exc}") from None
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise UnknownOptimizerError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise UnknownOptimizerError(f"{ref!r} is not an adapter class (subclass backends.spec.Adapter)")
    return cls


def adapters(backend: str) -> dict[str, type[Adapter]]:
    """Every adapter available in ``backend``: built-ins, then entry points."""
    backend_module(backend)
    out = dict(_builtin(backend))
    for (name, be), cls in _entry_points().items():
        if be == backend:
            out.setdefault(name, cls)
    return out


def get_adapter(name: str, backend: str = "torch") -> type[Adapter]:
    """The adapter class for ``name`` (or ``module:Class``) in ``backend``."""
    if ":" in name:
        cls = load_reference(name)
        if getattr(cls, "backend", backend) != backend:
            raise UnknownOptimizerError(f"adapter {name!r} is for backend {cls.backend!r}, not {backend!r}")
        return cls
    available = adapters(backend)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=2)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise UnknownOptimizerError(
            f"unknown optimizer {name!r} for backend {backend!r}{hint} (known: {', '.join(available)})"
        )
    return available[name]


def list_optimizers(backend: str | None = None) -> list[tuple[str, str]]:
    """``(name, backend)`` of every available adapter, built-ins first."""
    backends = [backend] if backend else [b for b in BACKENDS if backend_available(b)]
    return [(name, b) for b in backends for name in adapters(b)]
