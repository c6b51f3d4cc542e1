"""The ranking rules: which stored runs count, on which board, and which entry stands for an
optimizer (docs/site.md, docs/measurement.md). The scores computed from the chosen entries
(time-to-target medians, performance profiles) are :mod:`leaderboard.scoring`.

* **Staleness** (:func:`annotate`). A run is stale when its suite version differs from the
  installed suite's version, or its adapter version differs from the current adapter's. The
  current adapter versions come from the caller (the CLI computes them from the registry; the
  leaderboard never imports a backend); without them, the adapter version of the newest run of
  each (optimizer, backend) is taken as current. Stale runs are shown, greyed, and never scored.
* **Boards** (:func:`boards`). A board is one (track, backend, hardware) combination: time is
  comparable only on one device, and each track is ranked on its own. Compiled PyTorch is the
  backend ``torch-compiled`` (:mod:`leaderboard.labels`). Hardware is the
  environment's device name (else its device kind, else the run's device).
* **Roles** (:data:`SCORED_ROLES`). The untuned track scores ``run`` rows; the tuned track
  scores only ``rerun`` rows (seeds re-run with the configuration tuning chose); tuning
  ``trial`` rows are shown apart. Any other track scores ``run`` and ``rerun``.
* **Protocol** (:func:`protocol_deviation`). A run whose step budget, time budget or
  evaluation cadence differs from its installed suite's is shown but not scored.
* **One result per seed** (:func:`annotate`). A (board, suite, optimizer, configuration, seed)
  measured more than once counts once: the newest run. ``interrupted`` runs (stopped by a
  person) are never scored; every other status is a result, and a run that never met the
  target counts as a miss (``+inf``).
* **Entries** (:func:`aggregate_entries`). An entry is a (board, suite, optimizer,
  configuration) with its seeds. Where an optimizer has several configurations in a board, its
  scored entry is the fastest (median time-to-target, then median steps; AlgoPerf: fastest
  trial) among the configurations with the most seeds, so a single lucky seed of a side
  experiment never stands for the optimizer; the site says "best of k" (k: the configurations
  it was chosen from) and lists the others.
* **Studies** (:func:`study_frame`, tuned track). A study is the trials and re-runs of one
  (board, suite, optimizer) (``harness.tuning``). Its scored entry is the configuration of its
  newest re-run (the newest study's choice; a re-tuning replaces the previous choice instead of
  competing with it). Trials are ranked with :func:`leaderboard.scoring.rank_trials`, the rule
  the harness chose with. A study whose trials all failed has no configuration and no re-runs:
  it gets an entry that missed on every seed (``inf``, :func:`add_failed_studies`), so the
  optimizer is ranked last on that suite instead of vanishing from the board.
* **Step-time ratio to SGD** (:func:`annotate`): the run's median step time over the median
  SGD step time on the same suite, backend and dtype in the same sweep, else in the same
  environment (the reference used is recorded per run).

Everything here is pure: frames in, frames out, no database and no site.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from db.statuses import FAILED_STATUSES, STATUSES, UNSCORED_STATUSES
from leaderboard import format as fmt
from leaderboard.catalogue import MethodInfo, SuiteInfo
from leaderboard.cost import grad_equivalents
from leaderboard.labels import COMPILED_TORCH, backend_label, framework
from leaderboard.scoring import INF, TrialResult, choose_trial, median_to_target, rank_trials, trial_tier

#: Roles scored per track (any other track scores ``run`` and ``rerun``).
SCORED_ROLES: Mapping[str, frozenset[str]] = {
    "untuned": frozenset({"run"}),
    "tuned": frozenset({"rerun"}),
}
DEFAULT_ROLES: frozenset[str] = frozenset({"run", "rerun"})
#: Display order of boards: tracks, then backends (unknown ones after these, by name).
TRACK_ORDER: tuple[str, ...] = ("untuned", "tuned")
BACKEND_ORDER: tuple[str, ...] = ("torch", COMPILED_TORCH, "jax")


@dataclass
class Board:
    """One (track, backend, hardware) ranking: time is comparable only on one device, and each
    track is ranked on its own."""

    track: str
    backend: str
    hardware: str
    slug: str
    n_scored: int
    n_stale: int
    first: datetime | None
    last: datetime | None
    environment_ids: list[int]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.track, self.backend, self.hardware)

    @property
    def label(self) -> str:
        return f"{self.track} · {self.backend} · {self.hardware}"


def _numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def _config_key(hparams: Any, dtype: Any) -> str:
    """A configuration: runs with the same hyperparameters and dtype are seeds of one entry."""
    text = json.dumps({"h": hparams or {}, "d": dtype}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def config_label(hparams: Any, defaults: Mapping[str, Any] | None, dtype: Any = None) -> str:
    """Hyperparameters that differ from the method's defaults (all of them without a card)."""
    hp = hparams if isinstance(hparams, dict) else {}
    if defaults:
        diff = {k: v for k, v in hp.items() if k not in defaults or not _same(defaults[k], v)}
        text = ", ".join(f"{k}={fmt.value(v)}" for k, v in sorted(diff.items())) or "defaults"
    else:
        text = ", ".join(f"{k}={fmt.value(v)}" for k, v in sorted(hp.items())) or "defaults"
    if dtype and dtype != "float32":
        text += f" ({dtype})"
    return text


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return bool(a == b)


