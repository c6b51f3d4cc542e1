"""Typed hyperparameters of the adapter contract: fields with documentation, range and the
provenance of their default, coercion of overrides (CLI strings included) and resolution.

Part of the contract stated in :mod:`backends.spec`, which re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class HyperparameterError(ValueError):
    """An unknown hyperparameter name or an invalid value; the message says which and why."""


# --------------------------------------------------------------------------- hyperparameters


#: Where a default value comes from (docs/defaults.md): the method's ``paper`` (cited in
#: ``source``), a reference implementation's default (``library``), or ``held-out``: measured
#: by ``ngbench calibrate-defaults`` on suites that are on no board (``source`` is a
#: :class:`HeldOutEvidence`).
PROVENANCES: tuple[str, ...] = ("paper", "library", "held-out")


@dataclass(frozen=True)
class HeldOutEvidence:
    """How a ``held-out`` default was chosen (``harness/defaults_calibration.py``).

    Each value of ``grid`` was run with the method's other defaults on every suite of ``suites``
    (all of size ``heldout``, on no board) with seeds ``0 .. seeds-1`` for ``steps`` steps;
    ``medians[i][j]`` is the median over seeds of the best validation metric on ``suites[i]`` at
    ``grid[j]``. ``chosen`` is the grid value with the best median rank across the suites.
    """

    method: str
    hparam: str
    grid: tuple[float, ...]
    suites: tuple[str, ...]
    medians: tuple[tuple[float, ...], ...]
    seeds: int
    steps: int
    chosen: float
    backend: str = "torch"
    dtype: str = "float32"
    #: Other hyperparameters set away from the card's defaults during the calibration.
    fixed: tuple[tuple[str, Any], ...] = ()

    def command(self) -> str:
        grid = ",".join(f"{v:g}" for v in self.grid)
        sets = "".join(f" --set {k}={v}" for k, v in self.fixed)
        return (
            f"ngbench calibrate-defaults {self.method} --hparam {self.hparam} --grid {grid} "
            f"--seeds {self.seeds} --steps {self.steps} --backend {self.backend} --dtype {self.dtype}{sets}"
        )

    def describe(self) -> str:
        """One line: the command, every suite's per-value medians, and the value chosen."""
        per_suite = "; ".join(
            f"{suite}: " + ", ".join(f"{v:g}->{m:.4g}" for v, m in zip(self.grid, row, strict=True))
            for suite, row in zip(self.suites, self.medians, strict=True)
        )
        return f"`{self.command()}`; median best validation metric per value: {per_suite}; chosen {self.chosen:g}"


def hparam(
    default: Any,
    *,
    doc: str,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    choices: tuple[Any, ...] | None = None,
    provenance: str | None = None,
    source: str | HeldOutEvidence = "",
    allow_infinite: bool = False,
) -> Any:
    """A typed hyperparameter field with its documentation and admissible range.

    Use inside a frozen dataclass: ``lr: float = hparam(0.1, doc="learning rate", low=0)``.
    ``provenance`` (one of :data:`PROVENANCES`) and ``source`` say where the default comes from:
    a citation for ``paper``, the library and its setting for ``library``, the
    :class:`HeldOutEvidence` for ``held-out``. Built-in cards give both for every field
    (tests/test_defaults_provenance.py); third-party adapters may leave them out.
    A number must be finite (``inf`` would be stored as a missing value) unless the card says
    ``allow_infinite=True``; NaN is never a hyperparameter.
    """
    if provenance is not None and provenance not in PROVENANCES:
        raise ValueError(f"provenance must be one of {', '.join(PROVENANCES)}, got {provenance!r}")
    if (provenance == "held-out") != isinstance(source, HeldOutEvidence):
        raise ValueError("a held-out default needs its HeldOutEvidence as source, and only a held-out one")
    meta = {
        "doc": doc,
        "low": low,
        "high": high,
        "low_inclusive": low_inclusive,
        "high_inclusive": high_inclusive,
        "choices": choices,
        "allow_infinite": allow_infinite,
        "provenance": provenance,
        "source": source.describe() if isinstance(source, HeldOutEvidence) else source,
        "evidence": source if isinstance(source, HeldOutEvidence) else None,
    }
    return field(default=default, metadata=meta)


def hparam_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_type(cls: type, f: dataclasses.Field[Any]) -> Any:
    hints = typing.get_type_hints(cls)
    return hints.get(f.name, f.type)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Convert ``value`` (possibly a string from the CLI) to the field's declared type."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind)]
        if (value is None or (isinstance(value, str) and value.lower() == "none")) and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, option, value)
            except HyperparameterError as exc:
                errors.append(str(exc))
        raise HyperparameterError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(kind)
        if value in allowed:
            return value
        raise HyperparameterError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise HyperparameterError(f"{name} must be a boolean (true/false), got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise HyperparameterError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise HyperparameterError(f"{name} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, bool):
            raise HyperparameterError(f"{name} must be a number, got {value!r}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise HyperparameterError(f"{name} must be a number, got {value!r}") from None
        if math.isnan(out):
            raise HyperparameterError(f"{name} must be a number, got NaN")
        return out
    if kind is str:
        if isinstance(value, str):
            return value
        raise HyperparameterError(f"{name} must be a string, got {value!r}")
    return value


def _check_range(name: str, meta: Mapping[str, Any], value: Any) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise HyperparameterError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            raise HyperparameterError(f"{name} must be a number, got NaN")
        if not meta.get("allow_infinite", False):
            raise HyperparameterError(
                f"{name} must be finite, got {value:g} (this card does not allow infinite values)"
            )
    low, high = meta.get("low"), meta.get("high")
    if low is not None:
        ok = value >= low if meta.get("low_inclusive", True) else value > low
        if not ok:
            op = ">=" if meta.get("low_inclusive", True) else ">"
            raise HyperparameterError(f"{name} must be {op} {low:g}, got {value:g}")
    if high is not None:
        ok = value <= high if meta.get("high_inclusive", True) else value < high
        if not ok:
            op = "<=" if meta.get("high_inclusive", True) else "<"
            raise HyperparameterError(f"{name} must be {op} {high:g}, got {value:g}")


def resolve_hparams(cls: type, overrides: Mapping[str, Any] | None = None, *, owner: str = "") -> Any:
    """Validate ``overrides`` against the hyperparameter dataclass ``cls`` and build it.

    Strings are converted to the declared types (so CLI ``--set lr=0.1`` works); unknown names
    get close-match suggestions; every value is range-checked, defaults included.
    """
    fields = hparam_fields(cls)
    who = f"{owner}: " if owner else ""
    values: dict[str, Any] = {}
    for key, raw in (overrides or {}).items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=2)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise HyperparameterError(f"{who}unknown hyperparameter {key!r}{hint} (known: {', '.join(fields)})")
        try:
            values[key] = _coerce(key, _field_type(cls, fields[key]), raw)
        except HyperparameterError as exc:
            raise HyperparameterError(f"{who}{exc}") from None
    try:
        resolved = cls(**values)
    except HyperparameterError as exc:
        raise HyperparameterError(f"{who}{exc}") from None
    for name, f in fields.items():
        try:
            _check_range(name, f.metadata, getattr(resolved, name))
        except HyperparameterError as exc:
            raise HyperparameterError(f"{who}{exc}") from None
    return resolved


def hparams_dict(hparams: Any) -> dict[str, Any]:
    """A JSON-ready dict of a resolved hyperparameter dataclass."""
    return dataclasses.asdict(hparams)
