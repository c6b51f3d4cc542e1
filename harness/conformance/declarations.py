"""Checks of what an adapter declares: the class, its hyperparameters, search space and
capabilities, and the refusal of invalid hyperparameter values.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import typing
from collections.abc import Mapping
from typing import Any, Literal

from backends.spec import (
    BACKENDS,
    Adapter,
    Capabilities,
    Choice,
    HyperparameterError,
    LogUniform,
    OneMinusLogUniform,
    sample_distribution,
)
from harness import registry
from harness.conformance.base import DISTRIBUTIONS, NAME_PATTERN, CheckFailure, base_types, first_line, hint_names
from harness.conformance.context import Check, Context
from suites.spec import LIKELIHOODS


def _check_adapter(ctx: Context) -> str:
    cls = ctx.cls
    if not isinstance(cls, type):
        raise CheckFailure(f"{ctx.target} is a {type(cls).__name__}, not a class")
    if not issubclass(cls, Adapter):
        raise CheckFailure(
            f"{cls.__qualname__} is not a subclass of backends.spec.Adapter "
            "(subclass adapter_class(CARD, backend) or Adapter)"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CheckFailure(
            f"name {name!r} is not a lowercase slug [a-z][a-z0-9_-]* of at most 40 characters "
            "(it appears in URLs, file names and the database)"
        )
    backend = getattr(cls, "backend", None)
    if backend not in BACKENDS:
        raise CheckFailure(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend != ctx.backend:
        raise CheckFailure(f"the class says backend {backend!r}, but it is checked for {ctx.backend!r}")
    for attr in ("paper", "description"):
        value = getattr(cls, attr, None)
        if not isinstance(value, str) or not value.strip():
            raise CheckFailure(f"{attr} must be a non-empty string (it is shown on the leaderboard)")
    params = {
        "init": ("problem", "hparams"),
        "step": ("problem", "params", "state", "batch"),
        "direction": ("problem", "params", "state", "batch"),
    }
    for method, args in params.items():
        impl = getattr(cls, method, None)
        if impl is None or impl is getattr(Adapter, method):
            raise CheckFailure(f"{method} is not implemented")
        try:
            inspect.signature(impl).bind(None, *([None] * len(args)))
        except (TypeError, ValueError):
            raise CheckFailure(f"{method} must accept (self, {', '.join(args)})") from None
    if registry.backend_available(backend):
        builtin = registry.adapters(backend).get(name)
        if builtin is not None and builtin is not cls and registry.adapter_origin(builtin).startswith("built-in"):
            raise CheckFailure(f"name {name!r} is taken by the built-in {builtin.__module__}.{builtin.__qualname__}")
    return f"{cls.__qualname__} {name!r} ({backend}) from {registry.adapter_origin(cls)}"


def _check_hyperparams(ctx: Context) -> str:
    cls = ctx.cls
    hp_cls = getattr(cls, "Hyperparams", None)
    if not (isinstance(hp_cls, type) and dataclasses.is_dataclass(hp_cls)):
        raise CheckFailure("Hyperparams is not a dataclass (declare a frozen dataclass of hparam(...) fields)")
    if not hp_cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise CheckFailure("Hyperparams must be a frozen dataclass (hashable: JAX jits with it as a static argument)")
    hints = hint_names(hp_cls)
    fields = dataclasses.fields(hp_cls)
    for f in fields:
        if f.default is dataclasses.MISSING:
            raise CheckFailure(f"hyperparameter {f.name!r} has no default (use hparam(default, doc=...))")
        doc = f.metadata.get("doc")
        if not isinstance(doc, str) or not doc.strip():
            raise CheckFailure(f"hyperparameter {f.name!r} has no doc (declare it with hparam(default, doc=...))")
        kinds = base_types(hints.get(f.name, f.type))
        if len(kinds) != 1:
            raise CheckFailure(f"hyperparameter {f.name!r}: unsupported type {hints.get(f.name)!r}")
        kind = kinds[0]
        literal = typing.get_origin(kind) is Literal
        if not literal and kind not in (bool, int, float, str):
            raise CheckFailure(f"hyperparameter {f.name!r}: type {kind!r} is not bool, int, float, str or Literal")
        meta = f.metadata
        if kind in (int, float) and meta.get("low") is None and meta.get("high") is None and not meta.get("choices"):
            raise CheckFailure(
                f"hyperparameter {f.name!r} has no admissible range (give hparam(..., low=..., high=...)) "
                "so that invalid values are refused"
            )
        if kind is str and not meta.get("choices"):
            raise CheckFailure(f"hyperparameter {f.name!r} is a free string (give choices=(...) or a Literal type)")
    if ctx.hparams is None:
        raise CheckFailure(f"the default hyperparameters do not resolve: {ctx.hparams_error}")
    try:
        hash(ctx.hparams)
    except TypeError as exc:
        raise CheckFailure(f"the resolved hyperparameters are not hashable: {exc}") from None
    presets = getattr(cls, "presets", {}) or {}
    for preset in presets:
        try:
            cls.resolve(preset=preset)
        except Exception as exc:
            raise CheckFailure(f"preset {preset!r} does not resolve: {first_line(str(exc))}") from None
    extra = f", {len(presets)} preset(s)" if presets else ""
    return f"{len(fields)} typed hyperparameters with docs, ranges and valid defaults{extra}"


def _numeric_fields(cls: Any) -> list[dataclasses.Field[Any]]:
    hints = hint_names(cls.Hyperparams)
    return [
        f
        for f in dataclasses.fields(cls.Hyperparams)
        if any(k in (int, float) for k in base_types(hints.get(f.name, f.type)))
    ]


def _check_search_space(ctx: Context) -> str:
    cls = ctx.cls
    space = getattr(cls, "search_space", None)
    if not isinstance(space, Mapping):
        raise CheckFailure(f"search_space is a {type(space).__name__}, not a mapping name -> distribution")
    fields = (
        {f.name for f in dataclasses.fields(cls.Hyperparams)} if dataclasses.is_dataclass(cls.Hyperparams) else set()
    )
    if not space:
        if _numeric_fields(cls):
            raise CheckFailure("the search space is empty (the tuned track needs e.g. lr: LogUniform(1e-4, 1.0))")
        return "no hyperparameters to tune"
    for key, dist in space.items():
        if key not in fields:
            raise CheckFailure(f"search space names {key!r}, which is not a hyperparameter")
        if not isinstance(dist, DISTRIBUTIONS):
            raise CheckFailure(
                f"search space entry {key!r} is {dist!r}, not LogUniform, Uniform, OneMinusLogUniform or Choice"
            )
        if isinstance(dist, Choice):
            if not dist.values:
                raise CheckFailure(f"search space entry {key!r} has no choices")
        elif not (math.isfinite(dist.low) and math.isfinite(dist.high) and dist.low < dist.high):
            raise CheckFailure(f"search space entry {key!r}: need finite low < high, got {dist!r}")
        elif isinstance(dist, (LogUniform, OneMinusLogUniform)) and dist.low <= 0:
            raise CheckFailure(f"search space entry {key!r}: a log-uniform range needs low > 0, got {dist!r}")
        for u in (0.0, 0.5, 1.0 - 1e-12):
            value = sample_distribution(dist, u)
            try:
                cls.resolve({key: value})
            except Exception as exc:
                raise CheckFailure(f"search space sample {key}={value!r} is refused: {first_line(str(exc))}") from None
    return f"{len(space)} distribution(s): {', '.join(space)}"


def _check_capabilities(ctx: Context) -> str:
    caps = getattr(ctx.cls, "capabilities", None)
    if not isinstance(caps, Capabilities):
        raise CheckFailure(f"capabilities is a {type(caps).__name__}, not backends.spec.Capabilities")
    unknown = set(caps.likelihoods) - set(LIKELIHOODS)
    if unknown:
        raise CheckFailure(f"unknown likelihood(s) {sorted(unknown)} (known: {', '.join(LIKELIHOODS)})")
    if not caps.likelihoods:
        raise CheckFailure("capabilities.likelihoods is empty: the adapter could run on no suite")
    for flag in ("step_along_direction", "uses_sample_indices", "samples_labels"):
        if not isinstance(getattr(caps, flag), bool):
            raise CheckFailure(f"capabilities.{flag} must be a bool")
    if caps.max_params is not None and (
        isinstance(caps.max_params, bool) or not isinstance(caps.max_params, int) or caps.max_params <= 0
    ):
        raise CheckFailure(f"capabilities.max_params must be None or a positive int, got {caps.max_params!r}")
    flags = [f for f in ("step_along_direction", "uses_sample_indices", "samples_labels") if getattr(caps, f)]
    return f"likelihoods {', '.join(sorted(caps.likelihoods))}; {', '.join(flags) or 'no flags'}"


def _invalid_values(f: dataclasses.Field[Any], kind: Any) -> list[Any]:
    """Values of ``f`` that must be refused: outside its range, not of its type, not a choice."""
    meta = f.metadata
    out: list[Any] = []
    if typing.get_origin(kind) is Literal or meta.get("choices"):
        out.append("__not_a_choice__")
    if kind is bool:
        out.append("maybe")
    if kind in (int, float):
        out.append("not-a-number")
        low, high = meta.get("low"), meta.get("high")
        if low is not None:
            out.append(low if not meta.get("low_inclusive", True) else low - max(1.0, abs(low)))
        if high is not None:
            out.append(high if not meta.get("high_inclusive", True) else high + max(1.0, abs(high)))
    if kind is int:
        out.append(2.5)
    return [int(v) if kind is int and isinstance(v, float) and v.is_integer() else v for v in out]


def _check_invalid_hparams(ctx: Context) -> str:
    cls = ctx.cls
    hints = hint_names(cls.Hyperparams)
    tried = 0

    def refused(overrides: dict[str, Any], name: str) -> None:
        try:
            cls.resolve(overrides)
        except HyperparameterError as exc:
            if name not in str(exc):
                raise CheckFailure(f"{overrides} is refused, but the message does not name {name!r}: {exc}") from None
            return
        except Exception as exc:
            raise CheckFailure(
                f"{overrides} is refused with {type(exc).__name__} instead of HyperparameterError: "
                f"{first_line(str(exc))}"
            ) from None
        raise CheckFailure(f"invalid hyperparameter {overrides} is accepted silently")

    refused({"no_such_hyperparameter": 1}, "no_such_hyperparameter")
    for f in dataclasses.fields(cls.Hyperparams):
        for kind in base_types(hints.get(f.name, f.type)):
            for value in _invalid_values(f, kind):
                refused({f.name: value}, f.name)
                tried += 1
    return f"{tried + 1} invalid values refused with a message naming the hyperparameter"


#: The checks of this module, in battery order.
DECLARATION_CHECKS: tuple[Check, ...] = (
    Check(
        "adapter", "an Adapter subclass with name, backend, paper, description, init/step/direction", _check_adapter, ()
    ),
    Check("hyperparams", "a frozen dataclass of typed, documented, range-checked defaults", _check_hyperparams),
    Check(
        "search_space",
        "distributions over known hyperparameters whose samples resolve",
        _check_search_space,
        ("adapter", "hyperparams"),
    ),
    Check("capabilities", "a Capabilities with known likelihoods", _check_capabilities),
    Check(
        "invalid_hparams",
        "invalid values refused with a clear HyperparameterError",
        _check_invalid_hparams,
        ("adapter", "hyperparams"),
    ),
)
