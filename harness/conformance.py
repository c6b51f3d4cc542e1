"""The conformance battery: what every optimizer adapter must pass before it is benchmarked.

``ngbench check-adapter NAME|module:Class`` and :func:`check_adapter` run the named checks of
:data:`CHECKS` on one adapter class, in float64 on the tiny suites (``tiny-ce``, ``tiny-mse``)
and on two convex problems built here (multinomial logistic regression on the wine data,
linear least squares on the diabetes data; never registered in the suite catalogue). Each
check reports ``pass``, ``fail`` or ``skip`` with a one-line reason; an exception raised by
adapter code fails the check that called it, with the exception and the adapter's line in the
reason and the traceback in :attr:`CheckResult.detail`. The whole battery takes a few
seconds for one adapter on CPU.

The checks, in order (the contract they enforce is ``backends.spec``):

``adapter``               a subclass of ``backends.spec.Adapter``: a lowercase name not taken by a
                          built-in, the requested backend, paper and description, and its own
                          ``init``/``step``/``direction`` with the contract's signatures;
``hyperparams``           ``Hyperparams`` is a frozen dataclass; every field has a typed default,
                          a ``doc`` and an admissible range (numbers: ``low``/``high``; strings:
                          ``choices`` or ``Literal``); defaults and presets resolve;
``search_space``          names known hyperparameters with valid distributions whose samples
                          resolve; not empty when there are numeric hyperparameters;
``capabilities``          a ``Capabilities`` with known likelihoods;
``invalid_hparams``       out-of-range, ill-typed and unknown values are refused with a
                          ``HyperparameterError`` naming the hyperparameter;
``init``                  the state is a ``NamedTuple`` whose first field is the hyperparameters;
``step_outputs``          ``step`` returns ``(params, state, stats)``: flat parameters of the
                          input's shape, dtype and device, finite; the state's type; ``stats`` with
                          scalar values under identifier names and ``loss`` equal to the mean batch
                          loss at the incoming parameters;
``direction_outputs``     ``direction`` is flat, of the parameters' dtype, finite, not zero, and
                          repeatable (it does not advance the state); eager equals jitted (JAX);
``float32``               float32 parameters, directions and floating state arrays stay float32
                          (0-d control scalars such as an adaptive damping may be float64);
``no_mutation``           ``step`` and ``direction`` write neither into the parameters, the batch
                          nor the state they are given;
``deterministic``         two runs from the same seed with one adapter instance give identical
                          parameters; a difference is diagnosed as state on ``self`` when a new
                          instance repeats the first run, else as randomness;
``state_roundtrip``       a state pickled (and ``torch.save``-d) and loaded continues exactly as
                          the original, in another adapter instance (PyTorch);
``lowers_loss``           default hyperparameters lower the training loss of both convex
                          problems by at least :data:`MIN_CONVEX_DECREASE`;
``direction_consistent``  with ``capabilities.step_along_direction``, the first update from a
                          fresh state is ``-stats["lr"] * direction`` (rtol :data:`CONSISTENCY_RTOL`);
                          skipped when the adapter declares otherwise;
``suite_blind``           renaming the first tiny suite (name, version, description, paper,
                          target) changes nothing: adapters must not pick hyperparameters from it;
``hidden_work``           ``init`` runs no forward/backward/JVP/VJP pass and no Python thread is
                          left running: per-step work happens inside ``step``, under the timer;
``parity``                where the method exists in both backends: direction and first update
                          agree in float64 to rtol :data:`PARITY_RTOL` (as ``tests/test_parity.py``).

What the battery cannot see (reading a suite's data to pick hyperparameters, work hidden in
another process, custom kernels) is forbidden by ``CONTRIBUTING.md`` and left to review.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
import pickle
import re
import signal
import sys
import threading
import time
import traceback
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from backends.spec import (
    BACKENDS,
    Adapter,
    Capabilities,
    Choice,
    HyperparameterError,
    LogUniform,
    OneMinusLogUniform,
    Uniform,
    sample_distribution,
)
from harness import registry
from harness.errors import ConfigError
from suites import get_suite
from suites.layers import Linear, ModelSpec
from suites.spec import LIKELIHOODS, Dataset, Suite

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
_DISTRIBUTIONS = (LogUniform, Uniform, OneMinusLogUniform, Choice)


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


def _first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in str(text).splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _exception_reason(what: str, exc: BaseException, files: Sequence[str]) -> str:
    """``what raised Type: message (file:line)``, at the innermost frame in ``files`` if any."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if f.filename in files]
    frame = own[-1] if own else (frames[-1] if frames else None)
    where = f" ({frame.filename}:{frame.lineno})" if frame is not None else ""
    return f"{what} raised {type(exc).__name__}: {_first_line(str(exc))}{where}"


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
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


