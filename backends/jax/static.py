"""Static state values: numbers an adapter's state carries that a jitted step must see as constants.

``backends.jax.counting.CountedJit`` traces every array and Python number of ``(params, state,
batch)`` and treats every other leaf as a static, hashable argument. A run constant that the
step needs as a Python number (a step budget for a schedule, the steps per epoch for a table
index) is therefore wrapped in :class:`StaticInt`: it stays in the state (fixed at ``init``,
like the torch adapters' plain ints, and pickled with it) and is a compile-time constant of
the step. Changing it recompiles, which is right: the compiled step depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StaticInt:
    """An integer that a counted jit passes as a static argument; ``int(x)`` gives it back."""

    value: int

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value
