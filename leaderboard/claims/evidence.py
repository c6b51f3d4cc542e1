"""From stored results to a claim's verdict: select the runs an experiment names, apply its rule.

Run experiments share runs with the boards: a run counts for an arm when its stored spec is the
arm's (optimizer, hyperparameter overrides or the suite's calibrated configuration, preset), on
one of the experiment's suites, backends, seeds and dtype, at the suite's full step budget, and
was not interrupted; the newest such run per seed is used. Approximation experiments are read by
the claim's tag (``claim:<id>@v<version>``), since an approximation run belongs to its claim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from leaderboard.claims.rules import RULES, CellVerdict, combine
from leaderboard.claims.spec import ApproxExperiment, Arm, Claim, Outcome, RunExperiment, Verdict
from suites import get_suite

#: Statuses that are not a result of the method (the run was stopped from outside).
NOT_A_RESULT = frozenset({"interrupted"})
#: ``Run.role`` of the reference trajectory of an approximation evaluation.
APPROX_REFERENCE_ROLE = "approx_reference"


def arm_hparams(arm: Arm, suite: str) -> dict[str, Any]:
    """The hyperparameter overrides the arm's runs carry on ``suite``."""
    if arm.calibrated:
        calibration = get_suite(suite).calibration
        if calibration is None or calibration.optimizer != arm.optimizer:
            raise ValueError(f"suite {suite!r} has no calibrated {arm.optimizer} configuration")
        return dict(calibration.hparams)
    return dict(arm.hparams)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _matches(
    spec: Mapping[str, Any],
    arm: Arm,
    hparams: Mapping[str, Any],
    budget: int,
    dtype: str,
    resolved: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> bool:
    """Whether a stored run is the arm's. With the card's ``defaults`` the run's ``resolved``
    hyperparameters are compared with the arm's (so a run stored with ``lr = 0.001`` spelled out
    is the default arm's when 0.001 is the default: run keys deduplicate such runs); without
    them the spelled-out overrides must be the arm's."""
    if defaults and isinstance(resolved, Mapping) and resolved:
        wanted = {**defaults, **hparams}
        if not all(k in resolved and _same(resolved[k], v) for k, v in wanted.items()):
            return False
    else:
        given = dict(spec.get("hparams") or {})
        if set(given) != set(hparams) or not all(_same(given[k], hparams[k]) for k in hparams):
            return False
    if (spec.get("preset") or None) != arm.preset or spec.get("dtype", "float32") != dtype:
        return False
    return spec.get("steps") in (None, budget)


def run_evidence(
    experiment: RunExperiment,
    runs: pd.DataFrame,
    specs: Mapping[int, Mapping[str, Any]],
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> pd.DataFrame:
    """One row per (arm, suite, backend, seed) with the newest matching run's figures."""
    columns = ["arm", "suite", "backend", "seed", "run_id", "status", "steps_to_target", "time_to_target_s",
               "step_time_median_s", "best_val_metric", "device", "finished_at"]  # fmt: skip
    if runs.empty:
        return pd.DataFrame(columns=columns)
    role = runs["role"] if "role" in runs else pd.Series("run", index=runs.index)
    pool = runs[
        runs["suite"].isin(experiment.suites)
        & runs["backend"].isin(experiment.backends)
        & runs["seed"].isin(experiment.seeds)
        & ~runs["status"].isin(NOT_A_RESULT)
        & (role.fillna("run") == "run")
    ]
    records = []
    for arm in experiment.arms:
        for suite in experiment.suites:
            hparams, budget = arm_hparams(arm, suite), get_suite(suite).budget.steps
            sel = pool[(pool["optimizer"] == arm.optimizer) & (pool["suite"] == suite)]
            card = (defaults or {}).get(arm.optimizer)
            resolved = sel["hparams"] if "hparams" in sel else pd.Series([None] * len(sel), index=sel.index)
            mask = [
                _matches(specs.get(int(i), {}), arm, hparams, budget, experiment.dtype, r, card)
                for i, r in zip(sel["id"], resolved, strict=True)
            ]
            sel = sel.loc[np.asarray(mask, dtype=bool)] if len(sel) else sel
            for (backend, seed), group in sel.groupby(["backend", "seed"], sort=True):
                row = group.sort_values("id").iloc[-1]
                records.append([arm.label, suite, backend, int(seed), int(row["id"]), row["status"],
                                _num(row.get("steps_to_target")), _num(row.get("time_to_target_s")),
                                _num(row.get("step_time_median_s")), _num(row.get("best_val_metric")),
                                row.get("device"), row.get("finished_at")])  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)


def approx_evidence(claim: Claim, runs: pd.DataFrame, approx: pd.DataFrame, *, tag: str | None = None) -> pd.DataFrame:
    """The approximation rows of the claim's tagged evaluations, with their suite and backend."""
    columns = ["suite", "backend", "method", "damping", "checkpoint", "batch", "gamma", "gamma_ratio_sgd", "run_id"]
    if runs.empty or approx.empty:
        return pd.DataFrame(columns=columns)
    refs = runs[(runs["tag"] == (tag or claim.tag)) & (runs.get("role") == APPROX_REFERENCE_ROLE)]
    rows = approx.merge(refs[["id", "suite", "backend"]], left_on="run_id", right_on="id", how="inner")
    return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)


