"""What the site says about suites and methods: the installed suite catalogue and method cards.

The leaderboard never imports a backend (docs/architecture.md): method cards
(:class:`MethodInfo`) come from the CLI, which reads them from the registry. Suites are read
from the installed catalogue (``suites`` is numpy-only, no framework); a suite that is not
installed here is described by what its stored runs say (:func:`suite_from_runs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from leaderboard import format as fmt


@dataclass(frozen=True)
class SuiteInfo:
    """What the site says about a suite: the installed catalogue's definition, or what the
    stored runs say when the suite is not installed here."""

    name: str
    version: int | None
    description: str = ""
    paper: str = ""
    target: str | None = None
    target_metric: str | None = None
    target_value: float | None = None
    target_mode: str = "max"
    val_metric: str = "val_accuracy"
    budget_steps: int | None = None
    budget_time_s: float | None = None
    batch_size: int | None = None
    likelihood: str | None = None
    eval_every: int | None = None
    size: str | None = None
    installed: bool = True

    def metric_mode(self, metric: str) -> str:
        """``max`` or ``min`` for ``metric`` (the target's mode, else by name, as the run loop)."""
        if self.target_metric == metric:
            return self.target_mode
        return "min" if metric.endswith(("loss", "rmse", "error")) else "max"


@dataclass(frozen=True)
class HyperparamInfo:
    name: str
    type: str
    default: Any
    doc: str = ""
    range: str = ""
    #: ``paper``, ``library`` or ``held-out`` (docs/defaults.md) and its citation or evidence.
    provenance: str = ""
    source: str = ""


@dataclass(frozen=True)
class MethodInfo:
    """An optimizer's method card as the site shows it (built by the CLI from the registry)."""

    name: str
    paper: str = ""
    description: str = ""
    hyperparams: tuple[HyperparamInfo, ...] = ()
    search_space: Mapping[str, str] = field(default_factory=dict)
    capabilities: Mapping[str, str] = field(default_factory=dict)
    #: backend -> current adapter version (``harness.keys.adapter_version``).
    versions: Mapping[str, str] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparams}


def suite_catalogue() -> dict[str, SuiteInfo]:
    """The installed suites (``suites`` is numpy-only, no framework)."""
    try:
        from suites import list_suites
    except Exception:  # an optional dependency of a suite module is missing: use the DB
        return {}
    try:
        catalogue = list_suites()
    except Exception:
        return {}
    out = {}
    for s in catalogue:
        t = s.target
        out[s.name] = SuiteInfo(
            name=s.name,
            version=s.version,
            description=s.description,
            paper=s.paper,
            target=t.describe() if t else None,
            target_metric=t.metric if t else None,
            target_value=float(t.value) if t else None,
            target_mode=t.mode if t else "max",
            val_metric=s.val_metric,
            budget_steps=s.budget.steps,
            budget_time_s=s.budget.time_s,
            batch_size=s.batch_size,
            likelihood=s.likelihood,
            eval_every=s.eval_every,
            size=s.size,
        )
    return out


def suite_from_runs(name: str, rows: pd.DataFrame) -> SuiteInfo:
    """A suite the catalogue does not know: newest stored version, target and metric."""
    newest = rows.sort_values("id").iloc[-1]
    target = newest["target"] if isinstance(newest["target"], str) else None
    metric = value = None
    mode = "max"
    if target:
        parts = target.split()
        if len(parts) == 3 and parts[1] in (">=", "<="):
            metric, mode = parts[0], "max" if parts[1] == ">=" else "min"
            value = fmt.finite(parts[2])
    versions = pd.to_numeric(rows["suite_version"], errors="coerce").dropna()
    return SuiteInfo(
        name=name,
        version=int(versions.max()) if len(versions) else None,
        description="",
        target=target,
        target_metric=metric,
        target_value=value,
        target_mode=mode,
        val_metric=str(newest["val_metric"] or "val_accuracy"),
        installed=False,
    )
