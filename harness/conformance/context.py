"""What the checks share for one adapter (:class:`Context`), the :class:`Check` record, and the
convex problems of the battery.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.spec import (
    Adapter,
)
from harness import registry
from harness.conformance.base import TINY_SUITES, CheckFailure, CheckSkipped, exception_reason, first_line
from harness.step_checks import format_error
from suites import get_suite
from suites.layers import Linear, ModelSpec
from suites.spec import LIKELIHOODS, Dataset, Suite


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
class Trajectory:
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
                self.hparams_error = f"{type(exc).__name__}: {first_line(str(exc))}"

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
            detail = format_error(exc)
            raise CheckFailure(exception_reason(what, exc, self.files), detail) from None

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

    @property
    def consumes_state(self) -> bool:
        """The adapter declares a move-only state (``capabilities.consumes_state``)."""
        return bool(getattr(getattr(self.cls, "capabilities", None), "consumes_state", False))

    def step(self, fn: Callable[..., Any], params: Any, state: Any, batch: Any) -> tuple[Any, Any, Any]:
        """One prepared step. A move-only state is deep-copied first (untimed, battery only), so the
        checks may step, compare and re-use states; ``state_handoff`` checks the refusal itself."""
        with self.guard("step"):
            if self.consumes_state:
                state = copy.deepcopy(state)
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
    ) -> Trajectory:
        """``steps`` prepared steps from ``params``/``state`` (default: ``params0`` and a fresh state)."""
        fn = self.step_fn(problem, adapter)
        params = problem.params0 if params is None else params
        state = self.init(problem, adapter) if state is None else state
        trail, stats_list = [], []
        for t in range(start, start + steps):
            params, state, stats = self.step(fn, params, state, problem.device_batch(t))
            trail.append(self.numpy(problem, params))
            stats_list.append(stats)
        return Trajectory(trail, stats_list, state, params)

    @staticmethod
    def numpy(problem: Any, value: Any) -> np.ndarray:
        return np.array(problem.to_numpy(value), copy=True)

    def is_array(self, value: Any, backend: str | None = None) -> bool:
        if (backend or self.backend) == "torch":
            import torch  # the framework of the adapter under test, imported only when checked

            return isinstance(value, torch.Tensor)
        import jax  # optional: only for JAX adapters

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
