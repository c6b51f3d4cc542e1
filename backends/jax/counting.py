"""Pass counters and the counted, jitted step: how JAX reports the same costs as eager torch.

Under ``jax.jit`` an adapter's Python code runs once, at trace time, and then never again:
the oracle cannot increment a counter on every call. So counting has two halves:

* :class:`Counters` records what the oracle adds *while a function is being traced* into a
  trace record instead of the live totals (outside any trace it adds directly, like torch);
* :class:`CountedJit` jits a function, keeps each trace's record (pass counts, plus the
  non-array parts of the output), and replays the record into the live counters on every
  call. The harness therefore sees per-step increments exactly as with eager torch.

Data-dependent work (a line search in a ``lax.while_loop``, a ``lax.cond`` refresh) cannot be
counted at trace time: a loop body is traced once, both branches of a ``cond`` are traced.
Wrap such code in :meth:`Counters.capture`, which returns the body's counts without booking
them, and book them yourself with a traced multiplier::

    with problem.counters.capture() as body:          # counts traced inside are not booked
        state = jax.lax.while_loop(cond_fn, body_fn, init)
    problem.counters.add_scaled(body, state.evaluations)  # traced int: booked per call

Traced amounts travel back as extra outputs of the jitted function and are read lazily (by
:meth:`Counters.snapshot`), so they never force a device sync inside the timed step.

Non-array leaves of the arguments (the frozen hyperparameter dataclass in ``state.hparams``,
strings, enums) are passed as *static* arguments: they must be hashable (frozen dataclasses
are), and changing one recompiles. Arrays and Python numbers are traced. Non-array leaves of
the outputs (``stats["lr"] = hp.lr``) are returned as they were at trace time.

:class:`CountedJit.compile_count` counts calls during which the function was traced or XLA
compiled (``jax.monitoring``'s backend-compile event), which the harness books as compile time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PASS_KINDS: tuple[str, ...] = ("forward", "backward", "jvp", "vjp", "per_sample")

_DYNAMIC_TYPES = (jax.Array, np.ndarray, np.generic, bool, int, float, complex)


@dataclass
class _Record:
    """Counts added while tracing: Python ints, and traced amounts (booked per call)."""

    static: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PASS_KINDS, 0))
    dynamic: dict[str, Any] = field(default_factory=dict)
    #: Dynamic amounts are only allowed at the level of the counted function's own trace.
    allow_dynamic: bool = True


#: Traced per-call counts kept on the device before they are read back in bulk.
PENDING_LIMIT = 256


class Counters:
    """Pass counters of one problem (same kinds as the torch backend's ``Counters``).

    ``add(kind, n)`` with a Python int adds ``n`` now (eager) or to the trace record of the
    function being traced by a :class:`CountedJit`; with a traced integer it adds ``n`` on
    every call of that function.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(PASS_KINDS, 0)
        self._records: list[_Record] = []
        self._pending: list[Mapping[str, Any]] = []

    @property
    def recording(self) -> bool:
        """Whether a counted function is being traced (adds go to its record)."""
        return bool(self._records)

    def add(self, kind: str, n: Any = 1) -> None:
        if kind not in self.counts:
            raise KeyError(f"unknown pass kind {kind!r} (known: {', '.join(PASS_KINDS)})")
        traced = isinstance(n, jax.core.Tracer)
        if not self._records:
            if traced:
                raise RuntimeError(
                    "a traced pass count can only be added inside a function prepared by "
                    "problem.make_step / problem.jit (see backends.jax.counting)"
                )
            self.counts[kind] += int(n)
            return
        record = self._records[-1]
        if isinstance(n, jax.Array):
            if not record.allow_dynamic:
                raise RuntimeError("traced pass counts cannot be added inside Counters.capture()")
            record.dynamic[kind] = record.dynamic.get(kind, 0) + jnp.asarray(n, dtype=jnp.int64)
        else:
            record.static[kind] += int(n)

    def add_scaled(self, counts: Mapping[str, int], times: Any) -> None:
        """Add ``counts[kind] * times`` for every kind (``times`` may be a traced integer)."""
        for kind, c in counts.items():
            if c:
                self.add(kind, c * times)

    @contextlib.contextmanager
    def capture(self) -> Iterator[dict[str, int]]:
        """Collect the counts added inside the block without booking them (see module docs)."""
        out: dict[str, int] = {}
        record = _Record(allow_dynamic=False)
        self._records.append(record)
        try:
            yield out
        finally:
            self._records.pop()
            out.update({k: v for k, v in record.static.items() if v})

    @contextlib.contextmanager
    def _tracing(self) -> Iterator[_Record]:
        record = _Record()
        self._records.append(record)
        try:
            yield record
        finally:
            self._records.pop()

    def _replay(self, static: Mapping[str, int], dynamic: Mapping[str, Any] | None) -> None:
        """Book one call of a counted function (into the enclosing trace's record if nested)."""
        if self._records:
            for kind, n in [*static.items(), *(dynamic or {}).items()]:
                self.add(kind, n)
            return
        for kind, n in static.items():
            self.counts[kind] += n
        if dynamic:
            self._pending.append(dynamic)
            if len(self._pending) > PENDING_LIMIT:
                # Read back all but the newest: their steps were fenced by the run loop already,
                # so this costs no wait, and a long run does not pile up device scalars.
                self._settle(self._pending[:-1])
                del self._pending[:-1]

    def _settle(self, entries: list[Mapping[str, Any]]) -> None:
        for dynamic in entries:
            for kind, n in dynamic.items():
                self.counts[kind] += int(n)

    def snapshot(self) -> dict[str, int]:
        """Current totals (reads back traced amounts of earlier calls: may wait for the device)."""
        self._settle(self._pending)
        self._pending.clear()
        return dict(self.counts)


# --------------------------------------------------------------------------- compile events

_ACTIVE: list[CountedJit] = []
_COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_retrieval_time_sec")


def _on_duration_event(event: str, duration_secs: float, **kwargs: str | int) -> None:
    if _ACTIVE and event in _COMPILE_EVENTS:
        _ACTIVE[-1]._compile_events += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration_event)


