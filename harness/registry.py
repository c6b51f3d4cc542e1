"""Backends and optimizer adapters by name.

Built-in adapters come from ``backends.<backend>.optimizers``; third-party adapters from the
entry-point group ``ngbench.optimizers`` (see ``backends.spec.ENTRY_POINT_GROUP``) or a
``module:Class`` reference (a module name or a ``.py`` path). Backends are imported lazily, so
a torch run never imports JAX.

Entry points
------------
An entry point's value is an adapter class (``"package.module:Class"``); the class's ``name``
and ``backend`` attributes say what it provides. Its key should be ``<name>.<backend>``
(``lion.torch``, ``lion.jax``): a key ending in ``.torch`` or ``.jax`` is only imported when
that backend is asked for, so listing torch adapters never imports a plugin's JAX module. A
bare key is imported for every backend. An entry point that fails to import, is not an
adapter, names the wrong backend or reuses a built-in's name is left out and reported by
:func:`entry_point_errors`, naming its distribution; it never breaks ``ngbench list``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from backends.spec import BACKENDS, ENTRY_POINT_GROUP, Adapter
from harness.errors import UnknownBackendError, UnknownOptimizerError

#: Prefix of the module names under which ``.py`` adapter files are imported.
FILE_MODULE_PREFIX = "ngbench_user_"


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
        # Peak device memory is only meaningful without XLA's up-front pool (docs/measurement.md, "Memory"); these
        # must be set before JAX initialises and are recorded with the run's environment.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return importlib.import_module(f"backends.{backend}")


def builtin_names(backend: str) -> list[str]:
    """Names of ngbench's own adapters in ``backend`` (imports only ngbench's modules)."""
    backend_module(backend)
    return list(_builtin(backend))


@cache
def _builtin(backend: str) -> dict[str, type[Adapter]]:
    module = importlib.import_module(f"backends.{backend}.optimizers")
    return dict(module.builtin_adapters())


# --------------------------------------------------------------------------- entry points


@dataclass
class _Scan:
    """The entry points of one backend: loaded adapters, where each came from, and failures."""

    adapters: dict[str, type[Adapter]] = field(default_factory=dict)
    origins: dict[type[Adapter], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "an unknown distribution"
    return f"distribution {dist.metadata['Name']} {dist.version}"


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback (for one-line messages)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _entry_point_backend(ep_name: str) -> str | None:
    """The backend a ``<name>.<backend>`` key is restricted to (``None``: any)."""
    head, dot, tail = ep_name.rpartition(".")
    return tail if dot and head and tail in BACKENDS else None


@cache
def _entry_points(backend: str) -> _Scan:
    """Third-party adapters of ``backend`` from installed distributions."""
    scan = _Scan()
    builtin = _builtin(backend)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        restricted = _entry_point_backend(ep.name)
        if restricted is not None and restricted != backend:
            continue
        label = f"entry point {ep.name!r} = {ep.value!r} of {_distribution(ep)}"
        try:
            cls = ep.load()
        except Exception as exc:  # any error of third-party import code is reported, not raised
            scan.errors.append(f"{label} failed to load: {type(exc).__name__}: {exc}{_where(exc)}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            scan.errors.append(f"{label} is not an adapter class (subclass backends.spec.Adapter)")
            continue
        cls_backend = getattr(cls, "backend", None)
        name = getattr(cls, "name", None)
        if restricted is not None and cls_backend != restricted:
            scan.errors.append(f"{label} is registered for backend {restricted!r} but its class says {cls_backend!r}")
            continue
        if cls_backend != backend:
            continue
        if not isinstance(name, str) or not name:
            scan.errors.append(f"{label} has no name")
            continue
        if name in builtin:
            scan.errors.append(f"{label} reuses the built-in name {name!r}; ignored")
            continue
        if name in scan.adapters:
            first = scan.origins[scan.adapters[name]]
            scan.errors.append(f"{label} provides {name!r} ({backend}), already provided by {first}; ignored")
            continue
        scan.adapters[name] = cls
        scan.origins[cls] = label
    return scan


def entry_point_errors(backend: str | None = None) -> list[str]:
    """One line per entry point of ``backend`` (all installed backends if ``None``) that was left out."""
    backends = [backend] if backend else [b for b in BACKENDS if backend_available(b)]
    out: list[str] = []
    for b in backends:
        backend_module(b)
        for line in _entry_points(b).errors:
            if line not in out:
                out.append(line)
    return out


def refresh() -> None:
    """Forget discovered adapters, so distributions installed (or put on ``sys.path``) since are seen."""
    importlib.invalidate_caches()
    _builtin.cache_clear()
    _entry_points.cache_clear()


# --------------------------------------------------------------------------- module:Class


def _load_file(path_text: str) -> ModuleType:
    """Import the ``.py`` file ``path_text`` as a module registered in ``sys.modules``.

    Registration under a name derived from the resolved path makes the module's classes
    picklable (adapter states must survive pickling) and its source findable (the adapter
    version hashes it). An unchanged file is imported once per process.
    """
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path_text}")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    name = f"{FILE_MODULE_PREFIX}{stem}_{digest}"
    mtime = path.stat().st_mtime_ns
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__ngbench_mtime__", None) == mtime:
        return module
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path_text}")
    module = importlib.util.module_from_spec(spec)
    module.__ngbench_mtime__ = mtime  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_object(ref: str) -> Any:
    """The object named by ``module:attr`` (a module name or a ``.py`` path), unchecked.

    Raises :class:`UnknownOptimizerError` with one line when the module cannot be imported
    (whatever its code raised) or has no such attribute.
    """
    module_name, _, attr = ref.rpartition(":")
    if not module_name or not attr or not attr.replace(".", "_").isidentifier():
        raise UnknownOptimizerError(f"adapter reference {ref!r} is not of the form module:Class")
    try:
        module = _load_file(module_name) if module_name.endswith(".py") else importlib.import_module(module_name)
    except Exception as exc:  # user code: any exception becomes one clear line
        detail = str(exc) if isinstance(exc, (ImportError, OSError)) else f"{type(exc).__name__}: {exc}{_where(exc)}"
        raise UnknownOptimizerError(f"cannot import adapter module {module_name!r}: {detail}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownOptimizerError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def load_reference(ref: str) -> type[Adapter]:
    """Import an adapter class from ``module:Class`` (a module name or a ``.py`` path)."""
    cls = load_object(ref)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise UnknownOptimizerError(f"{ref!r} is not an adapter class (subclass backends.spec.Adapter)")
    return cls


# --------------------------------------------------------------------------- lookup


def adapters(backend: str) -> dict[str, type[Adapter]]:
    """Every adapter available in ``backend``: built-ins, then entry points."""
    backend_module(backend)
    out = dict(_builtin(backend))
    for name, cls in _entry_points(backend).adapters.items():
        out.setdefault(name, cls)
    return out


def adapter_origin(cls: type) -> str:
    """Where an adapter class comes from: built-in module, distribution and entry point, or file."""
    backend = getattr(cls, "backend", None)
    if backend in BACKENDS and backend_available(backend):
        try:
            backend_module(backend)
            builtin, scan = _builtin(backend), _entry_points(backend)
        except Exception:  # a backend that does not import knows no adapters
            builtin, scan = {}, _Scan()
        if builtin.get(getattr(cls, "name", None)) is cls:  # type: ignore[arg-type]
            return f"built-in ({cls.__module__})"
        origin = scan.origins.get(cls)
        if origin is not None:
            return origin
    module = sys.modules.get(cls.__module__)
    if cls.__module__.startswith(FILE_MODULE_PREFIX) and module is not None and module.__file__:
        return f"file {module.__file__}"
    return f"module {cls.__module__}"


def _names_or_none(backend: str) -> dict[str, type[Adapter]]:
    """The adapters of ``backend``, or none where it is not installed or does not import."""
    if not backend_available(backend):
        return {}
    try:
        return adapters(backend)
    except Exception:  # a broken backend knows no adapters; the caller is reporting another error
        return {}


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
        broken = _entry_points(backend).errors
        note = f"; {len(broken)} entry point(s) left out: {broken[0]}" if broken else ""
        elsewhere = [b for b in BACKENDS if b != backend and name in _names_or_none(b)]
        if elsewhere:
            hint = f"; it exists for --backend {' and '.join(elsewhere)}{hint}"
        raise UnknownOptimizerError(
            f"unknown optimizer {name!r} for backend {backend!r}{hint} (known: {', '.join(available)}){note}"
        )
    return available[name]


def list_optimizers(backend: str | None = None) -> list[tuple[str, str]]:
    """``(name, backend)`` of every available adapter, built-ins first."""
    backends = [backend] if backend else [b for b in BACKENDS if backend_available(b)]
    return [(name, b) for b in backends for name in adapters(b)]
