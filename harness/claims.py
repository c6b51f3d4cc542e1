"""Run what each claim needs and read its verdict (``ngbench claims``).

A claim's run experiment becomes one sweep per (suite, arm) through the ordinary sweep
machinery, so it is resumable, runs nothing whose run key is already stored (runs are shared
with the boards where identical), and stores failures as results. An approximation experiment
becomes one approximation evaluation per suite, tagged with the claim's version; a suite whose
tagged evaluation is already stored is not evaluated again. Verdicts are computed from the
database by :mod:`leaderboard.claims`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.spec import hparams_dict
from db import queries
from db.store import Store
from harness.approx import REFERENCE_ROLE, ApproxSpec, evaluate, store_result
from harness.errors import ConfigError
from harness.executors import make_executor
from harness.orchestrator import run_sweep
from harness.plans import expand
from harness.registry import get_adapter
from harness.sweep import load_config
from leaderboard.claims import ApproxExperiment, Claim, Outcome, RunExperiment, claims, get_claim, outcome
from leaderboard.claims.evidence import arm_hparams


def select(size: str | None = None, only: Sequence[str] = ()) -> tuple[Claim, ...]:
    """The claims to act on: ``only`` by id (unknown ids are one clear error), else by size."""
    if only:
        try:
            return tuple(get_claim(i) for i in only)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
    return claims(size)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def sweep_configs(claim: Claim) -> list[dict[str, Any]]:
    """The sweep files (as mappings) of a run experiment: one per (suite, arm)."""
    experiment = claim.experiment
    if not isinstance(experiment, RunExperiment):
        return []
    out = []
    for suite in experiment.suites:
        for arm in experiment.arms:
            config: dict[str, Any] = {
                "name": f"claim-{claim.id}-v{claim.version}-{suite}-{_slug(arm.label)}",
                "suites": [suite],
                "optimizers": [arm.optimizer],
                "backends": list(experiment.backends),
                "seeds": list(experiment.seeds),
                "dtype": experiment.dtype,
                "tag": claim.tag,
                "devices": "cpu",
            }
            hparams = arm_hparams(arm, suite)
            if hparams:
                config["hparams"] = {arm.optimizer: hparams}
            if arm.preset:
                config["presets"] = {arm.optimizer: arm.preset}
            out.append(config)
    return out


def approx_specs(claim: Claim) -> list[ApproxSpec]:
    experiment = claim.experiment
    if not isinstance(experiment, ApproxExperiment):
        return []
    return [
        ApproxSpec(
            suite=suite,
            backend=experiment.backend,
            optimizers=experiment.methods,
            checkpoints=experiment.checkpoints,
            batches=experiment.batches,
            damping=experiment.dampings,
            seed=experiment.seed,
            dtype=experiment.dtype,
            device="cpu",
            tag=claim.tag,
        )
        for suite in experiment.suites
    ]


@dataclass
class ClaimRun:
    """What ``claims run`` did for one claim."""

    claim: Claim
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def _stored_approx_suites(store: Store, tag: str) -> set[str]:
    runs = queries.runs_frame(store, tag=tag)
    if runs.empty:
        return set()
    refs = runs[(runs["role"] == REFERENCE_ROLE) & (runs["status"] != "interrupted")]
    return set(refs["suite"])


def run_claims(
    store: Store,
    selected: Sequence[Claim],
    *,
    workers: int | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
) -> list[ClaimRun]:
    """Run what each selected claim needs into ``store`` (see the module docstring)."""
    report = []
    for claim in selected:
        done = ClaimRun(claim)
        for config in sweep_configs(claim):
            plan = expand(load_config(config, where=f"claim {claim.id}"))
            summary = run_sweep(plan, store, make_executor("local", devices=("cpu",), workers=workers))
            done.ran += summary.ran
            done.skipped += summary.skipped_finished + summary.duplicates_in_plan
            on_line(f"{claim.id}: {plan.name}: ran {summary.ran}, already stored {summary.skipped_finished}")
            if summary.interrupted:
                raise KeyboardInterrupt
        stored = _stored_approx_suites(store, claim.tag) if isinstance(claim.experiment, ApproxExperiment) else set()
        for spec in approx_specs(claim):
            if spec.suite in stored:
                done.skipped += 1
                on_line(f"{claim.id}: approximation on {spec.suite}: already stored")
                continue
            result = evaluate(spec)
            store_result(store, result)
            done.ran += 1
            if result.errors:
                done.failed += [f"{spec.suite} {name}: {msg.splitlines()[0]}" for name, msg in result.errors.items()]
            on_line(f"{claim.id}: approximation on {spec.suite}: {len(result.rows)} rows")
        report.append(done)
    return report


def verdicts(store: Store, selected: Sequence[Claim]) -> list[Outcome]:
    """Each selected claim's verdict from what ``store`` holds."""
    runs = queries.runs_frame(store)
    specs = queries.run_specs(store)
    approx = queries.approx_frame(store)
    tags = set(runs["tag"].dropna()) if len(runs) else set()
    out = []
    for claim in selected:
        older = [t for t in tags if t.startswith(f"claim:{claim.id}@v") and t != claim.tag]
        out.append(outcome(claim, runs, specs, approx, older_tags=sorted(older), defaults=card_defaults(claim)))
    return out


def card_defaults(claim: Claim) -> dict[str, dict[str, Any]]:
    """Each arm's optimizer's resolved defaults (built-in adapters; others fall back to overrides)."""
    out: dict[str, dict[str, Any]] = {}
    if not isinstance(claim.experiment, RunExperiment):
        return out
    for arm in claim.experiment.arms:
        try:
            cls = get_adapter(arm.optimizer, claim.experiment.backends[0])
            out[arm.optimizer] = hparams_dict(cls.resolve())
        except Exception:  # an optimizer not installed here: compare the spelled-out overrides
            continue
    return out


def run_command(claim: Claim) -> str:
    """The command that measures ``claim`` (shown where it is not measured)."""
    return f"ngbench claims run --only {claim.id}"
