"""Method cards: one per built-in method, shared by its torch and JAX adapters.

A card (``backends.spec.MethodCard``) holds the method's name, paper, typed hyperparameters
with defaults and ranges, search space, capabilities and presets. Keeping them here, outside
both backends, makes "same defaults in both frameworks" true by construction.

:func:`builtin_adapters` resolves the adapters of one backend from the cards: every method a
card declares for the backend must have its module there, or loading fails with its name.
"""

from __future__ import annotations

import importlib

from backends.spec import Adapter, MethodCard

#: Built-in methods in display order.
BUILTIN_METHODS: tuple[str, ...] = ("sgd", "adamw", "ef", "ief", "sf", "kfac", "fngd", "egn", "adamqlr")


class MissingAdapterError(ImportError):
    """A built-in method declares a backend whose adapter module or ``ADAPTER`` is missing."""


def card(name: str) -> MethodCard:
    """The card of built-in method ``name`` (``backends/methods/<name>.py``)."""
    return importlib.import_module(f"backends.methods.{name}").CARD


def builtin_adapters(backend: str, names: tuple[str, ...] = BUILTIN_METHODS) -> dict[str, type[Adapter]]:
    """Name -> adapter class of every built-in method whose card declares ``backend``.

    The adapter is ``ADAPTER`` in ``backends.<backend>.optimizers.<name>``, and it must carry the
    card's name and the backend; anything else raises :class:`MissingAdapterError` naming the
    module (a misnamed file must not make a method silently disappear from a backend).
    """
    out: dict[str, type[Adapter]] = {}
    for name in names:
        if backend not in card(name).backends:
            continue
        module_name = f"backends.{backend}.optimizers.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise MissingAdapterError(
                f"built-in method {name!r} declares backend {backend!r} but {module_name} does not exist"
            ) from exc
        adapter = getattr(module, "ADAPTER", None)
        if adapter is None or getattr(adapter, "name", None) != name or getattr(adapter, "backend", None) != backend:
            raise MissingAdapterError(
                f"{module_name}.ADAPTER must be the {backend} adapter of {name!r}, found {adapter!r}"
            )
        out[name] = adapter
    return out
