"""``lax.switch`` and ``lax.while_loop`` that book the oracle passes of what actually runs.

Under ``jit`` every branch of a ``lax.switch`` is traced once and a loop body once, so the
passes the oracle records while tracing them are not what a call executes. These wrappers
capture each branch's (or the body's) counts with ``Counters.capture`` and book them with a
traced multiplier (``Counters.add_scaled``): the taken branch once, the body once per trip
(``backends.jax.counting``). They must not be nested inside one another or inside another
``capture`` block (traced amounts are booked at the level of the counted function's trace).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from backends.jax.counting import Counters

Array = jax.Array


def counted_switch(counters: Counters, index: Any, branches: Sequence[Callable[[], Any]]) -> Any:
    """``branches[index]()`` with only that branch's passes booked (one branch: a plain call)."""
    if len(branches) == 1:
        return branches[0]()
    captured: dict[int, dict[str, int]] = {}

    def wrap(i: int, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with counters.capture() as counts:
                out = fn()
            captured[i] = counts
            return out

        return run

    out = jax.lax.switch(jnp.asarray(index, jnp.int32), [wrap(i, fn) for i, fn in enumerate(branches)])
    for i, counts in captured.items():
        counters.add_scaled(counts, (jnp.asarray(index) == i).astype(jnp.int64))
    return out


def counted_while_loop(
    counters: Counters,
    cond_fun: Callable[[Any], Array],
    body_fun: Callable[[Any], Any],
    init: Any,
    trips: Callable[[Any], Array],
) -> Any:
    """``lax.while_loop`` whose body's passes are booked ``trips(final_carry)`` times."""
    with counters.capture() as per_trip:
        out = jax.lax.while_loop(cond_fun, body_fun, init)
    counters.add_scaled(per_trip, jnp.asarray(trips(out)).astype(jnp.int64))
    return out