def annotate(
    runs: pd.DataFrame,
    environments: pd.DataFrame,
    suites: Mapping[str, SuiteInfo],
    current_adapters: Mapping[tuple[str, str], str],
    methods: Mapping[str, MethodInfo],
) -> pd.DataFrame:
    """The runs frame with the derived ranking columns (the rules of the module docstring).

    Relabels ``backend`` (``torch-compiled`` for compiled PyTorch) and adds ``hardware``;
    ``stale_suite``, ``stale_adapter``, ``stale`` and ``stale_reason`` (staleness); ``config``
    (a hash of hyperparameters and dtype) and ``config_label`` (what differs from the method
    card's defaults); ``reached``, ``ttt``, ``stt`` and ``failed``
    (outcome); ``board``, ``role_scored`` and ``protocol_note`` (eligibility); ``latest`` (the
    newest eligible run of its seed, stale and current runs apart), ``scored`` (latest and
    current) and ``superseded``; ``sgd_ratio`` and ``sgd_ref`` (step-time ratio to SGD); ``when``
    (finished, else created); ``grad_equivalents_per_step`` (:mod:`leaderboard.cost`).
    """
    runs = runs.copy()
    n = len(runs)
    if "spec" in runs:  # compiled PyTorch is a backend of its own on the board (leaderboard.labels)
        runs["backend"] = [backend_label(b, spec) for b, spec in zip(runs["backend"], runs["spec"])]
    for col in ("sweep_id", "environment_id", "suite_version", "steps_to_target", "trial", "seed"):
        runs[col] = _numeric(runs[col]) if n else pd.Series(dtype=float)
    for col in (
        "time_to_target_s",
        "final_train_loss",
        "best_val_metric",
        "step_time_median_s",
        "peak_memory_bytes",
        "peak_memory_above_baseline_bytes",
        "compile_time_s",
        "train_time_s",
        "initial_train_loss",
    ):
        runs[col] = _numeric(runs[col]).astype(float) if n else pd.Series(dtype=float)
    env_device = environments["device_name"] if len(environments) else pd.Series(dtype=object)
    env_kind = environments["device_kind"] if len(environments) else pd.Series(dtype=object)
    hardware = runs["environment_id"].map(env_device).where(lambda s: s.notna() & (s != ""))
    hardware = hardware.fillna(runs["environment_id"].map(env_kind)).fillna(runs["device"]).fillna("unknown device")
    runs["hardware"] = hardware.astype(str)

    # Staleness.
    current_suite = runs["suite"].map({k: v.version for k, v in suites.items()})
    runs["stale_suite"] = current_suite.notna() & (runs["suite_version"] != current_suite)
    newest = runs.sort_values("id").groupby(["optimizer", "backend"])["adapter_version"].last()
    current = {k: v for k, v in newest.items()}
    current.update({k: v for k, v in current_adapters.items()})
    cur = pd.Series(
        [current.get((o, framework(b)), current.get((o, b))) for o, b in zip(runs["optimizer"], runs["backend"])],
        index=runs.index,
    )
    runs["current_adapter"] = cur
    runs["stale_adapter"] = cur.notna() & (runs["adapter_version"] != cur)
    runs["stale"] = runs["stale_suite"] | runs["stale_adapter"]
    reasons = []
    for ss, sa, ver, cv, av in zip(
        runs["stale_suite"], runs["stale_adapter"], runs["suite_version"], current_suite, runs["adapter_version"]
    ):
        parts = []
        if ss:
            parts.append(f"suite v{_int_text(ver)}, current v{_int_text(cv)}")
        if sa:
            parts.append(f"adapter {str(av)[:8] if av else 'unknown'} is not the current one")
        reasons.append("; ".join(parts))
    runs["stale_reason"] = reasons

    # Configurations.
    runs["config"] = [_config_key(h, d) for h, d in zip(runs["hparams"], runs["dtype"])]
    runs["config_label"] = [
        config_label(h, methods[o].defaults if o in methods else None, d)
        for h, d, o in zip(runs["hparams"], runs["dtype"], runs["optimizer"])
    ]

    # Outcome columns used by scoring.
    runs["reached"] = runs["steps_to_target"].notna()
    runs["ttt"] = runs["time_to_target_s"].where(runs["reached"])
    runs["stt"] = runs["steps_to_target"].astype(float)
    runs["failed"] = runs["status"].isin(FAILED_STATUSES)

    # Boards, roles and the newest run per seed.
    runs["board"] = list(zip(runs["track"], runs["backend"], runs["hardware"]))
    role_ok = [role in SCORED_ROLES.get(track, DEFAULT_ROLES) for track, role in zip(runs["track"], runs["role"])]
    runs["role_scored"] = role_ok
    runs["protocol_note"] = [
        protocol_deviation(spec, suites.get(suite)) for spec, suite in zip(runs["spec"], runs["suite"])
    ]
    eligible = runs["role_scored"] & ~runs["status"].isin(UNSCORED_STATUSES) & (runs["protocol_note"] == "")
    seed_key = ["track", "backend", "hardware", "suite", "optimizer", "config", "seed"]
    runs["latest"] = False
    for stale in (False, True):
        mask = eligible & (runs["stale"] == stale)
        if mask.any():
            latest = runs[mask].sort_values("id").drop_duplicates(seed_key, keep="last").index
            runs.loc[latest, "latest"] = True
    runs["scored"] = runs["latest"] & ~runs["stale"]
    runs["superseded"] = eligible & ~runs["latest"]

    # Step-time ratio to SGD (same sweep, else same environment).
    runs["sgd_ratio"] = np.nan
    runs["sgd_ref"] = None
    if n:
        sgd = runs[(runs["optimizer"] == "sgd") & runs["step_time_median_s"].notna()]
        base = ["suite", "backend", "dtype"]
        by_sweep = sgd.groupby([*base, "sweep_id"])["step_time_median_s"].median().rename("sgd_sweep")
        by_env = sgd.groupby([*base, "environment_id"])["step_time_median_s"].median().rename("sgd_env")
        joined = runs[[*base, "sweep_id", "environment_id"]].join(by_sweep, on=[*base, "sweep_id"])
        joined = joined.join(by_env, on=[*base, "environment_id"])
        ref = joined["sgd_sweep"].fillna(joined["sgd_env"])
        runs["sgd_ratio"] = runs["step_time_median_s"] / ref.where(ref > 0)
        ref_kind = pd.Series(None, index=runs.index, dtype=object)
        ref_kind[joined["sgd_env"].notna()] = "environment"
        ref_kind[joined["sgd_sweep"].notna()] = "sweep"
        ref_kind[runs["sgd_ratio"].isna()] = None
        runs["sgd_ref"] = ref_kind
    runs["when"] = runs["finished_at"].where(runs["finished_at"].notna(), runs["created_at"])
    # Passes per step weighed by their cost in gradients (leaderboard.cost), from the stored counts.
    runs["grad_equivalents_per_step"] = (
        [grad_equivalents(p) for p in runs["passes_per_step"]] if n else pd.Series(dtype=float)
    )
    return runs


