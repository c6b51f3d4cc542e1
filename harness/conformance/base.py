"""The battery's vocabulary: thresholds, check results, the report, the :class:`Check` record and
the numeric helpers the checks share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import signal
import threading
import traceback
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from backends.spec import (
    Choice,
    LogUniform,
    OneMinusLogUniform,
    Uniform,
)

Status = Literal["pass", "fail", "skip"]

#: Tiny suites of the battery, by likelihood.
TINY_SUITES: Mapping[str, str] = {"softmax_ce": "tiny-ce", "mse": "tiny-mse"}
#: Steps taken by the structural checks (the state changes from fresh to carried).
STRUCTURE_STEPS = 3
#: Steps on each convex problem.
CONVEX_STEPS = 60
#: Relative decrease of the convex training loss the defaults must achieve in CONVEX_STEPS.
MIN_CONVEX_DECREASE = 0.01
#: Tolerance of "the update is a step along the direction" (float64).
CONSISTENCY_RTOL = 1e-6
#: Tolerance of cross-backend parity (float64), as ``tests/test_parity.py``.
PARITY_RTOL = 1e-6
#: ``stats["loss"]`` against the oracle's loss at the incoming parameters (float64).
LOSS_RTOL = 1e-9
#: Wall-clock limit of one check (adapter code that hangs fails instead of blocking).
CHECK_TIMEOUT_S = 120.0

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,39}")
STAT_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
DISTRIBUTIONS = (LogUniform, Uniform, OneMinusLogUniform, Choice)


# --------------------------------------------------------------------------- results


class CheckFailure(Exception):
    """A check's verdict: the adapter breaks the contract; the message is the reason."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class CheckSkipped(Exception):
    """The check does not apply to this adapter; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. ``detail`` holds a traceback when adapter code raised."""

    name: str
    status: Status
    reason: str
    seconds: float = 0.0
    detail: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def failed(self) -> bool:
        return self.status == "fail"


@dataclass
class Report:
    """The battery's outcome for one adapter in one backend."""

    target: str
    backend: str
    adapter: str | None
    origin: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No check failed (skipped checks do not count against the adapter)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.failed]

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "fail": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return (
            f"{len(self.results)} checks: {c['pass']} passed, {c['fail']} failed, {c['skip']} skipped "
            f"in {self.seconds:.1f} s"
        )

    def format(self) -> str:
        """Plain-text report, one line per check."""
        title = f"{self.adapter or self.target} ({self.backend}) from {self.origin}"
        width = max((len(r.name) for r in self.results), default=0)
        lines = [title]
        lines += [f"  {r.status.upper():4}  {r.name:{width}}  {r.reason}" for r in self.results]
        lines.append(self.summary())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "adapter": self.adapter,
            "origin": self.origin,
            "ok": self.ok,
            "seconds": self.seconds,
            "checks": [dataclasses.asdict(r) for r in self.results],
        }


# --------------------------------------------------------------------------- helpers


def first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def exception_reason(what: str, exc: BaseException, files: Sequence[str]) -> str:
    """``what raised Type: message (file:line)``, at the innermost frame in ``files`` if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename in files]
    frame = own[-1] if own else (frames[-1] if frames else None)
    where = f" ({frame.filename}:{frame.lineno})" if frame is not None else ""
    return f"{what} raised {type(exc).__name__}: {first_line(str(exc))}{where}"


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``TimeoutError`` in the main thread after ``seconds`` (no-op elsewhere)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"check did not finish within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def leaves(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` of a state: tuples (named fields by name), lists and dicts are walked."""
    if isinstance(tree, tuple):
        names = getattr(tree, "_fields", None)
        for i, item in enumerate(tree):
            yield from leaves(item, f"{path}.{names[i]}" if names else f"{path}[{i}]")
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from leaves(item, f"{path}[{i}]")
    elif isinstance(tree, dict):
        for key, item in tree.items():
            yield from leaves(item, f"{path}[{key!r}]")
    else:
        yield path, tree


def scalar(value: Any) -> float:
    """``float(value)`` for Python numbers and one-element arrays; raises otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    shape = getattr(value, "shape", None)
    if shape is not None and int(np.prod(shape)) == 1:
        return float(np.asarray(value).reshape(()))
    raise TypeError(f"{type(value).__name__} is not a scalar")


def max_rel(actual: np.ndarray, desired: np.ndarray) -> float:
    """Largest ``|actual - desired|`` relative to ``max |desired|`` (NaN if either is not finite)."""
    if actual.shape != desired.shape or not (np.all(np.isfinite(actual)) and np.all(np.isfinite(desired))):
        return math.nan
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    diff = float(np.max(np.abs(actual - desired))) if desired.size else 0.0
    return diff / scale if scale > 0 else diff


def close(actual: np.ndarray, desired: np.ndarray, rtol: float) -> bool:
    """Elementwise ``rtol`` with an absolute floor of ``rtol`` times the largest entry; finite only."""
    if actual.shape != desired.shape or not (np.all(np.isfinite(actual)) and np.all(np.isfinite(desired))):
        return False
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    return bool(np.allclose(actual, desired, rtol=rtol, atol=rtol * scale))


def hint_names(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:
        raise CheckFailure(f"cannot resolve the type annotations of {cls.__name__}: {first_line(str(exc))}") from None


def base_types(kind: Any) -> list[Any]:
    """``float | None`` -> ``[float]``; ``Literal[...]`` stays itself."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(kind) if a is not type(None)]
    return [kind]