def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def decide(claim: Claim, evidence: pd.DataFrame) -> list[CellVerdict]:
    """The claim's rule applied to its evidence frame."""
    rule = RULES[claim.rule.kind]
    kwargs = claim.rule.kwargs()
    if isinstance(claim.experiment, ApproxExperiment):
        kwargs.setdefault("suites", claim.experiment.suites)
        return rule(evidence, **kwargs)
    cells = rule(evidence, **kwargs)
    # A suite or backend with no run of any arm is a cell the rule never saw: not measured.
    seen = {c.cell.split(":")[0] for c in cells}
    for suite in claim.experiment.suites:
        for backend in claim.experiment.backends:
            if f"{suite} ({backend})" not in seen:
                cells.append(CellVerdict(f"{suite} ({backend})", Verdict.NOT_MEASURED, "no runs", {}))
    return cells


def outcome(claim: Claim, runs: pd.DataFrame, specs: Mapping[int, Mapping[str, Any]], approx: pd.DataFrame,
            older_tags: Sequence[str] = (), defaults: Mapping[str, Mapping[str, Any]] | None = None,
            ) -> Outcome:  # fmt: skip
    """The claim's verdict, evidence lines and provenance from the stored results."""
    if isinstance(claim.experiment, RunExperiment):
        evidence = run_evidence(claim.experiment, runs, specs, defaults)
        seeds = evidence.groupby(["arm", "suite", "backend"]).size() if len(evidence) else pd.Series(dtype=int)
        seeds_line = f"seeds per arm: {int(seeds.min())}-{int(seeds.max())}" if len(seeds) else "no runs"
        used = runs[runs["id"].isin(evidence["run_id"])] if len(evidence) else runs.iloc[0:0]
    else:
        evidence = approx_evidence(claim, runs, approx)
        seeds_line = f"{evidence['checkpoint'].nunique()} checkpoints" if len(evidence) else "no approximation rows"
        used = runs[runs["id"].isin(evidence["run_id"])] if len(evidence) else runs.iloc[0:0]
    cells = decide(claim, evidence)
    verdict = combine(cells)
    counts = {v: sum(c.verdict is v for c in cells) for v in Verdict}
    summary = f"{verdict.value}: " + ", ".join(f"{n} {v.value}" for v, n in counts.items() if n) + f"; {seeds_line}"
    stale = bool(verdict is Verdict.NOT_MEASURED and older_tags)
    newest = used.sort_values("id").iloc[-1] if len(used) else None
    return Outcome(
        claim=claim,
        verdict=verdict,
        summary=summary,
        evidence=tuple(f"{c.cell}: {c.verdict.value}; {c.evidence}" for c in cells),
        table=tuple({"cell": c.cell, "verdict": c.verdict.value, **c.figures} for c in cells),
        measured_on=str(newest.get("device") or "") if newest is not None else "",
        measured_at=str(newest.get("finished_at") or "") if newest is not None else "",
        stale=stale,
        run_ids=tuple(sorted(int(i) for i in used["id"])) if len(used) else (),
    )
