"""Checks of how an adapter behaves: it lowers a convex loss, steps along its direction, ignores
the suite's name, does no work outside ``step`` and agrees with its twin in the other backend.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from backends.spec import Adapter
from harness import registry
from harness.conformance.base import (
    CONSISTENCY_RTOL,
    CONVEX_STEPS,
    MIN_CONVEX_DECREASE,
    PARITY_RTOL,
    CheckFailure,
    CheckSkipped,
    close,
    first_line,
    max_rel,
    scalar,
)
from harness.conformance.context import Check, Context, Trajectory, convex_loss, convex_suite
from harness.conformance.outputs import check_array, compare_snapshot, first_difference, snapshot


def _check_lowers_loss(ctx: Context) -> str:
    notes = []
    for likelihood in ctx.likelihoods():
        suite = convex_suite(likelihood)
        problem = ctx.problem(suite)
        problem.step_budget = CONVEX_STEPS
        before = convex_loss(suite, ctx.numpy(problem, problem.params0))
        run = ctx.run(problem, CONVEX_STEPS)
        for t, stats in enumerate(run.stats):
            loss = scalar(stats.get("loss", math.nan))
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
        lr = scalar(stats["lr"])
        update = ctx.numpy(problem, new) - ctx.numpy(problem, params)
        expected = -lr * d
        if not (np.all(np.isfinite(update)) and np.all(np.isfinite(expected))):
            raise CheckFailure(f"the first update or -stats['lr'] * direction on {suite.name} is not finite")
        rel = max_rel(update, expected)
        if not close(update, expected, CONSISTENCY_RTOL):
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
        t = first_difference(original, blind)
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
        raise CheckSkipped(f"{label} backend unavailable ({type(exc).__name__}: {first_line(str(exc))})") from None
    if twin is None:
        raise CheckSkipped(f"no {other} adapter named {ctx.cls.name!r}")
    if not (ctx.cls.capabilities.cross_backend_parity and twin.capabilities.cross_backend_parity):
        raise CheckSkipped(f"no parity claimed with the {other} adapter (capabilities.cross_backend_parity = False)")
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
            rel = max_rel(own, ref)
            if not close(own, ref, PARITY_RTOL):
                raise CheckFailure(
                    f"{what} on {suite.name} differs from the {other} adapter's by {rel:.2g} (rtol {PARITY_RTOL:g})"
                )
            worst = max(worst, rel)
        if s_own != s_twin:
            raise CheckFailure(f"stats names differ from the {other} adapter's: {sorted(s_own ^ s_twin)}")
    return f"agrees with the {other} adapter (max rel. diff {worst:.1g})"


def _check_eval_params(ctx: Context) -> str:
    hook = getattr(ctx.cls, "eval_params", None)
    if hook is None or hook is Adapter.eval_params:
        return "default hook: evaluates at the parameters themselves"
    notes = []
    for suite in ctx.suites():
        problem = ctx.problem(suite)
        run = ctx.run(problem, 2)
        params, state, batch = run.last, run.state, problem.device_batch(2)
        before = snapshot(ctx, problem, params, state, batch)
        counts = problem.counters.snapshot()
        with ctx.guard("eval_params"):
            first = ctx.adapter.eval_params(problem, params, state)
        at = f"eval_params on {suite.name}"
        spent = {k: n - counts.get(k, 0) for k, n in problem.counters.snapshot().items() if n != counts.get(k, 0)}
        if spent:
            raise CheckFailure(f"{at} ran {spent} pass(es): the hook is untimed and may not evaluate the model")
        compare_snapshot(ctx, problem, before, params, state, batch, at)
        e1 = check_array(ctx, problem, first, f"{at} returned parameters", params)
        with ctx.guard("eval_params"):
            e2 = ctx.numpy(problem, ctx.adapter.eval_params(problem, params, state))
        if not np.array_equal(e1, e2):
            raise CheckFailure(f"{at} changes when called again: the hook must not advance any state")
        resumed = ctx.run(problem, 1, params=params, state=state, start=2)
        reference = ctx.run(problem, 3)
        if first_difference(Trajectory([reference.params[2]], [], None, None), resumed) is not None:
            raise CheckFailure(f"{at}: the run continues differently after the hook was called")
        notes.append(f"{suite.name} moves the parameters by {max_rel(e1, ctx.numpy(problem, params)):.2g}")
    return "pure, untimed, no passes; " + "; ".join(notes)


#: The checks of this module, in battery order.
BEHAVIOUR_CHECKS: tuple[Check, ...] = (
    Check(
        "lowers_loss",
        "defaults lower the loss of tiny convex problems",
        _check_lowers_loss,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "direction_consistent",
        "the first update is -lr * direction (when declared)",
        _check_direction_consistent,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "suite_blind",
        "results do not depend on the suite's name",
        _check_suite_blind,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "hidden_work",
        "no passes in init, no threads left running",
        _check_hidden_work,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "eval_params",
        "the evaluation hook is pure and runs no passes",
        _check_eval_params,
        ("adapter", "init", "step_outputs"),
        True,
    ),
    Check(
        "parity",
        "torch and JAX adapters of one method agree (float64)",
        _check_parity,
        ("adapter", "init", "step_outputs"),
        True,
    ),
)
