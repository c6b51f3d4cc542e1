"""Third-party adapter code, seen from a process that holds database credentials.

The trust boundary (CONTRIBUTING.md): adapter code that is not ngbench's own runs only in
worker processes, which never receive database credentials. Built-in adapters
(``backends/<b>/optimizers``) are ngbench's code and may be imported anywhere. Any other
adapter — an entry point of another distribution, a ``module:Class`` or ``file.py:Class``
reference — is imported by a credential-holding process (the sweep parent, ``ngbench run``,
``ngbench approx``, ``ngbench site build``) only through this module, which asks a scrubbed
worker (:mod:`harness.worker`, request ``describe``) for everything the parent needs: name,
version, capabilities, hyperparameter documentation, and validated hyperparameters.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.spec import (
    BACKENDS,
    ENTRY_POINT_GROUP,
    Choice,
    HyperparameterError,
    LogUniform,
    OneMinusLogUniform,
    Uniform,
    hparam_fields,
    hparams_dict,
)
from harness import registry
from harness.errors import USER_ERRORS
from harness.keys import adapter_version
from harness.worker import request_in_worker


@dataclass(frozen=True)
class HyperparamDoc:
    name: str
    type: str
    default: Any
    doc: str
    range: str
    #: Where the default comes from (``backends.spec.PROVENANCES``; "" when the card does not say).
    provenance: str = ""
    source: str = ""


@dataclass(frozen=True)
class AdapterInfo:
    """What a parent process may know about an adapter without running its code."""

    name: str
    backend: str
    paper: str
    description: str
    version: str
    origin: str
    likelihoods: tuple[str, ...]
    capabilities: dict[str, str]
    hyperparams: tuple[HyperparamDoc, ...]
    search_space: dict[str, str]
    presets: tuple[str, ...]
    #: Validated hyperparameters of the requested points: ``point_key(point, preset) ->
    #: {"hparams": resolved}`` or ``{"error": message}``.
    resolved: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolve(self, point: Mapping[str, Any], preset: str | None = None) -> dict[str, Any]:
        """The resolved hyperparameters of a requested point; raises the validation error."""
        entry = self.resolved[point_key(point, preset)]
        if "error" in entry:
            raise HyperparameterError(entry["error"])
        return dict(entry["hparams"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterInfo:
        data = dict(data)
        data["hyperparams"] = tuple(HyperparamDoc(**h) for h in data["hyperparams"])
        data["likelihoods"] = tuple(data["likelihoods"])
        data["presets"] = tuple(data["presets"])
        return cls(**data)


def point_key(point: Mapping[str, Any], preset: str | None = None) -> str:
    return json.dumps({"point": dict(point), "preset": preset}, sort_keys=True, default=str)


def is_builtin(name: str, backend: str) -> bool:
    """Whether ``name`` is one of ngbench's own adapters in ``backend`` (imports only those)."""
    return ":" not in name and name in registry.builtin_names(backend)


def entry_point_names(backend: str) -> list[str]:
    """Names offered by installed distributions for ``backend``, read from their metadata only
    (``name`` or ``name.<backend>``; nothing is imported)."""
    out = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        head, dot, tail = ep.name.rpartition(".")
        if dot and head and tail in BACKENDS:
            if tail == backend:
                out.append(head)
        else:
            out.append(ep.name)
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------- describing a class


def describe_range(meta: Mapping[str, Any]) -> str:
    choices = meta.get("choices")
    if choices:
        return "one of " + ", ".join(map(repr, choices))
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    left = "[" if meta.get("low_inclusive", True) else "("
    right = "]" if meta.get("high_inclusive", True) else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    if low is not None and high is None:
        return f"{'≥' if left == '[' else '>'} {lo}"
    if high is not None and low is None:
        return f"{'≤' if right == ']' else '<'} {hi}"
    return f"{left}{lo}, {hi}{right}"


def describe_distribution(dist: Any) -> str:
    if isinstance(dist, LogUniform):
        return f"log-uniform [{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, Uniform):
        return f"uniform [{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, OneMinusLogUniform):
        return f"1 − log-uniform [{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, Choice):
        return "one of " + ", ".join(map(repr, dist.values))
    return repr(dist)


def _type_name(kind: Any) -> str:
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return repr(value)


