"""The battery: the ordered :data:`CHECKS`, and the entry points that run them on one adapter."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from backends.spec import (
    BACKENDS,
    Adapter,
)
from harness import registry
from harness.conformance.base import (
    CHECK_TIMEOUT_S,
    CheckFailure,
    CheckResult,
    CheckSkipped,
    Report,
    Status,
    deadline,
    exception_reason,
)
from harness.conformance.behaviour import BEHAVIOUR_CHECKS
from harness.conformance.context import Check, Context
from harness.conformance.declarations import DECLARATION_CHECKS
from harness.conformance.outputs import OUTPUT_CHECKS
from harness.errors import ConfigError
from harness.step_checks import format_error

CHECKS: tuple[Check, ...] = (*DECLARATION_CHECKS, *OUTPUT_CHECKS, *BEHAVIOUR_CHECKS)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


# --------------------------------------------------------------------------- entry points


def resolve_target(ref: str | type, backend: str | None = None) -> tuple[Any, str, str]:
    """``(object, backend, label)`` for a registered name, a ``module:Class`` reference or a class.

    Unknown names and unimportable references raise :class:`UnknownOptimizerError` (a user
    error); an object that is not an adapter is returned as is, for the ``adapter`` check.
    """
    if isinstance(ref, type):
        be = backend or getattr(ref, "backend", None) or "torch"
        return ref, str(be), f"{ref.__module__}:{ref.__qualname__}"
    if ":" in ref:
        obj = registry.load_object(ref)
        be = backend or getattr(obj, "backend", None)
        if be not in BACKENDS:
            be = "torch"
        return obj, str(be), ref
    be = backend or next((b for b in backends_of(ref)), "torch")
    return registry.get_adapter(ref, be), be, ref


def backends_of(name: str) -> list[str]:
    """The installed backends in which ``name`` is a registered adapter."""
    out = []
    for b in BACKENDS:
        if not registry.backend_available(b):
            continue
        try:
            available = registry.adapters(b)
        except Exception:
            continue
        if name in available:
            out.append(b)
    return out


def check_adapter(
    ref: str | type,
    backend: str | None = None,
    *,
    checks: Sequence[str] | None = None,
    device: str = "cpu",
    timeout_s: float = CHECK_TIMEOUT_S,
) -> Report:
    """Run the battery on one adapter (name, ``module:Class`` or class) in one backend.

    ``backend`` defaults to the class's own (for references and classes) or the first backend
    in which the name is registered. ``checks`` selects a subset of :data:`CHECK_NAMES` (their
    prerequisites run too). Raises :class:`UnknownOptimizerError` for unknown names and
    unimportable modules; everything the adapter does wrong is a failed check in the report.
    """
    if checks is not None:
        unknown = [c for c in checks if c not in CHECK_NAMES]
        if unknown:
            raise ConfigError(f"unknown check(s) {', '.join(unknown)} (known: {', '.join(CHECK_NAMES)})")
    start = time.perf_counter()
    obj, be, label = resolve_target(ref, backend)
    registry.backend_module(be)
    ctx = Context(obj, be, label, device)
    is_adapter = isinstance(obj, type) and issubclass(obj, Adapter)
    report = Report(
        target=label,
        backend=be,
        adapter=getattr(obj, "name", None) if is_adapter else None,
        origin=registry.adapter_origin(obj) if isinstance(obj, type) else f"object {label}",
    )
    wanted = set(CHECK_NAMES if checks is None else _with_prerequisites(checks))
    for check in CHECKS:
        if check.name not in wanted:
            continue
        report.results.append(_run_check(ctx, check, timeout_s))
        if report.results[-1].passed:
            ctx.passed.add(check.name)
    report.seconds = time.perf_counter() - start
    return report


def _with_prerequisites(names: Sequence[str]) -> list[str]:
    by_name = {c.name: c for c in CHECKS}
    out: list[str] = []

    def add(name: str) -> None:
        if name in out:
            return
        for req in by_name[name].requires:
            add(req)
        out.append(name)

    for name in names:
        add(name)
    return out


def _run_check(ctx: Context, check: Check, timeout_s: float) -> CheckResult:
    missing = [r for r in check.requires if r not in ctx.passed]
    if missing:
        return CheckResult(check.name, "skip", f"needs a passing {', '.join(repr(m) for m in missing)} check")
    if check.runtime and ctx.hparams is None:
        return CheckResult(check.name, "skip", f"default hyperparameters do not resolve: {ctx.hparams_error}")
    t0 = time.perf_counter()
    try:
        with deadline(timeout_s):
            note = check.run(ctx)
        status: Status = "pass"
        detail = None
    except CheckFailure as exc:
        status, note, detail = "fail", exc.reason, exc.detail
    except CheckSkipped as exc:
        status, note, detail = "skip", str(exc), None
    except TimeoutError as exc:
        status, note, detail = "fail", str(exc), format_error(exc)
    except Exception as exc:  # adapter code reached outside a guard: still one line, never a crash
        status = "fail"
        note = exception_reason(check.name, exc, ctx.files)
        detail = format_error(exc)
    return CheckResult(check.name, status, note, time.perf_counter() - t0, detail)


# --------------------------------------------------------------------------- pytest helpers


def builtin_cases() -> list[tuple[str, str]]:
    """``(name, backend)`` of every built-in adapter in the installed backends (for parametrize)."""
    out = []
    for b in BACKENDS:
        if not registry.backend_available(b):
            continue
        try:
            names = registry.adapters(b)
        except Exception:  # a backend that does not import is covered by its own tests
            continue
        out += [(name, b) for name, cls in names.items() if registry.adapter_origin(cls).startswith("built-in")]
    return out


def assert_conforms(ref: str | type, backend: str | None = None, **kwargs: Any) -> Report:
    """Run the battery and raise ``AssertionError`` with the failed checks' reasons if any fail.

    For plugin test suites: ``def test_conformance(): assert_conforms("mypkg.adapter:Mine")``.
    """
    report = check_adapter(ref, backend, **kwargs)
    if not report.ok:
        raise AssertionError(report.format())
    return report
