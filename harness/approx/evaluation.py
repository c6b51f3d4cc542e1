"""The evaluation: the reference trajectory, the fed states, and every method's direction measured
on the same batches at every checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from backends.spec import Batch, hparams_dict
from harness import keys
from harness.approx.comparability import l2_term, ng_not_comparable
from harness.approx.exact import (
    EXACT_MAX_ROWS,
    OutputSpaceNG,
    checkpoint_steps,
    exact_natural_gradient,
    exact_size,
    imbalance,
    indicator,
    per_sample_grad_norms,
)
from harness.approx.planning import (
    ApproxSpec,
    FeedingLane,
    Plan,
    Variant,
    build_variants,
    needs_feeding,
    one_line,
    plan_lanes,
    prepare,
    state_damping,
)
from harness.approx.results import COLUMNS, ApproxResult
from harness.environment import fingerprint
from harness.registry import backend_module
from harness.runner import RunResult, RunSpec, metric_mode

#: Method name of the exact natural-gradient rows (computed, not an adapter).
EXACT_METHOD = "exact_ng"
#: Reference batch losses kept per run (evaluations at the checkpoints are all kept).
LOG_POINTS = 250
# --------------------------------------------------------------------------- evaluation


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _scalar(problem: Any, x: Any) -> float:
    """A 0-d framework array or Python number as a float (NaN when it is neither)."""
    if x is None:
        return math.nan
    if isinstance(x, (int, float, np.number)):
        return float(x)
    try:
        return float(np.asarray(problem.to_numpy(x)))
    except (TypeError, ValueError, AttributeError):
        return math.nan


def _row(
    checkpoint: int,
    step: int,
    method: str,
    damping: float | None,
    batch: int,
    imbalance_value: float,
    extra: dict[str, Any],
    **figures: float | None,
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(checkpoint=checkpoint, step=step, method=method, damping=damping, batch=batch)
    row["grad_norm_imbalance"] = imbalance_value
    row.update(figures)
    row["extra"] = extra
    return row


class _BatchContext:
    """Everything shared by the methods on one batch: ``g``, ``gamma_SGD``, imbalance, exact NG."""

    def __init__(self, problem: Any, params: Any, batch: Batch[Any], exact_allowed: bool) -> None:
        self.problem = problem
        self.params = params
        self.oracle = problem.oracle(params, batch)
        g = self.oracle.grad()
        self.g = np.asarray(problem.to_numpy(g), dtype=np.float64)
        self.gamma_sgd = indicator(float(self.g @ self.g), _scalar(problem, self.oracle.ggn_quad(g)))
        norms = per_sample_grad_norms(problem, params, batch, self.oracle)
        self.imbalance = imbalance(norms)
        r = np.asarray(problem.to_numpy(self.oracle.logit_grads()), dtype=np.float64)
        self.logit_imbalance = imbalance(np.linalg.norm(r, axis=-1))
        self.zero_grad_samples = int(np.sum(norms == 0.0))
        self.exact: OutputSpaceNG | None = None
        self.exact_error: str | None = None
        self._ng: dict[float | None, np.ndarray] = {}
        self._regularised: dict[float, tuple[np.ndarray, float]] = {}
        if exact_allowed:
            try:
                self.exact = exact_natural_gradient(problem, self.oracle)
            except Exception as exc:  # harness-side numerics: report, keep the gamma figures
                self.exact_error = one_line(exc)

    def ng(self, damping: float | None) -> np.ndarray:
        key = None if not damping else float(damping)
        if key not in self._ng:
            assert self.exact is not None
            self._ng[key] = self.exact.direction(key)
        return self._ng[key]

    def base_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"gamma_sgd": self.gamma_sgd, "logit_grad_norm_imbalance": self.logit_imbalance}
        if self.zero_grad_samples:
            extra["zero_grad_samples"] = self.zero_grad_samples
        if self.exact is not None:
            extra["gamma_min"] = self.exact.gamma_min
        if self.exact_error is not None:
            extra["exact_ng_error"] = self.exact_error
        return extra

    def regularised(self, eta: float) -> tuple[np.ndarray, float]:
        """``(g + eta theta, gamma_SGD)`` of the objective ``L + eta/2 |theta|^2`` (one JVP)."""
        if eta not in self._regularised:
            theta = np.asarray(self.problem.to_numpy(self.params), dtype=np.float64)
            gh = self.g + eta * theta
            v = self.problem.from_numpy(gh.astype(np.asarray(self.problem.to_numpy(self.params)).dtype))
            quad = _scalar(self.problem, self.oracle.ggn_quad(v)) + eta * float(gh @ gh)
            self._regularised[eta] = (gh, indicator(float(gh @ gh), quad))
        return self._regularised[eta]

    def figures(
        self, d_arr: Any, ng_damping: float | None, *, l2: float = 0.0, not_comparable: str | None = None
    ) -> tuple[dict[str, float | None], dict[str, Any]]:
        """The row figures of a direction ``d`` (one JVP for ``d^T G d``).

        ``l2 = eta > 0``: the method preconditions the gradient of ``L + eta/2 |theta|^2``, so
        gamma, gamma_SGD and the exact NG are those of that objective
        (:mod:`harness.approx.comparability`). ``not_comparable``: the reason the cosine and
        relative error to the exact NG are left empty."""
        d = np.asarray(self.problem.to_numpy(d_arr), dtype=np.float64)
        extra: dict[str, Any] = {}
        if d.shape != self.g.shape:
            raise ValueError(f"direction has shape {d.shape}, expected {self.g.shape}")
        if not np.all(np.isfinite(d)):
            extra["nonfinite_direction"] = True
            nan = math.nan
            return {"gamma": nan, "gamma_ratio_sgd": nan, "dtg": nan, "dtgd": nan, "update_norm": nan}, extra
        g, gamma_sgd = self.g, self.gamma_sgd
        dtgd = _scalar(self.problem, self.oracle.ggn_quad(d_arr))
        if l2 > 0.0:
            g, gamma_sgd = self.regularised(l2)
            dtgd += l2 * float(d @ d)
            extra["l2_reg"] = l2
            extra["objective"] = "L + l2_reg/2 |theta|^2"
        dtg = float(d @ g)
        gamma = indicator(dtg, dtgd)
        out: dict[str, float | None] = {
            "gamma": gamma,
            "gamma_ratio_sgd": gamma / gamma_sgd if gamma_sgd and math.isfinite(gamma_sgd) else math.nan,
            "dtg": dtg,
            "dtgd": dtgd,
            "update_norm": float(np.linalg.norm(d)),
        }
        extra["descent"] = bool(dtg > 0)
        if not_comparable is not None:
            extra["ng_not_comparable"] = not_comparable
        elif self.exact is not None:
            ng = self.exact.solve(g, (ng_damping or 0.0) + l2) if l2 > 0.0 else self.ng(ng_damping)
            ng_norm, d_norm = float(np.linalg.norm(ng)), float(np.linalg.norm(d))
            if ng_norm > 0 and d_norm > 0:
                out["cos_ng"] = float(d @ ng) / (d_norm * ng_norm)
                out["rel_err_ng"] = float(np.linalg.norm(d - ng)) / ng_norm
            extra["ng_damping"] = ng_damping
        return out, extra

    def exact_rows(
        self, checkpoint: int, step: int, batch: int, dampings: Iterable[float | None], base: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Rows of the exact NG itself (closed-form quadratic terms)."""
        rows: list[dict[str, Any]] = []
        if self.exact is None:
            return rows
        for lam in dampings:
            dtg, dtgd = self.exact.quadratic_terms(lam)
            gamma = indicator(dtg, dtgd)
            ratio = gamma / self.gamma_sgd if self.gamma_sgd and math.isfinite(self.gamma_sgd) else math.nan
            rows.append(
                _row(
                    checkpoint,
                    step,
                    EXACT_METHOD,
                    lam,
                    batch,
                    self.imbalance,
                    {**base, "descent": dtg > 0, "ng_damping": lam},
                    gamma=gamma,
                    gamma_ratio_sgd=ratio,
                    dtg=dtg,
                    dtgd=dtgd,
                    update_norm=float(np.linalg.norm(self.ng(lam))),
                    cos_ng=1.0,
                    rel_err_ng=0.0,
                )
            )
        return rows