def protocol_deviation(spec: Any, suite: SuiteInfo | None) -> str:
    """Why a run's protocol differs from its suite's (empty: it does not); such runs are shown
    but not scored, since a shorter budget or a finer evaluation cadence changes time-to-target.

    Checked against the installed suite: the step budget, the wall-clock budget and the
    evaluation cadence a run may override (``RunSpec.steps``, ``time_budget_s``, ``eval_every``).
    """
    if not isinstance(spec, dict) or suite is None or not suite.installed:
        return ""
    notes = []
    for key, label, expected in (
        ("steps", "step budget", suite.budget_steps),
        ("time_budget_s", "time budget", suite.budget_time_s),
        ("eval_every", "evaluation cadence", suite.eval_every),
    ):
        value = spec.get(key)
        if value is not None and expected is not None and fmt.finite(value) != fmt.finite(expected):
            notes.append(f"{label} {fmt.value(value)} (the suite's: {fmt.value(expected)})")
        elif value is not None and expected is None:
            notes.append(f"{label} {fmt.value(value)} (the suite has none)")
    return "; ".join(notes)


def _int_text(v: Any) -> str:
    f = fmt.finite(v)
    return str(int(f)) if f is not None else "?"


def boards(runs: pd.DataFrame) -> list[Board]:
    """One :class:`Board` per (track, backend, hardware) of the annotated runs, in display order:
    untuned before tuned, torch before jax, then the board with the most scored runs first."""
    found: list[Board] = []
    if runs.empty:
        return found
    for (track, backend, hardware), rows in runs.groupby(["track", "backend", "hardware"], sort=False):
        scored = rows[rows["scored"]]
        when = pd.to_datetime(rows["when"], utc=True, errors="coerce").dropna()
        found.append(
            Board(
                track=str(track),
                backend=str(backend),
                hardware=str(hardware),
                slug=fmt.slug(f"{track}-{backend}-{hardware}"),
                n_scored=len(scored),
                n_stale=int(rows["stale"].sum()),
                first=when.min().to_pydatetime() if len(when) else None,
                last=when.max().to_pydatetime() if len(when) else None,
                environment_ids=sorted({int(e) for e in rows["environment_id"].dropna()}),
            )
        )

    def order(b: Board) -> tuple[int, str, int, str, int, str]:
        t = TRACK_ORDER.index(b.track) if b.track in TRACK_ORDER else len(TRACK_ORDER)
        k = BACKEND_ORDER.index(b.backend) if b.backend in BACKEND_ORDER else len(BACKEND_ORDER)
        return (t, b.track, k, b.backend, -b.n_scored, b.hardware)

    return sorted(found, key=order)


