"""Choosing a study's configuration from its stored trial runs (:func:`leaderboard.scoring.choose_trial`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select as sql_select

from db.models import Run
from db.statuses import FINISHED_STATUSES
from harness.tuning.studies import Study, Trial
from leaderboard.scoring import TrialResult, choose_trial, rank_trials

# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class Selection:
    """The outcome of a study's trials: the ranking and the chosen trial (or why there is none)."""

    study: Study
    ranking: tuple[TrialResult, ...]
    chosen: Trial | None
    #: Trials with no finished result yet (the study cannot be decided).
    missing: tuple[int, ...] = ()

    @property
    def decided(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str:
        if self.missing:
            return f"trials {', '.join(map(str, self.missing))} have no result yet"
        if self.chosen is None:
            return f"all {len(self.ranking)} trials failed: no configuration, the study scores inf"
        return f"trial {self.chosen.index} chosen"

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.study.suite,
            "optimizer": self.study.optimizer,
            "backend": self.study.backend,
            "chosen_trial": self.chosen.index if self.chosen else None,
            "config_hash": self.chosen.config_hash if self.chosen else None,
            "reason": self.reason,
        }


def trial_result(trial: Trial, row: Mapping[str, Any] | None) -> TrialResult | None:
    """A stored run's figures as a :class:`TrialResult` (``None``: no usable result)."""
    if row is None or row.get("status") in (None, "interrupted"):
        return None
    return TrialResult(
        trial=trial.index,
        status=str(row["status"]),
        time_to_target_s=_finite(row.get("time_to_target_s")),
        steps_to_target=_finite(row.get("steps_to_target")),
        best_val_metric=_finite(row.get("best_val_metric")),
        config=trial.config_hash,
    )


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def select(study: Study, rows: Mapping[int, Mapping[str, Any] | None], mode: str) -> Selection:
    """Rank the study's trials from their stored runs (``rows``: trial index -> run row) and
    choose (:func:`leaderboard.scoring.choose_trial`)."""
    results, missing = [], []
    for trial in study.trials:
        r = trial_result(trial, rows.get(trial.index))
        if r is None:
            missing.append(trial.index)
        else:
            results.append(r)
    ranking = tuple(rank_trials(results, mode))
    if missing:
        return Selection(study, ranking, None, tuple(missing))
    best = choose_trial(results, mode)
    chosen = next(t for t in study.trials if t.index == best.trial) if best is not None else None
    return Selection(study, ranking, chosen)


def stored_rows(store: Any, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The run that stands for each key: the newest finished run, else the newest failed
    attempt (``error``/``crashed``); interrupted attempts do not count."""
    wanted = sorted(set(k for k in keys if k))
    best: dict[str, dict[str, Any]] = {}
    cols = (Run.id, Run.key, Run.status, Run.time_to_target_s, Run.steps_to_target, Run.best_val_metric)
    with store.session() as s:
        for i in range(0, len(wanted), 500):
            q = sql_select(*cols).where(Run.key.in_(wanted[i : i + 500])).order_by(Run.id)
            for rid, key, status, ttt, stt, best_val in s.execute(q):
                row = {
                    "id": rid,
                    "status": status,
                    "time_to_target_s": ttt,
                    "steps_to_target": stt,
                    "best_val_metric": best_val,
                }
                if status == "interrupted":
                    continue
                current = best.get(key)
                if current is None or status in FINISHED_STATUSES or current["status"] not in FINISHED_STATUSES:
                    best[key] = row
    return best