def describe_class(cls: type, points: Iterable[tuple[Mapping[str, Any], str | None]] = ()) -> AdapterInfo:
    """Describe an adapter class (in the process that imported it) and validate ``points``."""
    hints = typing.get_type_hints(cls.Hyperparams)  # type: ignore[attr-defined]
    docs = []
    for name, f in hparam_fields(cls.Hyperparams).items():  # type: ignore[attr-defined]
        default = f.default if f.default is not dataclasses.MISSING else None
        docs.append(
            HyperparamDoc(
                name=name,
                type=_type_name(hints.get(name, f.type)),
                default=_jsonable(default),
                doc=str(f.metadata.get("doc", "")),
                range=describe_range(dict(f.metadata)),
                provenance=str(f.metadata.get("provenance") or ""),
                source=str(f.metadata.get("source") or ""),
            )
        )
    caps = dataclasses.asdict(cls.capabilities)  # type: ignore[attr-defined]
    resolved: dict[str, dict[str, Any]] = {}
    for point, preset in points:
        try:
            hp = cls.resolve(dict(point), preset)  # type: ignore[attr-defined]
            resolved[point_key(point, preset)] = {"hparams": hparams_dict(hp)}
        except Exception as exc:  # validation errors travel as text
            resolved[point_key(point, preset)] = {"error": str(exc)}
    return AdapterInfo(
        name=cls.name,  # type: ignore[attr-defined]
        backend=cls.backend,  # type: ignore[attr-defined]
        paper=str(cls.paper),  # type: ignore[attr-defined]
        description=str(cls.description),  # type: ignore[attr-defined]
        version=adapter_version(cls),
        origin=registry.adapter_origin(cls),
        likelihoods=tuple(sorted(cls.capabilities.likelihoods)),  # type: ignore[attr-defined]
        capabilities={k: ", ".join(sorted(v)) if isinstance(v, (set, frozenset)) else str(v) for k, v in caps.items()},
        hyperparams=tuple(docs),
        search_space={k: describe_distribution(v) for k, v in cls.search_space.items()},  # type: ignore[attr-defined]
        presets=tuple(cls.presets),  # type: ignore[attr-defined]
        resolved=resolved,
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class DescribeRequest:
    """Describe ``optimizer`` in ``backend`` and validate its hyperparameter ``points``."""

    optimizer: str
    backend: str
    points: tuple[tuple[dict[str, Any], str | None], ...] = ((dict(), None),)

    def to_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "backend": self.backend, "points": [[p, s] for p, s in self.points]}


def describe_here(request: Mapping[str, Any]) -> dict[str, Any]:
    """Body of the worker's ``describe`` request: ``{"info": ...}`` or ``{"error": message}``."""
    points = [(dict(p), s) for p, s in request.get("points", [[{}, None]])]
    try:
        cls = registry.get_adapter(request["optimizer"], request["backend"])
        return {"info": describe_class(cls, points).to_dict()}
    except USER_ERRORS as exc:
        return {"error": str(exc)}
    except Exception as exc:  # third-party code may raise anything while being described
        return {"error": f"cannot describe adapter {request['optimizer']!r}: {type(exc).__name__}: {exc}"}


def describe_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's ``describe`` handler: ``{"items": [DescribeRequest dict, ...]}`` → ``{"describe": [...]}``."""
    return {"describe": [describe_here(item) for item in request["items"]]}


def describe(
    requests: Sequence[DescribeRequest], *, timeout_s: float = 300.0, all_in_worker: bool = False
) -> list[AdapterInfo | str]:
    """Describe adapters: built-ins in this process, everything else in ONE scrubbed worker
    (``all_in_worker``: built-ins too, so that this process imports no backend at all).

    Returns, per request, an :class:`AdapterInfo` or an error message.
    """
    out: list[AdapterInfo | str | None] = [None] * len(requests)
    external: list[int] = []
    for i, req in enumerate(requests):
        if not all_in_worker and is_builtin(req.optimizer, req.backend):
            answer = describe_here(req.to_dict())
            out[i] = AdapterInfo.from_dict(answer["info"]) if "info" in answer else answer["error"]
        else:
            external.append(i)
    if external:
        envelope = request_in_worker(
            {
                "op": "describe",
                "handler": f"{__name__}:describe_request",
                "items": [requests[i].to_dict() for i in external],
            },
            timeout_s=timeout_s,
        )
        for i, answer in zip(external, envelope["describe"], strict=True):
            out[i] = AdapterInfo.from_dict(answer["info"]) if "info" in answer else answer["error"]
    return [o for o in out if o is not None]


def describe_all_here(backends: Sequence[str]) -> dict[str, Any]:
    """Body of the worker's ``describe_all`` request: every adapter of every backend
    (built-ins and entry points), plus the entry points that failed to load."""
    out: dict[str, Any] = {"adapters": {}, "errors": []}
    for backend in backends:
        try:
            classes = registry.adapters(backend)
        except Exception as exc:  # a backend whose adapters cannot load is reported, not fatal
            out["errors"].append(f"{backend}: {type(exc).__name__}: {exc}")
            continue
        infos = []
        for cls in classes.values():
            try:
                infos.append(describe_class(cls).to_dict())
            except Exception as exc:
                out["errors"].append(f"{backend} adapter {getattr(cls, 'name', cls)!r}: {type(exc).__name__}: {exc}")
        out["adapters"][backend] = infos
        out["errors"].extend(registry.entry_point_errors(backend))
    return out


def describe_all_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The worker's ``describe_all`` handler: ``{"backends": [...]}`` → ``{"describe_all": ...}``."""
    return {"describe_all": describe_all_here(request["backends"])}


def describe_all(
    backends: Sequence[str], *, timeout_s: float = 300.0
) -> tuple[dict[str, list[AdapterInfo]], list[str]]:
    """Every available adapter of ``backends``, described by one scrubbed worker (this process
    imports neither a backend nor third-party code); and the problems met."""
    envelope = request_in_worker(
        {"op": "describe_all", "handler": f"{__name__}:describe_all_request", "backends": list(backends)},
        timeout_s=timeout_s,
    )
    answer = envelope["describe_all"]
    adapters = {b: [AdapterInfo.from_dict(d) for d in infos] for b, infos in answer["adapters"].items()}
    return adapters, list(answer["errors"])