def _leaves(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` of a state: tuples (named fields by name), lists and dicts are walked."""
    if isinstance(tree, tuple):
        names = getattr(tree, "_fields", None)
        for i, item in enumerate(tree):
            yield from _leaves(item, f"{path}.{names[i]}" if names else f"{path}[{i}]")
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from _leaves(item, f"{path}[{i}]")
    elif isinstance(tree, dict):
        for key, item in tree.items():
            yield from _leaves(item, f"{path}[{key!r}]")
    else:
        yield path, tree


def _scalar(value: Any) -> float:
    """``float(value)`` for Python numbers and one-element arrays; raises otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    shape = getattr(value, "shape", None)
    if shape is not None and int(np.prod(shape)) == 1:
        return float(np.asarray(value).reshape(()))
    raise TypeError(f"{type(value).__name__} is not a scalar")


def _max_rel(actual: np.ndarray, desired: np.ndarray) -> float:
    """Largest ``|actual - desired|`` relative to ``max |desired|`` (NaN if either is not finite)."""
    if actual.shape != desired.shape or not (np.all(np.isfinite(actual)) and np.all(np.isfinite(desired))):
        return math.nan
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    diff = float(np.max(np.abs(actual - desired))) if desired.size else 0.0
    return diff / scale if scale > 0 else diff


def _close(actual: np.ndarray, desired: np.ndarray, rtol: float) -> bool:
    """Elementwise ``rtol`` with an absolute floor of ``rtol`` times the largest entry; finite only."""
    if actual.shape != desired.shape or not (np.all(np.isfinite(actual)) and np.all(np.isfinite(desired))):
        return False
    scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    return bool(np.allclose(actual, desired, rtol=rtol, atol=rtol * scale))


def _hint_names(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:
        raise CheckFailure(f"cannot resolve the type annotations of {cls.__name__}: {_first_line(str(exc))}") from None


def _base_types(kind: Any) -> list[Any]:
    """``float | None`` -> ``[float]``; ``Literal[...]`` stays itself."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(kind) if a is not type(None)]
    return [kind]


def convex_suite(likelihood: str) -> Suite:
    """A convex problem for ``likelihood``: one Linear layer (13 -> 3, 42 parameters) on the wine data.

    ``softmax_ce``: multinomial logistic regression; ``mse``: linear least squares on the
    one-hot class indicators. Batch 16 as the tiny suites, so the problem is over-parameterised
    (42 parameters > 16 samples) like every benchmark suite: sample-space methods (EF, iEF, SF,
    EGN) are in the regime their solves assume. (Least squares on the diabetes data has 11
    parameters < 16 samples; there iEF's Eqn 8 is a residual-weighted batch fit and its
    default unit-size steps raise the full loss. That is the method, not a contract breach.)
    Built here, never registered.
    """
    base = get_suite(TINY_SUITES["softmax_ce"])
    n_in, n_out = base.model.input_shape[0], base.num_outputs
    if likelihood == "softmax_ce":
        return base.replace(
            name="conformance-logreg",
            description="Convex check problem: multinomial logistic regression on the wine data.",
            model=ModelSpec((n_in,), (Linear(n_in, n_out),)),
            target=None,
        )

    def indicators() -> Dataset:
        data, eye = base.data, np.eye(n_out)
        return Dataset(data.x_train, eye[data.y_train], data.x_val, eye[data.y_val])

    return base.replace(
        name="conformance-lstsq",
        description="Convex check problem: linear least squares on the wine class indicators.",
        model=ModelSpec((n_in,), (Linear(n_in, n_out),)),
        likelihood="mse",
        load=indicators,
        target=None,
        val_metric="val_loss",
    )


def convex_loss(suite: Suite, params: np.ndarray) -> float:
    """The mean training loss of a :func:`convex_suite` at flat ``params``, in numpy (float64).

    Canonical layout: the weight ``(out, in)`` row-major, then the bias.
    """
    data = suite.data
    x = np.asarray(data.x_train, dtype=np.float64)
    n_in, n_out = x.shape[1], suite.num_outputs
    flat = np.asarray(params, dtype=np.float64)
    z = x @ flat[: n_out * n_in].reshape(n_out, n_in).T + flat[n_out * n_in :]
    if suite.likelihood == "softmax_ce":
        top = z.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(z)), np.asarray(data.y_train, dtype=np.int64)]))
    return float(np.mean(0.5 * np.sum((z - np.asarray(data.y_train, dtype=np.float64)) ** 2, axis=1)))


# --------------------------------------------------------------------------- context


@dataclass
class _Run:
    """A short trajectory: parameters after each step (numpy), stats, final state."""

    params: list[np.ndarray]
    stats: list[dict[str, Any]]
    state: Any
    last: Any


class Context:
    """What the checks share for one adapter: problems, one adapter instance, step functions."""

    def __init__(self, cls: Any, backend: str, target: str, device: str = "cpu") -> None:
        self.cls = cls
        self.backend = backend
        self.target = target
        self.device = device
        self.passed: set[str] = set()
        self.hparams: Any = None
        self.hparams_error: str | None = None
        self._problems: dict[tuple[str, str, str, str], Any] = {}
        #: (problem id, adapter id, kind) -> (compiled function, the adapter it holds alive).
        self._compiled_fns: dict[tuple[int, int, str], tuple[Callable[..., Any], Any]] = {}
        self._adapter: Any = None
        self._fresh: Any = None
        module = getattr(cls, "__module__", None)
        mod = sys.modules.get(module) if isinstance(module, str) else None
        self.files = [f for f in (getattr(mod, "__file__", None),) if f]
        if isinstance(cls, type) and issubclass(cls, Adapter):
            try:
                self.hparams = cls.resolve()
            except Exception as exc:
                self.hparams_error = f"{type(exc).__name__}: {_first_line(str(exc))}"

    # -- adapter instances and guarded calls
    @property
    def adapter(self) -> Any:
        if self._adapter is None:
            self._adapter = self.new_adapter()
        return self._adapter

    def new_adapter(self) -> Any:
        with self.guard("the adapter's constructor"):
            return self.cls()

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn an exception of adapter code into a failure of the running check."""
        try:
            yield
        except (CheckFailure, CheckSkipped, TimeoutError):
            raise
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc))
            raise CheckFailure(_exception_reason(what, exc, self.files), detail) from None

    # -- problems
    def likelihoods(self) -> list[str]:
        caps = getattr(self.cls, "capabilities", None)
        declared = getattr(caps, "likelihoods", ())
        return [lk for lk in LIKELIHOODS if lk in declared]

    def suites(self) -> list[Suite]:
        """The tiny suites of the likelihoods the adapter supports."""
        out = [get_suite(TINY_SUITES[lk]) for lk in self.likelihoods()]
        if not out:
            raise CheckSkipped("the adapter declares no supported likelihood")
        return out

    def problem(self, suite: Suite, dtype: str = "float64", backend: str | None = None, key: str = "") -> Any:
        """``suite`` built for ``backend`` (cached by ``key``, default the suite's name)."""
        backend = backend or self.backend
        cache_key = (backend, key or suite.name, dtype, self.device)
        if cache_key not in self._problems:
            module = registry.backend_module(backend)
            self._problems[cache_key] = module.build_problem(suite, seed=0, dtype=dtype, device=self.device)
        return self._problems[cache_key]

    # -- stepping
    def fresh_adapter(self) -> Any:
        """A second instance, for the checks that compare against a fresh one."""
        if self._fresh is None:
            self._fresh = self.new_adapter()
        return self._fresh

    def other_instance(self) -> Any:
        """The instance the instance-state checks compare against the shared one.

        PyTorch: a second instance. JAX: the shared one, since Python-side state on ``self``
        only exists at trace time and cannot change what a compiled step computes, while every
        new instance would cost a compilation.
        """
        return self.fresh_adapter() if self.backend == "torch" else self.adapter

    def _compiled(self, problem: Any, adapter: Any, kind: str) -> Callable[..., Any]:
        """``problem.make_step``/``make_direction`` of ``adapter``, once per pair (JAX compiles it)."""
        key = (id(problem), id(adapter), kind)
        if key not in self._compiled_fns:
            with self.guard(f"make_{kind}"):
                make = problem.make_step if kind == "step" else problem.make_direction
                self._compiled_fns[key] = (make(adapter), adapter)
        return self._compiled_fns[key][0]

    def step_fn(self, problem: Any, adapter: Any = None) -> Callable[..., Any]:
        """The prepared step, as the run loop calls it (jitted whole in JAX)."""
        return self._compiled(problem, adapter if adapter is not None else self.adapter, "step")

    def init(self, problem: Any, adapter: Any = None, hparams: Any = None) -> Any:
        adapter = adapter if adapter is not None else self.adapter
        with self.guard("init"):
            return adapter.init(problem, hparams if hparams is not None else self.hparams)

    def step(self, fn: Callable[..., Any], params: Any, state: Any, batch: Any) -> tuple[Any, Any, Any]:
        with self.guard("step"):
            out = fn(params, state, batch)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise CheckFailure(f"step returned {type(out).__name__}, not a (params, state, stats) tuple")
        return out

    def direction(
        self, problem: Any, params: Any, state: Any, batch: Any, adapter: Any = None, *, eager: bool = False
    ) -> Any:
        """``adapter.direction``; jitted in JAX (``problem.make_direction``) unless ``eager``."""
        adapter = adapter if adapter is not None else self.adapter
        if not eager and getattr(problem, "backend", self.backend) == "jax" and hasattr(problem, "make_direction"):
            fn = self._compiled(problem, adapter, "direction")
            with self.guard("direction"):
                return fn(params, state, batch)
        with self.guard("direction"):
            return adapter.direction(problem, params, state, batch)

    def batch_loss(self, problem: Any, params: Any, batch: Any) -> float:
        """The oracle's mean batch loss (jitted in JAX: eager JAX compiles every operation)."""
        if getattr(problem, "backend", self.backend) == "jax":
            key = (id(problem), 0, "loss")
            if key not in self._compiled_fns:
                fn = problem.jit(lambda p, b: problem.oracle(p, b).loss(), name="conformance.loss")
                self._compiled_fns[key] = (fn, None)
            value = self._compiled_fns[key][0](params, batch)
        else:
            value = problem.oracle(params, batch).loss()
        return float(problem.to_numpy(value))

    def run(
        self,
        problem: Any,
        steps: int,
        *,
        adapter: Any = None,
        params: Any = None,
        state: Any = None,
        start: int = 0,
    ) -> _Run:
        """``steps`` prepared steps from ``params``/``state`` (default: ``params0`` and a fresh state)."""
        fn = self.step_fn(problem, adapter)
        params = problem.params0 if params is None else params
        state = self.init(problem, adapter) if state is None else state
        trail, stats_list = [], []
        for t in range(start, start + steps):
            params, state, stats = self.step(fn, params, state, problem.device_batch(t))
            trail.append(self.numpy(problem, params))
            stats_list.append(stats)
        return _Run(trail, stats_list, state, params)

    @staticmethod
    def numpy(problem: Any, value: Any) -> np.ndarray:
        return np.array(problem.to_numpy(value), copy=True)

    def is_array(self, value: Any, backend: str | None = None) -> bool:
        if (backend or self.backend) == "torch":
            import torch

            return isinstance(value, torch.Tensor)
        import jax

        return isinstance(value, jax.Array)


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Check:
    """A named check: ``run(ctx)`` returns a pass note, or raises CheckFailure/CheckSkipped."""

    name: str
    summary: str
    run: Callable[[Context], str]
    #: Checks that must have passed for this one to be meaningful.
    requires: tuple[str, ...] = ("adapter",)
    #: Needs default hyperparameters that resolve (it calls ``init``/``step``).
    runtime: bool = False


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
    hints = _hint_names(hp_cls)
    fields = dataclasses.fields(hp_cls)
    for f in fields:
        if f.default is dataclasses.MISSING:
            raise CheckFailure(f"hyperparameter {f.name!r} has no default (use hparam(default, doc=...))")
        doc = f.metadata.get("doc")
        if not isinstance(doc, str) or not doc.strip():
            raise CheckFailure(f"hyperparameter {f.name!r} has no doc (declare it with hparam(default, doc=...))")
        kinds = _base_types(hints.get(f.name, f.type))
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
            raise CheckFailure(f"preset {preset!r} does not resolve: {_first_line(str(exc))}") from None
    extra = f", {len(presets)} preset(s)" if presets else ""
    return f"{len(fields)} typed hyperparameters with docs, ranges and valid defaults{extra}"


def _numeric_fields(cls: Any) -> list[dataclasses.Field[Any]]:
    hints = _hint_names(cls.Hyperparams)
    return [
        f
        for f in dataclasses.fields(cls.Hyperparams)
        if any(k in (int, float) for k in _base_types(hints.get(f.name, f.type)))
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
        if not isinstance(dist, _DISTRIBUTIONS):
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
                raise CheckFailure(f"search space sample {key}={value!r} is refused: {_first_line(str(exc))}") from None
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
    hints = _hint_names(cls.Hyperparams)
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
                f"{_first_line(str(exc))}"
            ) from None
        raise CheckFailure(f"invalid hyperparameter {overrides} is accepted silently")

    refused({"no_such_hyperparameter": 1}, "no_such_hyperparameter")
    for f in dataclasses.fields(cls.Hyperparams):
        for kind in _base_types(hints.get(f.name, f.type)):
            for value in _invalid_values(f, kind):
                refused({f.name: value}, f.name)
                tried += 1
    return f"{tried + 1} invalid values refused with a message naming the hyperparameter"


def _check_init(ctx: Context) -> str:
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        state = ctx.init(problem)
        if not (isinstance(state, tuple) and hasattr(state, "_fields")):
            raise CheckFailure(f"init returned a {type(state).__name__}; the state must be a NamedTuple")
        if not state or state[0] != ctx.hparams:
            raise CheckFailure("the state's first field must be the resolved hyperparameters")
    return f"{type(state).__name__}({', '.join(state._fields)})"


def _check_array(ctx: Context, problem: Any, value: Any, what: str, like: Any) -> np.ndarray:
    """``value`` as numpy if it is a flat, finite array like the parameters ``like``; else fail."""
    if not ctx.is_array(value):
        raise CheckFailure(f"{what}: a {type(value).__name__}, not a {ctx.backend} array")
    if tuple(value.shape) != (problem.num_params,):
        raise CheckFailure(f"{what}: shape {tuple(value.shape)}, expected the flat ({problem.num_params},)")
    if value.dtype != like.dtype:
        raise CheckFailure(f"{what}: dtype {value.dtype}, the parameters' is {like.dtype}")
    if ctx.backend == "torch" and value.device != like.device:
        raise CheckFailure(f"{what}: on {value.device}, the parameters on {like.device}")
    arr = ctx.numpy(problem, value)
    if not np.all(np.isfinite(arr)):
        raise CheckFailure(f"{what}: {int(np.sum(~np.isfinite(arr)))} non-finite entries")
    return arr


def _check_step_outputs(ctx: Context) -> str:
    notes = []
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        fn = ctx.step_fn(problem)
        params, state0 = problem.params0, ctx.init(problem)
        state = state0
        for t in range(STRUCTURE_STEPS):
            batch = problem.device_batch(t)
            with ctx.guard("the oracle"):
                expected = ctx.batch_loss(problem, params, batch)  # before step: it may write into params
            new, state, stats = ctx.step(fn, params, state, batch)
            at = f"step {t} on {suite.name}"
            _check_array(ctx, problem, new, f"{at} returned parameters", params)
            if type(state) is not type(state0):
                raise CheckFailure(f"{at} returned a {type(state).__name__} state, init a {type(state0).__name__}")
            if state[0] != ctx.hparams:
                raise CheckFailure(f"{at} lost the hyperparameters from the state's first field")
            if not isinstance(stats, Mapping):
                raise CheckFailure(f"{at} returned stats of type {type(stats).__name__}, not a dict")
            if "loss" not in stats:
                raise CheckFailure(
                    f"{at}: stats has no 'loss' (the mean batch loss at the incoming parameters is required)"
                )
            for key, value in stats.items():
                if not isinstance(key, str) or not STAT_PATTERN.fullmatch(key):
                    raise CheckFailure(f"{at}: stat name {key!r} is not an identifier [A-Za-z_][A-Za-z0-9_]*")
                try:
                    _scalar(value)
                except (TypeError, ValueError):
                    raise CheckFailure(f"{at}: stats[{key!r}] is a {type(value).__name__}, not a scalar") from None
            loss = _scalar(stats["loss"])
            if not math.isfinite(loss) or abs(loss - expected) > LOSS_RTOL * max(abs(expected), 1e-12):
                raise CheckFailure(
                    f"{at}: stats['loss'] = {loss:.10g}, but the mean batch loss at the incoming parameters "
                    f"is {expected:.10g}"
                )
            params = new
        notes.append(f"{suite.name}: stats {', '.join(sorted(stats))}")
    return "; ".join(notes)


def _check_direction_outputs(ctx: Context) -> str:
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        params0, batch = problem.params0, problem.device_batch(0)
        fresh = ctx.init(problem)
        after_one = ctx.step(ctx.step_fn(problem), params0, fresh, batch)
        for label, params, state in (("fresh", params0, fresh), ("after one step", after_one[0], after_one[1])):
            at = f"direction ({label} state, {suite.name})"
            d1 = _check_array(ctx, problem, ctx.direction(problem, params, state, batch), at, params)
            if not np.any(d1 != 0):
                raise CheckFailure(f"{at} is zero")
            d2 = ctx.numpy(problem, ctx.direction(problem, params, state, batch))
            if not np.array_equal(d1, d2):
                raise CheckFailure(
                    f"{at} changes when called again (max rel. diff {_max_rel(d2, d1):.2g}): direction must not "
                    "advance any state"
                )
            if ctx.backend == "jax" and label == "fresh" and suite.name == ctx.suites()[0].name:
                # harness.api.direction calls it eagerly; the approximation track jits it.
                eager = ctx.direction(problem, params, state, batch, eager=True)
                de = _check_array(ctx, problem, eager, f"eager {at}", params)
                if not _close(de, d1, 1e-9):
                    raise CheckFailure(f"{at}: eager and jitted results differ (max rel. diff {_max_rel(de, d1):.2g})")
    return "flat, finite, non-zero and repeatable on " + ", ".join(s.name for s in ctx.suites())


def _check_float32(ctx: Context) -> str:
    suite = ctx.suites()[0]
    problem = ctx.problem(suite, "float32")
    params0 = problem.params0
    run = ctx.run(problem, 2)
    _check_array(ctx, problem, run.last, "parameters after two float32 steps", params0)
    d = ctx.direction(problem, run.last, run.state, problem.device_batch(2))
    _check_array(ctx, problem, d, "the direction in float32", params0)
    for path, leaf in _leaves(run.state, "state"):
        # 0-d control scalars (an adaptive damping, a step count) may stay float64 on purpose.
        if ctx.is_array(leaf) and _is_floating(leaf) and len(leaf.shape) > 0 and leaf.dtype != params0.dtype:
            raise CheckFailure(f"{path} is {leaf.dtype} in a float32 run (keep state arrays in the parameters' dtype)")
    return f"float32 preserved on {suite.name}"


def _is_floating(array: Any) -> bool:
    if hasattr(array, "is_floating_point"):
        return bool(array.is_floating_point())
    return bool(np.issubdtype(np.dtype(array.dtype), np.floating))


def _snapshot(ctx: Context, problem: Any, params: Any, state: Any, batch: Any) -> dict[str, np.ndarray]:
    out = {"the parameters": ctx.numpy(problem, params)}
    for name in ("x", "y", "index", "noise"):
        out[f"batch.{name}"] = ctx.numpy(problem, getattr(batch, name))
    for path, leaf in _leaves(state, "the state's field state"):
        if ctx.is_array(leaf) or isinstance(leaf, np.ndarray):
            out[path] = np.array(leaf if isinstance(leaf, np.ndarray) else problem.to_numpy(leaf), copy=True)
    return out


def _compare_snapshot(
    ctx: Context, problem: Any, before: dict[str, np.ndarray], params: Any, state: Any, batch: Any, what: str
) -> None:
    after = _snapshot(ctx, problem, params, state, batch)
    for key, old in before.items():
        new = after.get(key)
        if new is None or new.shape != old.shape or not np.array_equal(new, old, equal_nan=old.dtype.kind == "f"):
            where = key.replace("the state's field state", "state")
            raise CheckFailure(f"{what} wrote into {where} in place (inputs must never be modified)")


def _check_no_mutation(ctx: Context) -> str:
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        fn = ctx.step_fn(problem)
        params, state = problem.params0, ctx.init(problem)
        for t in range(2):
            batch = problem.device_batch(t)
            before = _snapshot(ctx, problem, params, state, batch)
            ctx.direction(problem, params, state, batch)
            _compare_snapshot(ctx, problem, before, params, state, batch, f"direction (step {t}, {suite.name})")
            new, new_state, _ = ctx.step(fn, params, state, batch)
            _compare_snapshot(ctx, problem, before, params, state, batch, f"step {t} on {suite.name}")
            params, state = new, new_state
    return "parameters, batch and state left untouched by step and direction"


def _first_difference(a: _Run, b: _Run) -> int | None:
    for t, (pa, pb) in enumerate(zip(a.params, b.params)):
        if not np.array_equal(pa, pb):
            return t
    return None


def _check_deterministic(ctx: Context) -> str:
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        instance = ctx.other_instance()
        first = ctx.run(problem, STRUCTURE_STEPS, adapter=instance)
        again = ctx.run(problem, STRUCTURE_STEPS, adapter=instance)
        t = _first_difference(first, again)
        if t is None:
            continue
        # Tell hidden state on the instance from randomness: does a new instance repeat run 1?
        other = ctx.run(problem, STRUCTURE_STEPS, adapter=ctx.new_adapter())
        if _first_difference(first, other) is None:
            raise CheckFailure(
                f"a second run with the same adapter instance differs at step {t} on {suite.name}, a new instance "
                "does not: everything that changes must live in the state, not on self"
            )
        diff = _max_rel(again.params[t], first.params[t])
        raise CheckFailure(
            f"two runs from the same seed differ at step {t} on {suite.name} (max rel. diff {diff:.2g}): "
            "draw randomness from batch.noise, never from a global generator"
        )
    return f"identical parameters over {STRUCTURE_STEPS} steps, twice with one instance"


def _roundtrips(ctx: Context, state: Any) -> Iterator[tuple[str, Any]]:
    try:
        blob = pickle.dumps(state)
    except Exception as exc:
        raise CheckFailure(f"the state is not picklable: {type(exc).__name__}: {_first_line(str(exc))}") from None
    try:
        yield "pickle", pickle.loads(blob)
    except Exception as exc:
        raise CheckFailure(f"the pickled state does not load: {type(exc).__name__}: {_first_line(str(exc))}") from None
    if ctx.backend == "torch":
        import torch

        buffer = io.BytesIO()
        try:
            torch.save(state, buffer)
            buffer.seek(0)
            loaded = torch.load(buffer, weights_only=False)
        except Exception as exc:
            raise CheckFailure(
                f"torch.save/torch.load of the state fails: {type(exc).__name__}: {_first_line(str(exc))}"
            ) from None
        yield "torch.save", loaded


def _check_state_roundtrip(ctx: Context) -> str:
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        head = ctx.run(problem, 2)
        tail = ctx.run(problem, 2, params=head.last, state=head.state, start=2)
        for how, copy in _roundtrips(ctx, head.state):
            if type(copy) is not type(head.state):
                raise CheckFailure(f"the state comes back from {how} as a {type(copy).__name__}")
            resumed = ctx.run(problem, 2, adapter=ctx.other_instance(), params=head.last, state=copy, start=2)
            t = _first_difference(tail, resumed)
            if t is not None:
                raise CheckFailure(
                    f"after a {how} round trip the run diverges at step {t + 2} on {suite.name} "
                    f"(max rel. diff {_max_rel(resumed.params[t], tail.params[t]):.2g}): keep everything in the state"
                )
    return "pickle" + (" and torch.save" if ctx.backend == "torch" else "") + " round trips continue identically"


def _check_lowers_loss(ctx: Context) -> str:
    notes = []
    for likelihood in ctx.likelihoods():
        suite = convex_suite(likelihood)
        problem = ctx.problem(suite)
        problem.step_budget = CONVEX_STEPS
        before = convex_loss(suite, ctx.numpy(problem, problem.params0))
        run = ctx.run(problem, CONVEX_STEPS)
        for t, stats in enumerate(run.stats):
            loss = _scalar(stats.get("loss", math.nan))
            if not math.isfinite(loss):
                raise CheckFailure(f"the batch loss is {loss} at step {t} on {suite.name}")
        after = convex_loss(suite, run.params[-1])
        if not after <= before * (1.0 - MIN_CONVEX_DECREASE):
            raise CheckFailure(
                f"{CONVEX_STEPS} steps with the default hyperparameters take the training loss of {suite.name} "
                f"from {before:.4g} to {after:.4g} (need a {MIN_CONVEX_DECREASE:.0%} decrease)"
            )
        notes.append(f"{suite.name} {before:.3g} -> {after:.3g}")
    return f"{CONVEX_STEPS} steps: " + "; ".join(notes)


def _check_direction_consistent(ctx: Context) -> str:
    if not ctx.cls.capabilities.step_along_direction:
        raise CheckSkipped("declared otherwise (capabilities.step_along_direction = False)")
    worst = 0.0
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        params, state, batch = problem.params0, ctx.init(problem), problem.device_batch(0)
        d = ctx.numpy(problem, ctx.direction(problem, params, state, batch))
        new, _, stats = ctx.step(ctx.step_fn(problem), params, state, batch)
        if "lr" not in stats:
            raise CheckFailure(
                "capabilities.step_along_direction is declared but stats has no 'lr' (the scalar of the step)"
            )
        lr = _scalar(stats["lr"])
        update = ctx.numpy(problem, new) - ctx.numpy(problem, params)
        expected = -lr * d
        if not (np.all(np.isfinite(update)) and np.all(np.isfinite(expected))):
            raise CheckFailure(f"the first update or -stats['lr'] * direction on {suite.name} is not finite")
        rel = _max_rel(update, expected)
        if not _close(update, expected, CONSISTENCY_RTOL):
            cos = float(update @ expected / max(np.linalg.norm(update) * np.linalg.norm(expected), 1e-300))
            raise CheckFailure(
                f"the first update on {suite.name} is not -stats['lr'] * direction (max rel. diff {rel:.2g}, "
                f"cosine {cos:.4f}); declare capabilities.step_along_direction = False if it is not meant to be"
            )
        worst = max(worst, rel)
    return f"first update = -lr * direction (max rel. diff {worst:.1g})"


def _check_suite_blind(ctx: Context) -> str:
    for suite in ctx.suites()[:1]:  # a renamed problem costs a compilation in JAX
        renamed = suite.replace(
            name="conformance-renamed",
            version=suite.version + 1000,
            description="renamed copy",
            paper="none",
            target=None,
        )
        original = ctx.run(ctx.problem(suite), 2)
        blind = ctx.run(ctx.problem(renamed, key=f"renamed {suite.name}"), 2)
        t = _first_difference(original, blind)
        if t is not None:
            raise CheckFailure(
                f"renaming suite {suite.name} changes step {t}: adapters must not read the suite's name, version, "
                "description or target"
            )
    return "results do not depend on the suite's name, version, description or target"


def _check_hidden_work(ctx: Context) -> str:
    threads_before = set(threading.enumerate())
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        before = problem.counters.snapshot()
        state = ctx.init(problem, ctx.new_adapter())
        after = problem.counters.snapshot()
        passes = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        if passes:
            spent = ", ".join(f"{n} {k}" for k, n in passes.items())
            raise CheckFailure(f"init ran {spent} pass(es): per-step work belongs in step, where the timer sees it")
        ctx.run(problem, 2, state=state)
    left = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    if left:
        raise CheckFailure(
            f"{len(left)} thread(s) left running ({', '.join(t.name for t in left)}): no background work"
        )
    return "init runs no passes; no threads left running"


def _check_parity(ctx: Context) -> str:
    other = "jax" if ctx.backend == "torch" else "torch"
    label = "JAX" if other == "jax" else "PyTorch"
    if not registry.backend_available(other):
        raise CheckSkipped(f"{label} backend unavailable (not installed)")
    try:
        twin = registry.adapters(other).get(ctx.cls.name)
    except Exception as exc:
        raise CheckSkipped(f"{label} backend unavailable ({type(exc).__name__}: {_first_line(str(exc))})") from None
    if twin is None:
        raise CheckSkipped(f"no {other} adapter named {ctx.cls.name!r}")
    twin_ctx = Context(twin, other, f"{twin.__module__}:{twin.__qualname__}", ctx.device)
    twin_ctx._problems = ctx._problems
    if twin_ctx.hparams != ctx.hparams:
        raise CheckFailure(f"the {other} adapter has other defaults: {twin_ctx.hparams} vs {ctx.hparams}")
    worst = 0.0
    for suite in ctx.suites():
        results = []
        for c in (ctx, twin_ctx):
            problem = c.problem(suite)
            params, state, batch = problem.params0, c.init(problem), problem.device_batch(0)
            d = c.direction(problem, params, state, batch)
            new, _, stats = c.step(c.step_fn(problem), params, state, batch)
            results.append((c.numpy(problem, d), c.numpy(problem, new) - c.numpy(problem, params), set(stats)))
        (d_own, u_own, s_own), (d_twin, u_twin, s_twin) = results
        for what, own, ref in (("direction", d_own, d_twin), ("first update", u_own, u_twin)):
            rel = _max_rel(own, ref)
            if not _close(own, ref, PARITY_RTOL):
                raise CheckFailure(
                    f"{what} on {suite.name} differs from the {other} adapter's by {rel:.2g} (rtol {PARITY_RTOL:g})"
                )
            worst = max(worst, rel)
        if s_own != s_twin:
            raise CheckFailure(f"stats names differ from the {other} adapter's: {sorted(s_own ^ s_twin)}")
    return f"agrees with the {other} adapter (max rel. diff {worst:.1g})"


CHECKS: tuple[Check, ...] = (
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
    Check(
        "init", "the state is a NamedTuple led by the hyperparameters", _check_init, ("adapter", "capabilities"), True
    ),
    Check(
        "step_outputs",
        "(params, state, stats): shapes, dtypes, finite values, stats['loss']",
        _check_step_outputs,
        ("adapter", "init"),
        True,
    ),
    Check(
        "direction_outputs",
        "flat, finite, non-zero, repeatable direction",
        _check_direction_outputs,
        ("adapter", "init"),
        True,
    ),
    Check(
        "float32", "float32 parameters, directions and state stay float32", _check_float32, ("adapter", "init"), True
    ),
    Check(
        "no_mutation",
        "inputs (parameters, batch, state) are never written into",
        _check_no_mutation,
        ("adapter", "init"),
        True,
    ),
    Check(
        "deterministic",
        "same seed, same result; nothing kept on the instance",
        _check_deterministic,
        ("adapter", "init"),
        True,
    ),
    Check(
        "state_roundtrip",
        "the state survives pickle (and torch.save) and continues exactly",
        _check_state_roundtrip,
        ("adapter", "init"),
        True,
    ),
    Check(
        "lowers_loss", "defaults lower the loss of tiny convex problems", _check_lowers_loss, ("adapter", "init"), True
    ),
    Check(
        "direction_consistent",
        "the first update is -lr * direction (when declared)",
        _check_direction_consistent,
        ("adapter", "init"),
        True,
    ),
    Check("suite_blind", "results do not depend on the suite's name", _check_suite_blind, ("adapter", "init"), True),
    Check("hidden_work", "no passes in init, no threads left running", _check_hidden_work, ("adapter", "init"), True),
    Check("parity", "torch and JAX adapters of one method agree (float64)", _check_parity, ("adapter", "init"), True),
)
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
        with _deadline(timeout_s):
            note = check.run(ctx)
        status: Status = "pass"
        detail = None
    except CheckFailure as exc:
        status, note, detail = "fail", exc.reason, exc.detail
    except CheckSkipped as exc:
        status, note, detail = "skip", str(exc), None
    except TimeoutError as exc:
        status, note, detail = "fail", str(exc), "".join(traceback.format_exception(exc))
    except Exception as exc:  # adapter code reached outside a guard: still one line, never a crash
        status = "fail"
        note = _exception_reason(check.name, exc, ctx.files)
        detail = "".join(traceback.format_exception(exc))
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
