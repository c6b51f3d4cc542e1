"""Running a tuned plan: the trials, the selection per study, then the re-runs, in one sweep row."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.orchestrator import run_sweep
from harness.runner import metric_mode
from harness.sweep.protocol import ROLE_RERUN
from harness.sweep.schema import RunRole, SweepPlan
from harness.tuning.selection import Selection, select, stored_rows
from suites import get_suite

# --------------------------------------------------------------------------- running a tuned sweep


@dataclass
class TuneSummary:
    """What a tuned sweep did: the two phases and each study's selection."""

    trials: Any
    reruns: Any = None
    selections: list[Selection] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return bool(self.trials.interrupted or (self.reruns is not None and self.reruns.interrupted))

    @property
    def sweep_id(self) -> int:
        return int(self.trials.sweep_id)


def rerun_plan(plan: Any, selections: Sequence[Selection]) -> Any:
    """The second phase: the chosen configuration of every decided study on the re-run seeds."""
    specs, roles = [], []
    for sel in selections:
        if sel.chosen is None:
            continue
        for spec in sel.study.rerun_specs(sel.chosen):
            specs.append(spec)
            roles.append(RunRole(ROLE_RERUN, sel.chosen.index, sel.chosen.config_hash))
    return SweepPlan(
        config=plan.config,
        specs=tuple(specs),
        skipped=plan.skipped,
        source=plan.source,
        adapters=plan.adapters,
        roles=tuple(roles),
        studies=plan.studies,
    )


def run_tuned(
    plan: Any,
    store: Any,
    executor: Any,
    *,
    kind: str = "sweep",
    resume: bool = False,
    progress: Callable[[str], Any] | None = None,
    on_selection: Callable[[Selection], None] | None = None,
) -> TuneSummary:
    """Run a tuned plan (``harness.sweep.expand`` of a sweep with ``trials``): the trials, the
    selection per study, the re-runs, in one sweep row (see the module docstring).

    ``progress(phase)`` makes a fresh :class:`harness.progress.SweepProgress` per phase.
    """
    try:
        first = run_sweep(
            plan,
            store,
            executor,
            kind=kind,
            resume=resume,
            progress=progress("trials") if progress else None,
            close_executor=False,
            finish=False,
        )
        summary = TuneSummary(trials=first)
        if first.interrupted:
            return summary
        keys_by_trial: dict[tuple[tuple[str, str, str], int], str] = {}
        for index, key in first.keys.items():
            role = plan.role_of(index)
            spec = plan.specs[index]
            keys_by_trial[((spec.suite, spec.optimizer, spec.backend), int(role.trial))] = key
        rows = stored_rows(store, list(keys_by_trial.values()))
        # This invocation's outcomes stand in for rows stored under another key (a worker whose
        # key differed from the expected one) or not stored (a concurrent duplicate).
        for outcome in first.outcomes:
            role = plan.role_of(outcome.job.index)
            spec = outcome.job.spec
            k = keys_by_trial.get(((spec.suite, spec.optimizer, spec.backend), int(role.trial)))
            if k is not None and k not in rows and outcome.result.status != "interrupted":
                r = outcome.result
                rows[k] = {
                    "status": r.status,
                    "time_to_target_s": r.time_to_target_s,
                    "steps_to_target": r.steps_to_target,
                    "best_val_metric": r.best_val_metric,
                }
        for study in plan.studies:
            suite = get_suite(study.suite)
            mode = metric_mode(suite.val_metric, suite)
            by_trial = {t.index: rows.get(keys_by_trial.get((study.key, t.index), "")) for t in study.trials}
            sel = select(study, by_trial, mode)
            summary.selections.append(sel)
            if on_selection is not None:
                on_selection(sel)
        second = rerun_plan(plan, [s for s in summary.selections if s.decided])
        if second.specs:
            summary.reruns = run_sweep(
                second,
                store,
                executor,
                kind=kind,
                progress=progress("re-runs") if progress else None,
                close_executor=False,
                sweep_id=first.sweep_id,
            )
        else:
            store.finish_sweep(first.sweep_id, "finished")
        return summary
    finally:
        executor.close()