# --------------------------------------------------------------------------- the counted jit


class _StaticSpec(NamedTuple):
    """The hashable, static half of the arguments: tree structure and non-array leaves."""

    treedef: Any
    positions: tuple[int, ...]
    values: tuple[Any, ...]


class _TraceRecord(NamedTuple):
    counts: dict[str, int]
    has_dynamic: bool
    out_treedef: Any
    #: Per output leaf: the static value, or ``_TRACED`` where the jitted function returns it.
    out_template: tuple[Any, ...]


_TRACED = object()


def _merge(template: tuple[Any, ...], dynamic: list[Any]) -> list[Any]:
    it = iter(dynamic)
    return [next(it) if value is _TRACED else value for value in template]


_typeof = getattr(jax, "typeof", None) or jax.core.get_aval  # type: ignore[attr-defined]


def _signature(leaves: list[Any]) -> tuple[Any, ...]:
    """What selects a compiled variant besides the static arguments: shapes, dtypes, weak types."""
    out = []
    for leaf in leaves:
        aval = _typeof(leaf)
        out.append((tuple(aval.shape), aval.dtype, bool(getattr(aval, "weak_type", False))))
    return tuple(out)


class CountedJit:
    """``fn`` jitted with static non-array leaves and per-call pass counting (module docs).

    ``bind`` (optional) is entered around tracing with the traced ``extra`` pytree (the
    problem's frozen parameters), so model code reads them as arguments, not constants.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        counters: Counters,
        *,
        extra: Callable[[], Any] = dict,
        bind: Callable[[Any], contextlib.AbstractContextManager[Any]] | None = None,
        name: str | None = None,
    ) -> None:
        self._fn = fn
        self._counters = counters
        self._extra = extra
        self._bind = bind
        self.__name__ = name or getattr(fn, "__name__", "counted")
        #: Calls during which the function was traced or compiled (the harness's compile signal).
        self.compile_count = 0
        #: Times the Python function was traced.
        self.traces = 0
        self._compile_events = 0
        self._records: dict[tuple[Any, ...], _TraceRecord] = {}
        self._last: _TraceRecord | None = None
        self._jitted = jax.jit(self._traced, static_argnums=(2,))

    def _traced(self, dynamic: list[Any], extra: Any, spec: _StaticSpec) -> tuple[list[Any], dict[str, Any]]:
        slots: list[Any] = [_TRACED] * (len(dynamic) + len(spec.positions))
        for pos, value in zip(spec.positions, spec.values):
            slots[pos] = value
        args = jax.tree_util.tree_unflatten(spec.treedef, _merge(tuple(slots), dynamic))
        bind = self._bind(extra) if self._bind is not None else contextlib.nullcontext()
        with self._counters._tracing() as record, bind:
            out = self._fn(*args)
        out_leaves, out_treedef = jax.tree_util.tree_flatten(out)
        out_dynamic = [leaf for leaf in out_leaves if isinstance(leaf, jax.Array)]
        template = tuple(_TRACED if isinstance(leaf, jax.Array) else leaf for leaf in out_leaves)
        trace = _TraceRecord({k: v for k, v in record.static.items() if v}, bool(record.dynamic), out_treedef, template)
        self._records[(spec, _signature(dynamic))] = trace
        self._last = trace
        self.traces += 1
        return out_dynamic, dict(record.dynamic)

    def _split(self, args: tuple[Any, ...]) -> tuple[list[Any], _StaticSpec]:
        leaves, treedef = jax.tree_util.tree_flatten(args)
        is_dynamic = [isinstance(leaf, _DYNAMIC_TYPES) for leaf in leaves]
        dynamic = [leaf for leaf, d in zip(leaves, is_dynamic) if d]
        positions = tuple(i for i, d in enumerate(is_dynamic) if not d)
        spec = _StaticSpec(treedef, positions, tuple(leaves[i] for i in positions))
        try:
            hash(spec)
        except TypeError:
            bad = [type(v).__name__ for v in spec.values if not _hashable(v)]
            raise TypeError(
                f"{self.__name__}: non-array values passed to a jitted step must be hashable "
                f"(use frozen dataclasses for hyperparameters, or jnp arrays); unhashable: {', '.join(bad)}"
            ) from None
        return dynamic, spec

    def cost_analysis(self, *args: Any) -> Any:
        """XLA's cost analysis of the function compiled for ``args`` (nothing is executed, no
        pass is counted; the trace it takes is not a compile of a call)."""
        dynamic, spec = self._split(args)
        traces = self.traces
        try:
            return self._jitted.lower(dynamic, self._extra(), spec).cost_analysis()
        finally:
            self.traces = traces

    def __call__(self, *args: Any) -> Any:
        dynamic, spec = self._split(args)
        traces, events = self.traces, self._compile_events
        _ACTIVE.append(self)
        try:
            out_dynamic, dyn_counts = self._jitted(dynamic, self._extra(), spec)
        finally:
            _ACTIVE.pop()
        if self.traces > traces or self._compile_events > events:
            self.compile_count += 1
        if self.traces > traces or len(self._records) == 1:
            trace = self._last if self.traces > traces else next(iter(self._records.values()))
        else:
            trace = self._records[(spec, _signature(dynamic))]
        assert trace is not None
        self._counters._replay(trace.counts, dyn_counts if trace.has_dynamic else None)
        return jax.tree_util.tree_unflatten(trace.out_treedef, _merge(trace.out_template, out_dynamic))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