# ---------------------------------------------------------------------------------- entries

ENTRY_KEYS: list[str] = ["track", "backend", "hardware", "suite", "optimizer", "config"]


def aggregate_entries(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (board, suite, optimizer, configuration, stale) over the newest run per seed.

    Columns: the keys, ``stale``, ``runs`` (count), ``seeds``, ``reached``, ``status_counts``
    (dict), ``ttt`` and ``stt`` (medians with misses as ``inf``, see
    :func:`leaderboard.scoring.median_to_target`), medians of ``final_train_loss``,
    ``best_val_metric``, ``step_time`` (median step time), ``sgd_ratio``, ``peak_memory``,
    ``compile_time``, ``train_time``, ``grad_equivalents``; ``sgd_ref``, ``memory_kind``, ``passes``,
    ``config_label``, ``run_ids``, and ``chosen`` (the optimizer's scored entry in its board and
    suite) and ``configs`` (how many current configurations it was chosen from).
    """
    rows = runs[runs["latest"]] if len(runs) else runs
    columns = [
        *ENTRY_KEYS,
        "stale",
        "runs",
        "seeds",
        "reached",
        "status_counts",
        "ttt",
        "ttt_min",
        "ttt_max",
        "stt",
        "final_train_loss",
        "best_val_metric",
        "step_time",
        "sgd_ratio",
        "sgd_ref",
        "peak_memory",
        "step_memory",
        "memory_kind",
        "compile_time",
        "train_time",
        "passes",
        "grad_equivalents",
        "config_label",
        "hparams",
        "run_ids",
        "stale_reason",
        "newest_id",
        "study_note",
        "chosen",
        "configs",
    ]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for key, g in rows.groupby([*ENTRY_KEYS, "stale"], sort=True):
        g = g.sort_values("seed")
        counts = g["status"].value_counts()
        refs = {r for r in g["sgd_ref"] if r}
        out.append(
            {
                **dict(zip([*ENTRY_KEYS, "stale"], key)),
                "runs": len(g),
                "seeds": int(g["seed"].nunique()),
                "reached": int(g["reached"].sum()),
                "status_counts": {s: int(counts[s]) for s in STATUSES + tuple(counts.index) if s in counts},
                "ttt": median_to_target(g["ttt"].tolist()),
                "ttt_min": float(g["ttt"].fillna(INF).min()),
                "ttt_max": float(g["ttt"].fillna(INF).max()),
                "stt": median_to_target(g["stt"].tolist()),
                "final_train_loss": _median(g["final_train_loss"]),
                "best_val_metric": _median(g["best_val_metric"]),
                "step_time": _median(g["step_time_median_s"]),
                "sgd_ratio": _median(g["sgd_ratio"]),
                "sgd_ref": "/".join(sorted(refs)) if refs else None,
                "peak_memory": _median(g["peak_memory_bytes"]),
                "step_memory": _median(g["peak_memory_above_baseline_bytes"]),
                "memory_kind": next((m for m in g["memory_kind"] if isinstance(m, str)), None),
                "compile_time": _median(g["compile_time_s"]),
                "train_time": _median(g["train_time_s"]),
                "passes": _median_passes(g["passes_per_step"]),
                "grad_equivalents": _median(g["grad_equivalents_per_step"]),
                "config_label": g["config_label"].iloc[0],
                "hparams": g["hparams"].iloc[0],
                "run_ids": [int(i) for i in g["id"]],
                "stale_reason": next((r for r in g["stale_reason"] if r), ""),
                "newest_id": int(g["id"].max()),
                "study_note": "",
            }
        )
    entries = pd.DataFrame(out, columns=columns[:-2])
    entries["chosen"] = False
    entries["configs"] = 0
    current = entries[~entries["stale"]]
    if len(current):
        cell = ["track", "backend", "hardware", "suite", "optimizer"]
        # Untuned (and any other track): the fastest among the configurations with the most
        # seeds. Tuned: the newest study's choice (its newest re-run), never a pick among the
        # re-runs of several studies by their scored times.
        tuned = current["track"] == "tuned"
        other = current[~tuned]
        most = other.groupby(cell)["seeds"].transform("max")
        candidates = other[other["seeds"] == most]
        ranked = pd.concat(
            [
                candidates.sort_values(["ttt", "stt", "config"], kind="stable"),
                current[tuned].sort_values(["newest_id"], ascending=False, kind="stable"),
            ]
        )
        groups = ranked.groupby(cell, sort=False)
        entries.loc[groups.head(1).index, "chosen"] = True
        sizes = groups["config"].transform("size")
        entries.loc[sizes.index, "configs"] = sizes.astype(int)
    return entries


# ---------------------------------------------------------------------------------- studies

STUDY_KEYS: list[str] = ["track", "backend", "hardware", "suite", "optimizer"]


def _trial_results(rows: pd.DataFrame) -> list[TrialResult]:
    """The newest usable run of each trial (interrupted attempts are not results)."""
    rows = rows[rows["status"] != "interrupted"].sort_values("id")
    rows = rows.drop_duplicates(["trial", "config"], keep="last")
    out = []
    for r in rows.itertuples(index=False):
        out.append(
            TrialResult(
                trial=int(r.trial) if fmt.finite(r.trial) is not None else -1,
                status=str(r.status),
                time_to_target_s=fmt.finite(r.ttt),
                steps_to_target=fmt.finite(r.steps_to_target),
                best_val_metric=fmt.finite(r.best_val_metric),
                config=str(r.config),
            )
        )
    return out


def study_frame(runs: pd.DataFrame, suites: Mapping[str, SuiteInfo]) -> pd.DataFrame:
    """One row per (board, suite, optimizer) with tuning trials or re-runs (current runs only).

    Columns: the keys, ``trials`` (how many), ``failed_trials``, ``ranking`` (trial indices best
    first, :func:`leaderboard.scoring.rank_trials`), ``best_trial`` (the rule's choice or
    ``None``), ``chosen_config`` (the configuration the board scores: its newest re-run's),
    ``reruns``, ``all_failed``, ``trial_ids`` (run id per trial index), ``sweeps``.
    """
    columns = [
        *STUDY_KEYS,
        "trials",
        "failed_trials",
        "ranking",
        "best_trial",
        "best_config",
        "chosen_config",
        "chosen_trial",
        "reruns",
        "all_failed",
        "trial_ids",
        "sweeps",
    ]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    tuned = runs[runs["role"].isin(["trial", "rerun"]) & ~runs["stale"]]
    out = []
    for key, g in tuned.groupby(STUDY_KEYS, sort=True):
        info = suites.get(str(key[3]))
        mode = info.metric_mode(info.val_metric) if info else "max"
        trials = g[g["role"] == "trial"]
        reruns = g[(g["role"] == "rerun") & (g["status"] != "interrupted")]
        results = _trial_results(trials) if len(trials) else []
        ranked = rank_trials(results, mode)
        best = choose_trial(results, mode)
        chosen_config = str(reruns.sort_values("id")["config"].iloc[-1]) if len(reruns) else None
        chosen_trial = None
        if chosen_config is not None:
            match = [r.trial for r in results if r.config == chosen_config]
            chosen_trial = match[0] if match else None
        newest = trials.sort_values("id").drop_duplicates(["trial", "config"], keep="last")
        out.append(
            {
                **dict(zip(STUDY_KEYS, key)),
                "trials": len(results),
                "failed_trials": sum(trial_tier(r) == 2 for r in results),
                "ranking": [r.trial for r in ranked],
                "best_trial": best.trial if best is not None else None,
                "best_config": best.config if best is not None else None,
                "chosen_config": chosen_config,
                "chosen_trial": chosen_trial,
                "reruns": len(reruns),
                "all_failed": bool(results) and best is None and not len(reruns),
                "trial_ids": {int(t): int(i) for t, i in zip(newest["trial"].fillna(-1), newest["id"])},
                "sweeps": sorted({int(s) for s in g["sweep_id"].dropna()}),
            }
        )
    frame = pd.DataFrame(out, columns=columns)
    for column in ("best_trial", "chosen_trial"):  # integers or None, never NaN floats
        frame[column] = pd.Series([row[column] for row in out], index=frame.index, dtype=object)
    return frame


def add_failed_studies(entries: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """An ``inf`` entry for every study whose trials all failed (no configuration, no re-runs)."""
    if studies.empty or not studies["all_failed"].any():
        return entries
    rows = []
    for s in studies[studies["all_failed"]].itertuples(index=False):
        rows.append(
            {
                **{k: getattr(s, k) for k in STUDY_KEYS},
                "config": "none",
                "stale": False,
                "runs": 0,
                "seeds": 0,
                "reached": 0,
                "status_counts": {},
                "ttt": INF,
                "ttt_min": INF,
                "ttt_max": INF,
                "stt": INF,
                "final_train_loss": math.nan,
                "best_val_metric": math.nan,
                "step_time": math.nan,
                "sgd_ratio": math.nan,
                "sgd_ref": None,
                "peak_memory": math.nan,
                "step_memory": math.nan,
                "memory_kind": None,
                "compile_time": math.nan,
                "train_time": math.nan,
                "passes": {},
                "grad_equivalents": math.nan,
                "config_label": f"no configuration: all {s.trials} tuning trials failed",
                "hparams": {},
                "run_ids": [],
                "stale_reason": "",
                "newest_id": 0,
                "study_note": f"no configuration: {s.failed_trials}/{s.trials} trials failed",
                "chosen": True,
                "configs": 0,
            }
        )
    extra = pd.DataFrame(rows, columns=entries.columns if len(entries.columns) else None)
    return pd.concat([entries, extra], ignore_index=True) if len(entries) else extra


def _median(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def _median_passes(values: pd.Series) -> dict[str, float]:
    keys: dict[str, list[float]] = {}
    for d in values:
        if isinstance(d, dict):
            for k, v in d.items():
                f = fmt.finite(v)
                if f is not None:
                    keys.setdefault(str(k), []).append(f)
    return {k: float(np.median(v)) for k, v in keys.items()}


def board_table(entries: pd.DataFrame, key: tuple[str, str, str]) -> pd.DataFrame:
    """The chosen (scored) entries of one board."""
    if entries.empty:
        return entries
    track, backend, hardware = key
    mask = (
        (entries["track"] == track)
        & (entries["backend"] == backend)
        & (entries["hardware"] == hardware)
        & entries["chosen"]
    )
    return entries[mask]
