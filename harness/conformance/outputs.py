"""Checks of what ``init``, ``step`` and ``direction`` return: structure, dtypes, no mutation of
their inputs, determinism and a state that survives a round trip.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from backends.spec import StateConsumedError
from harness.conformance.base import (
    LOSS_RTOL,
    STAT_PATTERN,
    STRUCTURE_STEPS,
    CheckFailure,
    CheckSkipped,
    close,
    first_line,
    leaves,
    max_rel,
    scalar,
)
from harness.conformance.context import Check, Context, Trajectory
from harness.step_checks import params_problem


def _check_init(ctx: Context) -> str:
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        state = ctx.init(problem)
        if not (isinstance(state, tuple) and hasattr(state, "_fields")):
            raise CheckFailure(f"init returned a {type(state).__name__}; the state must be a NamedTuple")
        if not state or state[0] != ctx.hparams:
            raise CheckFailure("the state's first field must be the resolved hyperparameters")
    return f"{type(state).__name__}({', '.join(state._fields)})"


def check_array(ctx: Context, problem: Any, value: Any, what: str, like: Any) -> np.ndarray:
    """``value`` as numpy if it is a flat, finite array like the parameters ``like``; else fail."""
    if not ctx.is_array(value):
        raise CheckFailure(f"{what}: a {type(value).__name__}, not a {ctx.backend} array")
    reason = params_problem(problem, value, like, what)
    if reason is not None:
        raise CheckFailure(reason)
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
            check_array(ctx, problem, new, f"{at} returned parameters", params)
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
                    scalar(value)
                except (TypeError, ValueError):
                    raise CheckFailure(f"{at}: stats[{key!r}] is a {type(value).__name__}, not a scalar") from None
            loss = scalar(stats["loss"])
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
            d1 = check_array(ctx, problem, ctx.direction(problem, params, state, batch), at, params)
            if not np.any(d1 != 0):
                raise CheckFailure(f"{at} is zero")
            d2 = ctx.numpy(problem, ctx.direction(problem, params, state, batch))
            if not np.array_equal(d1, d2):
                raise CheckFailure(
                    f"{at} changes when called again (max rel. diff {max_rel(d2, d1):.2g}): direction must not "
                    "advance any state"
                )
            if ctx.backend == "jax" and label == "fresh" and suite.name == ctx.suites()[0].name:
                # harness.api.direction calls it eagerly; the approximation track jits it.
                eager = ctx.direction(problem, params, state, batch, eager=True)
                de = check_array(ctx, problem, eager, f"eager {at}", params)
                if not close(de, d1, 1e-9):
                    raise CheckFailure(f"{at}: eager and jitted results differ (max rel. diff {max_rel(de, d1):.2g})")
    return "flat, finite, non-zero and repeatable on " + ", ".join(s.name for s in ctx.suites())


def _check_float32(ctx: Context) -> str:
    suite = ctx.suites()[0]
    problem = ctx.problem(suite, "float32")
    params0 = problem.params0
    run = ctx.run(problem, 2)
    check_array(ctx, problem, run.last, "parameters after two float32 steps", params0)
    d = ctx.direction(problem, run.last, run.state, problem.device_batch(2))
    check_array(ctx, problem, d, "the direction in float32", params0)
    for path, leaf in leaves(run.state, "state"):
        # 0-d control scalars (an adaptive damping, a step count) may stay float64 on purpose.
        if ctx.is_array(leaf) and _is_floating(leaf) and len(leaf.shape) > 0 and leaf.dtype != params0.dtype:
            raise CheckFailure(f"{path} is {leaf.dtype} in a float32 run (keep state arrays in the parameters' dtype)")
    return f"float32 preserved on {suite.name}"


def _is_floating(array: Any) -> bool:
    if hasattr(array, "is_floating_point"):
        return bool(array.is_floating_point())
    return bool(np.issubdtype(np.dtype(array.dtype), np.floating))


def snapshot(ctx: Context, problem: Any, params: Any, state: Any, batch: Any) -> dict[str, np.ndarray]:
    out = {"the parameters": ctx.numpy(problem, params)}
    for name in ("x", "y", "index", "noise"):
        out[f"batch.{name}"] = ctx.numpy(problem, getattr(batch, name))
    for path, leaf in leaves(state, "the state's field state"):
        if ctx.is_array(leaf) or isinstance(leaf, np.ndarray):
            out[path] = np.array(leaf if isinstance(leaf, np.ndarray) else problem.to_numpy(leaf), copy=True)
    return out


def compare_snapshot(
    ctx: Context, problem: Any, before: dict[str, np.ndarray], params: Any, state: Any, batch: Any, what: str
) -> None:
    after = snapshot(ctx, problem, params, state, batch)
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
            before = snapshot(ctx, problem, params, state, batch)
            ctx.direction(problem, params, state, batch)
            compare_snapshot(ctx, problem, before, params, state, batch, f"direction (step {t}, {suite.name})")
            new, new_state, _ = ctx.step(fn, params, state, batch)
            compare_snapshot(ctx, problem, before, params, state, batch, f"step {t} on {suite.name}")
            params, state = new, new_state
    return "parameters, batch and state left untouched by step and direction"


def first_difference(a: Trajectory, b: Trajectory) -> int | None:
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
        t = first_difference(first, again)
        if t is None:
            continue
        # Tell hidden state on the instance from randomness: does a new instance repeat run 1?
        other = ctx.run(problem, STRUCTURE_STEPS, adapter=ctx.new_adapter())
        if first_difference(first, other) is None:
            raise CheckFailure(
                f"a second run with the same adapter instance differs at step {t} on {suite.name}, a new instance "
                "does not: everything that changes must live in the state, not on self"
            )
        diff = max_rel(again.params[t], first.params[t])
        raise CheckFailure(
            f"two runs from the same seed differ at step {t} on {suite.name} (max rel. diff {diff:.2g}): "
            "draw randomness from batch.noise, never from a global generator"
        )
    return f"identical parameters over {STRUCTURE_STEPS} steps, twice with one instance"


def _roundtrips(ctx: Context, state: Any) -> Iterator[tuple[str, Any]]:
    try:
        blob = pickle.dumps(state)
    except Exception as exc:
        raise CheckFailure(f"the state is not picklable: {type(exc).__name__}: {first_line(str(exc))}") from None
    try:
        yield "pickle", pickle.loads(blob)
    except Exception as exc:
        raise CheckFailure(f"the pickled state does not load: {type(exc).__name__}: {first_line(str(exc))}") from None
    if ctx.backend == "torch":
        import torch  # only for PyTorch adapters (torch.save round trip)

        buffer = io.BytesIO()
        try:
            torch.save(state, buffer)
            buffer.seek(0)
            loaded = torch.load(buffer, weights_only=False)
        except Exception as exc:
            raise CheckFailure(
                f"torch.save/torch.load of the state fails: {type(exc).__name__}: {first_line(str(exc))}"
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
            t = first_difference(tail, resumed)
            if t is not None:
                raise CheckFailure(
                    f"after a {how} round trip the run diverges at step {t + 2} on {suite.name} "
                    f"(max rel. diff {max_rel(resumed.params[t], tail.params[t]):.2g}): keep everything in the state"
                )
    return "pickle" + (" and torch.save" if ctx.backend == "torch" else "") + " round trips continue identically"


def _check_state_handoff(ctx: Context) -> str:
    if not ctx.consumes_state:
        raise CheckSkipped("the state is not move-only (capabilities.consumes_state = False)")
    suite = ctx.suites()[0]
    problem = ctx.problem(suite)
    fn = ctx.step_fn(problem)
    params, state = problem.params0, ctx.init(problem)
    with ctx.guard("step"):
        fn(params, state, problem.device_batch(0))
    try:
        fn(params, state, problem.device_batch(1))
    except StateConsumedError:
        return "stepping a consumed state raises StateConsumedError"
    except Exception as exc:
        raise CheckFailure(
            f"stepping a consumed state raised {type(exc).__name__}: {first_line(str(exc))}, not StateConsumedError"
        ) from None
    raise CheckFailure(
        "capabilities.consumes_state is declared but stepping the same state twice was accepted: "
        "raise backends.spec.StateConsumedError on a consumed state"
    )


#: The checks of this module, in battery order.
OUTPUT_CHECKS: tuple[Check, ...] = (
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
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "float32",
        "float32 parameters, directions and state stay float32",
        _check_float32,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "no_mutation",
        "inputs (parameters, batch, state) are never written into",
        _check_no_mutation,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "deterministic",
        "same seed, same result; nothing kept on the instance",
        _check_deterministic,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "state_handoff",
        "a move-only state refuses a second step",
        _check_state_handoff,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "state_roundtrip",
        "the state survives pickle (and torch.save) and continues exactly",
        _check_state_roundtrip,
        ("adapter", "init", "step_outputs"),
        True,
    ),
)
