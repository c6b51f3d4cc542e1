"""Templates that ``ngbench new-adapter`` writes (package data: ``*.j2``).

:func:`adapter_source` renders a one-file adapter (method card + adapter) for a third party:
plain SGD with the place for the method's own update clearly marked. The rendered file passes
``ngbench check-adapter path/to/file.py:ClassName`` as written (``tests/test_conformance.py``).
"""

from __future__ import annotations

import re
from importlib import resources

from jinja2 import Environment, StrictUndefined

from backends.spec import BACKENDS


def class_name(name: str) -> str:
    """``my-sgd`` -> ``MySgd`` (the adapter's class name)."""
    parts = [p for p in re.split(r"[-_]+", name) if p]
    return "".join(p[:1].upper() + p[1:] for p in parts)


def adapter_source(name: str, backend: str, *, reference: str) -> str:
    """The adapter file for ``name`` in ``backend``; ``reference`` is how to name it (``path:Class``)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")
    text = (resources.files(__package__) / f"{backend}_adapter.j2").read_text(encoding="utf-8")
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(text).render(name=name, class_name=class_name(name), reference=reference)