def evaluate(
    spec: ApproxSpec, *, on_progress: Callable[[str], None] | None = None, plan: Plan | None = None
) -> ApproxResult:
    """Run the reference trajectory, feed the states, and measure every method at every checkpoint."""
    wall_start = time.perf_counter()
    plan = plan or prepare(spec)
    say = on_progress or (lambda message: None)
    suite = plan.suite
    backend = backend_module(spec.backend)
    problem = backend.build_problem(suite, seed=spec.seed, dtype=spec.dtype, device=spec.device)
    T = plan.steps
    problem.step_budget = T
    ckpts = checkpoint_steps(T, spec.checkpoints)
    last = ckpts[-1]

    variants, skipped_variants = build_variants(plan)
    skipped = {**plan.skipped, **skipped_variants}
    for v in variants:
        v.fed = needs_feeding(v.adapter_cls, v.adapter.init(problem, v.hparams), problem)
    lanes = plan_lanes(variants, ckpts, spec.state_window)
    lane_for: dict[tuple[int, int], FeedingLane] = {(id(ln.variant), k): ln for ln in lanes for k in ln.serves}

    B, C, P = suite.batch_size, suite.num_outputs, problem.num_params
    size = exact_size(B, C, P)
    exact_allowed = 0 < size <= spec.exact_limit and B * C <= EXACT_MAX_ROWS
    if exact_allowed:
        exact_info: dict[str, Any] = {"available": True, "entries": size}
    else:
        why = (
            "disabled (exact_limit=0)"
            if spec.exact_limit == 0
            else (
                f"B*C*P = {B}*{C}*{P} = {size} exceeds the limit {spec.exact_limit}"
                if size > spec.exact_limit
                else f"B*C = {B * C} exceeds {EXACT_MAX_ROWS}"
            )
        )
        exact_info = {"available": False, "reason": why}
    exact_dampings: list[float | None] = [None, *[float(x) for x in spec.damping or () if x > 0]]

    result = RunResult(
        spec=RunSpec(
            suite=suite.name,
            optimizer=spec.reference,
            backend=spec.backend,
            seed=spec.seed,
            steps=T,
            hparams=dict(spec.reference_hparams),
            device=spec.device,
            dtype=spec.dtype,
            tag=spec.tag,
            stop_at_target=False,
        ),
        status="done",
        suite_version=suite.version,
        adapter_version=keys.adapter_version(plan.reference_cls),
        hparams=hparams_dict(plan.reference_hparams),
        device=str(getattr(problem, "device", spec.device)),
        val_metric=suite.val_metric,
        target=suite.target.describe() if suite.target else None,
        started_at=_now(),
    )
    result.environment = fingerprint(spec.backend, result.device or spec.device)
    mode = metric_mode(suite.val_metric, suite)

    ref = plan.reference_cls()
    ref_state = ref.init(problem, plan.reference_hparams)
    ref_step = problem.make_step(ref)
    params = problem.params0
    rows: list[dict[str, Any]] = []
    ckpt_metrics: list[dict[str, Any]] = []
    directions: dict[int, Any] = {}
    step_fns: dict[int, Any] = {}
    clock = 0.0
    log_every = max(1, T // LOG_POINTS)
    initial_loss: float | None = None
    ckpt_index = {s: k for k, s in enumerate(ckpts)}

    def direction_fn(v: Variant) -> Any:
        if id(v) not in directions:
            make = getattr(problem, "make_direction", None)
            directions[id(v)] = (
                make(v.adapter) if make is not None else (lambda p, s, b, _a=v.adapter: _a.direction(problem, p, s, b))
            )
        return directions[id(v)]

    def evaluate_checkpoint(k: int, step: int) -> None:
        t0 = time.perf_counter()
        ev = problem.evaluate(params)
        for name, value in ev.items():
            result.metrics.append((step, clock, name, value))
        result.final_metrics = ev
        if suite.val_metric in ev and math.isfinite(ev[suite.val_metric]):
            best = result.best_val_metric
            value = ev[suite.val_metric]
            if best is None or (value > best if mode == "max" else value < best):
                result.best_val_metric = value
        if k == 0:
            result.initial_train_loss = ev.get("train_loss")
        result.final_train_loss = ev.get("train_loss")
        progress = step / T if T else 0.0
        ckpt_metrics.append({"checkpoint": k, "step": step, "progress": progress, **ev})
        for j in range(spec.batches):
            batch = problem.device_batch(step + j)
            ctx = _BatchContext(problem, params, batch, exact_allowed)
            base = {"progress": progress, **ctx.base_extra()}
            rows.extend(ctx.exact_rows(k, step, j, exact_dampings, base))
            for v in variants:
                lane = lane_for[(id(v), k)]
                extra: dict[str, Any] = dict(base)
                if v.fixed_damping:
                    extra["fixed_damping"] = True
                if lane.feed_errors:
                    extra["feed_errors"] = lane.feed_errors
                    extra["feed_error"] = lane.first_feed_error
                state = lane.state
                lam_state = state_damping(state, problem)
                if lam_state is not None:
                    extra["state_damping"] = lam_state
                ng_damping = lam_state if lam_state is not None else v.damping
                try:
                    d = direction_fn(v)(params, state, batch)
                    figures, more = ctx.figures(
                        d, ng_damping, l2=l2_term(v.hparams), not_comparable=ng_not_comparable(v.method)
                    )
                except Exception as exc:  # an adapter's failure is a recorded result
                    extra["error"] = f"direction: {one_line(exc)}"
                    rows.append(_row(k, step, v.method, v.damping, j, ctx.imbalance, extra))
                    continue
                extra.update(more)
                rows.append(_row(k, step, v.method, v.damping, j, ctx.imbalance, extra, **figures))
        for lane in lanes:
            if lane.serves and max(lane.serves) == k:
                lane.state = None  # served its last checkpoint: free it (FNGD's table, K-FAC's factors)
        say(f"checkpoint {k + 1}/{len(ckpts)} (step {step}) evaluated in {time.perf_counter() - t0:.1f} s")

    status = "done"
    for t in range(last + 1):
        for lane in lanes:
            if lane.start == t and lane.state is None:
                lane.state = lane.variant.adapter.init(problem, lane.variant.hparams)
        if t in ckpt_index:
            evaluate_checkpoint(ckpt_index[t], t)
        if t == last:
            break
        batch = problem.device_batch(t)
        for lane in lanes:
            if not lane.variant.fed or lane.start > t:
                continue
            if t >= max(ckpts[k] for k in lane.serves):
                continue
            key = id(lane.variant)
            if key not in step_fns:  # one prepared (in JAX: compiled) step per variant, shared by its lanes
                step_fns[key] = problem.make_step(lane.variant.adapter)
            try:
                _, lane.state, _ = step_fns[key](params, lane.state, batch)
            except Exception as exc:  # a skipped step, counted on the method's rows
                lane.feed_errors += 1
                if lane.first_feed_error is None:
                    lane.first_feed_error = f"state feeding at step {t}: {one_line(exc)}"
        problem.block(params)
        t_start = time.perf_counter()
        params, ref_state, stats = ref_step(params, ref_state, batch)
        problem.block(params, stats)
        clock += time.perf_counter() - t_start
        result.steps = t + 1
        loss = _scalar(problem, stats.get("loss"))
        if initial_loss is None:
            initial_loss = loss
        threshold = suite.divergence_factor * max(abs(initial_loss) if math.isfinite(initial_loss) else 0.0, 1e-3)
        if not math.isfinite(loss) or loss > threshold or t % log_every == 0 or t == last - 1:
            result.metrics.append((t, clock, "train_loss_batch", loss))
        if not math.isfinite(loss) or loss > threshold:
            status = "diverged"
            result.error = f"reference loss {loss:.6g} at step {t} (initial {initial_loss:.6g})"
            missing = [s for s in ckpts if s > t]
            skipped["checkpoints"] = f"reference diverged at step {t}; steps {missing} not evaluated"
            break
        if on_progress is not None and (t + 1) % max(1, T // 10) == 0:
            say(f"reference step {t + 1}/{last}")

    result.status = status
    result.train_time_s = clock
    result.loop_time_s = clock
    result.finished_at = _now()
    errors: dict[str, str] = {}
    for lane in lanes:
        if lane.feed_errors and lane.variant.label not in errors:
            errors[lane.variant.label] = (
                f"state feeding failed at {lane.feed_errors} reference step(s) (skipped, last good state kept); "
                f"first: {lane.first_feed_error}"
            )
    for r in rows:
        label = (
            r["method"] if r["damping"] is None or r["method"] == EXACT_METHOD else f"{r['method']}@{r['damping']:g}"
        )
        if r["extra"].get("error") and label not in errors:
            errors[label] = f"checkpoint {r['checkpoint']}, batch {r['batch']}: {r['extra']['error']}"
    info = [
        {
            "method": v.method,
            "damping": v.damping,
            "fed": v.fed,
            "fixed_damping": v.fixed_damping,
            "adapter_version": keys.adapter_version(v.adapter_cls),
            "hparams": hparams_dict(v.hparams),
        }
        for v in variants
    ]
    return ApproxResult(
        spec=spec,
        rows=rows,
        reference=result,
        checkpoint_steps=ckpts,
        checkpoint_metrics=ckpt_metrics,
        skipped=skipped,
        variants=info,
        exact_ng=exact_info,
        errors=errors,
        wall_time_s=time.perf_counter() - wall_start,
    )
