"""From an :class:`ApproxSpec` to a validated :class:`Plan`: names and hyperparameters resolved, the
methods' variants per damping, and the feeding lanes of stateful methods.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backends.spec import Adapter, HyperparameterError, hparam_fields
from harness import external, registry
from harness.approx.exact import EXACT_MAX_ENTRIES
from harness.errors import ConfigError
from harness.registry import adapters as registry_adapters
from harness.registry import backend_module, get_adapter
from harness.runner import check_limits as check_run_limits
from suites import get_suite
from suites.spec import Suite

# --------------------------------------------------------------------------- methods and state

#: The approximation track's default: ONE damping shared by every method that has one (the iEF
#: paper's E1 protocol, Sec. 7: EF, SF and iEF compared at the same near-undamped lambda), in
#: this project's mean-loss convention. The paper's LoRA lambda = 1e-7 at batch 32 is ~3e-9
#: here; 1e-6 keeps every method's float32 solve well conditioned while staying far below every
#: method's training default. A method's own default damping is the labelled alternative.
SHARED_DAMPING = 1e-6


@dataclass
class Variant:
    """One method at one damping: its adapter, resolved hyperparameters, how it gets its state."""

    method: str
    adapter_cls: type[Adapter]
    hparams: Any
    #: The damping column of its rows (``None``: the method has no ``damping``).
    damping: float | None
    #: ``adaptive_damping`` was switched off by the damping sweep.
    fixed_damping: bool = False
    #: Its state is fed along the reference trajectory.
    fed: bool = False
    adapter: Adapter = field(init=False)

    def __post_init__(self) -> None:
        self.adapter = self.adapter_cls()

    @property
    def label(self) -> str:
        return self.method if self.damping is None else f"{self.method}@{self.damping:g}"


def _is_counter(value: Any, to_numpy: Callable[[Any], Any]) -> bool:
    if isinstance(value, (bool, int, str)):
        return True
    if value is None or isinstance(value, (tuple, list, dict, float)):
        return False
    try:
        arr = np.asarray(to_numpy(value))
    except Exception:  # not an array of this backend: treat as state
        return False
    return arr.ndim == 0 and arr.dtype.kind in "biu"


def needs_feeding(adapter_cls: type[Adapter], state: Any, problem: Any) -> bool:
    """Whether a method's direction may depend on state built up over steps.

    The adapter's ``capabilities.stateful_direction`` decides when it exists; otherwise a state
    whose fields besides ``hparams`` are all counters (Python ints, 0-d integer arrays) needs
    no feeding (EF, iEF, SF: a step counter for the learning-rate schedule), and anything else
    -- arrays, floats, ``None`` placeholders that later hold arrays -- does.
    """
    declared = getattr(adapter_cls.capabilities, "stateful_direction", None)
    if isinstance(declared, bool):
        return declared
    fields = state._asdict() if hasattr(state, "_asdict") else None
    if fields is None:
        return True
    return not all(_is_counter(v, problem.to_numpy) for k, v in fields.items() if k != "hparams")


def state_damping(state: Any, problem: Any) -> float | None:
    """The damping a state carries (K-FAC's, EGN's, AdamQLR's adapted ``lam``), if any."""
    value = getattr(state, "damping", None)
    if value is None or isinstance(value, bool):
        return None
    try:
        arr = np.asarray(problem.to_numpy(value) if not isinstance(value, (int, float)) else value, dtype=np.float64)
    except Exception:  # an unexpected type: no damping to report
        return None
    return float(arr) if arr.ndim == 0 and np.isfinite(arr) else None


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class ApproxSpec:
    """What to evaluate (see the module docstring).

    ``optimizers``: method names or ``module:Class`` references (``None``: every available
    adapter of the backend); ``damping``: the sweep (``None``: each method's own);
    ``hparams``: per-method overrides applied before the damping; ``steps``: the reference
    trajectory's length (default: the suite's step budget); ``exact_limit``: largest ``B*C*P``
    for the exact NG (0 disables it).
    """

    suite: str
    backend: str = "torch"
    optimizers: tuple[str, ...] | None = None
    reference: str = "adamw"
    reference_hparams: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: int = 5
    batches: int = 16
    damping: tuple[float, ...] | None = None
    seed: int = 0
    steps: int | None = None
    state_window: int | None = None
    dtype: str = "float32"
    device: str = "auto"
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    exact_limit: int = EXACT_MAX_ENTRIES
    tag: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["optimizers"] = list(self.optimizers) if self.optimizers is not None else None
        out["damping"] = list(self.damping) if self.damping is not None else None
        out["hparams"] = {k: dict(v) for k, v in self.hparams.items()}
        out["reference_hparams"] = dict(self.reference_hparams)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApproxSpec:
        data = dict(data)
        for name in ("optimizers", "damping"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)

    def adapter_names(self) -> list[str]:
        """Reference and methods, named without importing any adapter (``harness.external``)."""
        methods = list(self.optimizers) if self.optimizers is not None else None
        if methods is None:
            methods = registry.builtin_names(self.backend) + external.entry_point_names(self.backend)
        return [self.reference, *methods]

    def _third_party(self, name: str) -> bool:
        offered = set(external.entry_point_names(self.backend))
        return ":" in name or (name in offered and not external.is_builtin(name, self.backend))

    @property
    def involves_third_party(self) -> bool:
        """Whether any adapter of the evaluation comes from outside ngbench (then it runs in a
        worker). Unknown names are not third-party: they fail validation in the parent."""
        return any(self._third_party(name) for name in self.adapter_names())

    def local_part(self) -> ApproxSpec | None:
        """This evaluation without its third-party methods, for checking in the parent (``None``
        where the reference itself is third-party): bad suites, names, dtypes and built-in
        hyperparameters fail before the worker starts or the database is opened."""
        if self._third_party(self.reference):
            return None
        local = tuple(n for n in self.adapter_names()[1:] if not self._third_party(n)) or (self.reference,)
        hparams = {k: v for k, v in self.hparams.items() if k in local}
        return dataclasses.replace(self, optimizers=local, hparams=hparams)


@dataclass
class Plan:
    """A validated spec: suite, reference adapter and hyperparameters, methods, skips."""

    spec: ApproxSpec
    suite: Suite
    steps: int
    reference_cls: type[Adapter]
    reference_hparams: Any
    methods: list[tuple[str, type[Adapter], Any]]
    skipped: dict[str, str]


def check_limits(spec: ApproxSpec) -> None:
    """The reference run's tag, names, device and seed fit every database (:mod:`db.limits`)."""
    check_run_limits(spec, optimizer=spec.reference)


def prepare(spec: ApproxSpec) -> Plan:
    """Resolve names and hyperparameters; raises the user errors of bad input before anything runs."""
    check_limits(spec)
    suite = get_suite(spec.suite)
    backend_module(spec.backend)
    if spec.dtype not in ("float32", "float64"):
        raise ConfigError(f"unknown dtype {spec.dtype!r} (known: float32, float64)")
    if spec.checkpoints < 1:
        raise ConfigError(f"checkpoints must be >= 1, got {spec.checkpoints}")
    if spec.batches < 1:
        raise ConfigError(f"batches must be >= 1, got {spec.batches}")
    if spec.steps is not None and spec.steps < 0:
        raise ConfigError(f"steps must be >= 0, got {spec.steps}")
    if spec.state_window is not None and spec.state_window < 1:
        raise ConfigError(f"state_window must be >= 1 (or None for the whole trajectory), got {spec.state_window}")
    if spec.exact_limit < 0:
        raise ConfigError(f"exact_limit must be >= 0, got {spec.exact_limit}")
    for lam in spec.damping or ():
        if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"damping values must be finite and >= 0, got {lam!r}")
    reference_cls = get_adapter(spec.reference, spec.backend)
    if suite.likelihood not in reference_cls.capabilities.likelihoods:
        raise ConfigError(f"reference {spec.reference!r} does not support likelihood {suite.likelihood!r}")
    reference_hparams = reference_cls.resolve(spec.reference_hparams)
    names = list(spec.optimizers) if spec.optimizers is not None else list(registry_adapters(spec.backend))
    if not names:
        raise ConfigError("no optimizers to evaluate")
    if len(set(names)) != len(names):
        raise ConfigError(f"optimizers listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    unknown = set(spec.hparams) - set(names)
    if unknown:
        raise ConfigError(f"hyperparameters given for optimizers not evaluated: {', '.join(sorted(unknown))}")
    methods: list[tuple[str, type[Adapter], Any]] = []
    skipped: dict[str, str] = {}
    for name in names:
        cls = get_adapter(name, spec.backend)
        overrides = dict(spec.hparams.get(name, {}))
        base = cls.resolve(overrides)  # bad user hyperparameters are input errors
        label = cls.name if ":" in name else name
        if suite.likelihood not in cls.capabilities.likelihoods:
            skipped[label] = f"does not support likelihood {suite.likelihood!r}"
            continue
        cap = cls.capabilities.max_params
        if cap is not None and suite.model.num_params() > cap:
            skipped[label] = f"{suite.model.num_params()} parameters exceed its max_params {cap}"
            continue
        methods.append((label, cls, (overrides, base)))
    steps = int(spec.steps if spec.steps is not None else suite.budget.steps)
    return Plan(spec, suite, steps, reference_cls, reference_hparams, methods, skipped)


def build_variants(plan: Plan) -> tuple[list[Variant], dict[str, str]]:
    """One :class:`Variant` per method and damping; damping values a method rejects are skipped."""
    variants: list[Variant] = []
    skipped: dict[str, str] = {}
    for name, cls, (overrides, base) in plan.methods:
        fields = hparam_fields(cls.Hyperparams)
        if plan.spec.damping is None or "damping" not in fields:
            damping = getattr(base, "damping", None) if "damping" in fields else None
            variants.append(Variant(name, cls, base, None if damping is None else float(damping)))
            continue
        for lam in plan.spec.damping:
            sweep: dict[str, Any] = {**overrides, "damping": float(lam)}
            fixed = "adaptive_damping" in fields and isinstance(getattr(base, "adaptive_damping", None), bool)
            if fixed:
                sweep["adaptive_damping"] = False
            try:
                hp = cls.resolve(sweep)
            except HyperparameterError as exc:
                skipped[f"{name}@{lam:g}"] = str(exc)
                continue
            variants.append(Variant(name, cls, hp, float(lam), fixed_damping=fixed))
    return variants, skipped


# --------------------------------------------------------------------------- feeding lanes


@dataclass
class FeedingLane:
    """A variant's state fed from ``start`` on, serving the checkpoints ``serves``."""

    variant: Variant
    start: int
    serves: tuple[int, ...]
    state: Any = None
    #: Reference steps whose feeding step raised (skipped: the last good state is kept).
    feed_errors: int = 0
    first_feed_error: str | None = None


def plan_lanes(variants: Sequence[Variant], ckpt_steps: Sequence[int], window: int | None) -> list[FeedingLane]:
    lanes: list[FeedingLane] = []
    for v in variants:
        if not v.fed or window is None or window >= max(ckpt_steps):
            lanes.append(FeedingLane(v, 0, tuple(range(len(ckpt_steps)))))
            continue
        starts: dict[int, list[int]] = {}
        for k, s in enumerate(ckpt_steps):
            starts.setdefault(max(0, s - window), []).append(k)
        lanes.extend(FeedingLane(v, start, tuple(ks)) for start, ks in sorted(starts.items()))
    return lanes


def one_line(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"[:1000]
