"""Nightly regression reports: what changed since the previous nightly on the same machine.

The previous nightly is the newest earlier sweep of kind ``nightly`` with the same name whose
environment is the same *machine* (hostname, device kind and name, CPU). The software is
expected to differ (that is what a nightly tests); the report lists what did (git commit,
framework, CUDA and driver versions). ``--baseline ID`` picks a sweep explicitly.

Runs are grouped by (suite, optimizer, backend, hyperparameter overrides); within a group the
seeds are the replicates. Per group and metric:

* **step time** (``step_time_median_s``) and **peak memory** (``peak_memory_bytes``): step
  detection between consecutive nightlies, on the log scale. The change
  ``d = log(median_cur / median_prev)`` is flagged when ``|d|`` exceeds the noise band
  ``max(log(1 + min_rel), k * sigma)``, where ``sigma`` is the larger of

  - the run-to-run spread across seeds: ``sigma_seed = sqrt(se_cur^2 + se_prev^2)`` with
    ``se = 1.2533 * s / sqrt(n)`` (standard error of a median), ``s = 1.4826 * MAD(log v)``
    the robust spread of the group's seeds (groups with one seed use the median ``s`` of all
    groups of that metric in the two nightlies);
  - the night-to-night spread of the group's medians over up to ``history`` earlier
    nightlies: ``sigma_night = 1.4826 * MAD(diff(log m)) / sqrt(2)``.

  This is asv's idea (a regression is a step in the series, larger than the series' own
  noise), with the threshold measured rather than fixed (docs/measurement.md:
  fixed thresholds on shared hardware give false alarms). Flags: ``slowdown``/``speedup``
  for step time, ``regression``/``improvement`` for memory: both directions are reported.
* **time to target** (``time_to_target_s``; a run that finished without reaching the target
  counts as +inf) and **final training loss** (``final_train_loss``): a seed-aware two-sample
  test: the exact permutation test of the rank-sum statistic (Mann-Whitney U, ties averaged),
  enumerating every assignment of the seeds' values to the two nightlies. Flagged when
  ``p < alpha`` and the relative change of the medians is at least ``min_effect`` (2 %). With n and
  m seeds the smallest attainable p is ``2 / C(n+m, n)``: 0.33 for 2+2 seeds, 0.10 for 3+3,
  0.029 for 4+4. Items that could not reach ``alpha`` say so (``underpowered``): convergence
  changes need at least 4 seeds per nightly.
* **failures**: the number of runs per group whose status is not a success; any increase is a
  ``regression`` (a method that now diverges or runs out of memory), any decrease an
  ``improvement``.

The report is a JSON document in the format documented on ``db.models.Sweep.report``, stored in
that column, written with ``--report-json``, printed as a table, and shown on the site.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from db.models import Environment, Run, Sweep
from db.statuses import FINISHED_STATUSES
from db.store import Store
from harness.site import build_site
from leaderboard.labels import backend_label

OK_STATUSES = frozenset({"done", "target_reached", "budget_exhausted"})
#: Statuses whose step time and memory are measurements (a run cut short by an error is not).
MEASURED_STATUSES = frozenset({"done", "target_reached", "budget_exhausted", "diverged"})
#: Environment fields that identify the machine (a nightly is compared on the same one).
MACHINE_FIELDS: tuple[str, ...] = ("hostname", "device_kind", "device_name", "cpu")
#: Software fields whose changes the report lists.
SOFTWARE_FIELDS: tuple[str, ...] = ("git_commit", "git_dirty", "torch", "jax", "jaxlib", "cuda", "driver", "python")

#: Normal-consistency factor of the median absolute deviation.
MAD_TO_SIGMA = 1.4826
#: Standard error of a sample median relative to sigma / sqrt(n) (normal data).
MEDIAN_SE = 1.2533
#: Above this many relabellings the permutation test samples instead of enumerating.
MAX_EXACT_PERMUTATIONS = 200_000


@dataclass(frozen=True)
class Thresholds:
    """Settings of the comparison (stored in the report)."""

    k: float = 3.0
    min_rel: float = 0.05
    alpha: float = 0.05
    #: Smallest flagged relative change of a convergence metric (time to target, final loss):
    #: losses of a fixed seed are reproducible on one machine, so small consistent changes count.
    min_effect: float = 0.02
    history: int = 5


@dataclass(frozen=True)
class Group:
    suite: str
    optimizer: str
    backend: str
    config: str = ""

    def label(self) -> str:
        return f"{self.suite} {self.optimizer} {self.backend}" + (f" {self.config}" if self.config else "")


# ---------------------------------------------------------------------------------- statistics


def robust_sigma(values: Sequence[float] | np.ndarray) -> float | None:
    """``1.4826 * MAD`` of ``values`` (``None`` with fewer than two)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return None
    return float(MAD_TO_SIGMA * np.median(np.abs(v - np.median(v))))


def permutation_p_value(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> tuple[float, float]:
    """Two-sided exact permutation test of the rank-sum statistic; ``(p, smallest attainable p)``.

    Values may be ``inf`` (a missed target ranks last); ties get average ranks. Every split of
    the pooled seeds into groups of ``len(a)`` and ``len(b)`` is equally likely under the null
    hypothesis "same distribution"; ``p`` is the fraction of splits whose rank-sum deviates at
    least as much as the observed one (Mann-Whitney U, exact).
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return 1.0, 1.0
    pooled = np.asarray(list(a) + list(b), dtype=float)
    order = np.argsort(pooled, kind="mergesort")
    ranks = np.empty(n + m)
    sorted_vals = pooled[order]
    i = 0
    while i < n + m:  # average ranks over ties (inf == inf is a tie)
        j = i
        while j + 1 < n + m and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    expected = n * (n + m + 1) / 2.0
    observed = abs(ranks[:n].sum() - expected)
    total = math.comb(n + m, n)
    if total <= MAX_EXACT_PERMUTATIONS:
        splits: Iterable[Sequence[int]] = itertools.combinations(range(n + m), n)
        count = total
    else:
        rng = np.random.default_rng(seed)
        count = 20_000
        splits = (rng.choice(n + m, size=n, replace=False).tolist() for _ in range(count))
    extreme = 0
    for idx in splits:
        if abs(ranks[list(idx)].sum() - expected) >= observed - 1e-9:
            extreme += 1
    return extreme / count, 2.0 / total


def _median(values: Sequence[float]) -> float | None:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.median(v)) if v else None


# ---------------------------------------------------------------------------------- data


def _runs(store: Store, sweep_id: int) -> list[dict[str, Any]]:
    """The sweep's runs, one per (group, seed): the latest finished attempt, else the latest."""
    cols = (
        Run.id,
        Run.suite,
        Run.optimizer,
        Run.backend,
        Run.seed,
        Run.status,
        Run.spec,
        Run.target,
        Run.step_time_median_s,
        Run.peak_memory_bytes,
        Run.memory_kind,
        Run.time_to_target_s,
        Run.final_train_loss,
    )
    with store.session() as s:
        rows = s.execute(select(*cols).where(Run.sweep_id == sweep_id).order_by(Run.id)).all()
    best: dict[tuple[Group, int], dict[str, Any]] = {}
    for row in rows:
        r = row._asdict()
        spec = r.pop("spec") or {}
        overrides = spec.get("hparams") or {}
        config = json.dumps(overrides, sort_keys=True) if overrides else ""
        if spec.get("preset"):
            config = f"preset={spec['preset']} {config}".strip()
        r["backend"] = backend_label(r["backend"], spec)  # compiled PyTorch is compared with itself
        r["group"] = Group(r["suite"], r["optimizer"], r["backend"], config)
        slot = (r["group"], r["seed"])
        old = best.get(slot)
        if old is None or r["status"] in FINISHED_STATUSES or old["status"] not in FINISHED_STATUSES:
            best[slot] = r
    return list(best.values())


def sweep_environment(store: Store, sweep_id: int) -> dict[str, Any]:
    """The environment record stored with sweep ``sweep_id`` (empty when it has none)."""
    with store.session() as s:
        row = s.execute(
            select(Environment.details).join(Sweep, Sweep.environment_id == Environment.id).where(Sweep.id == sweep_id)
        ).first()
    return dict(row[0] or {}) if row else {}


def _sweep(store: Store, sweep_id: int) -> dict[str, Any] | None:
    with store.session() as s:
        row = s.execute(
            select(Sweep.id, Sweep.name, Sweep.kind, Sweep.status, Sweep.started_at).where(Sweep.id == sweep_id)
        ).first()
    return row._asdict() if row else None


def same_machine(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(f) == b.get(f) for f in MACHINE_FIELDS)


def earlier_nightlies(store: Store, sweep_id: int, limit: int | None = None) -> list[int]:
    """Ids of earlier finished nightlies with the same name on the same machine, newest first."""
    current = _sweep(store, sweep_id)
    if current is None:
        return []
    env = sweep_environment(store, sweep_id)
    with store.session() as s:
        ids = list(
            s.scalars(
                select(Sweep.id)
                .where(
                    Sweep.kind == "nightly",
                    Sweep.name == current["name"],
                    Sweep.id < sweep_id,
                    Sweep.status == "finished",  # an interrupted or failed nightly is no baseline
                )
                .order_by(Sweep.id.desc())
            )
        )
    out = []
    for sid in ids:
        if same_machine(env, sweep_environment(store, sid)) and _runs(store, sid):
            out.append(sid)
            if limit is not None and len(out) >= limit:
                break
    return out


def previous_nightly(store: Store, sweep_id: int) -> int | None:
    """The newest earlier nightly of the same name on the same machine, or ``None``."""
    found = earlier_nightlies(store, sweep_id, limit=1)
    return found[0] if found else None


# ---------------------------------------------------------------------------------- comparison


def _by_group(runs: list[dict[str, Any]]) -> dict[Group, list[dict[str, Any]]]:
    out: dict[Group, list[dict[str, Any]]] = {}
    for r in runs:
        out.setdefault(r["group"], []).append(r)
    for rows in out.values():
        rows.sort(key=lambda r: r["seed"])
    return out


def _measured(rows: list[dict[str, Any]], column: str) -> list[float]:
    return [
        float(r[column])
        for r in rows
        if r["status"] in MEASURED_STATUSES
        and r[column] is not None
        and math.isfinite(float(r[column]))
        and float(r[column]) > 0
    ]


def _item(group: Group, metric: str, previous: Any, current: Any, **rest: Any) -> dict[str, Any]:
    ratio = None
    if previous not in (None, 0) and current is not None and math.isfinite(previous) and math.isfinite(current):
        ratio = current / previous
    item = {
        "suite": group.suite,
        "optimizer": group.optimizer,
        "backend": group.backend,
        "metric": metric,
        "previous": previous if previous is None or math.isfinite(previous) else None,
        "current": current if current is None or math.isfinite(current) else None,
        "ratio": ratio,
        "threshold": None,
        "p_value": None,
        "flag": "unchanged",
        "detail": "",
    }
    if group.config:
        item["config"] = group.config
    item.update(rest)
    return item


def _step_items(
    metric: str,
    up: str,
    down: str,
    prev: dict[Group, list[dict[str, Any]]],
    cur: dict[Group, list[dict[str, Any]]],
    history: list[dict[Group, list[dict[str, Any]]]],
    th: Thresholds,
) -> list[dict[str, Any]]:
    """Level-shift detection for a per-run cost metric (step time, peak memory)."""
    sigmas = []
    for side in (prev, cur):
        for rows in side.values():
            s = robust_sigma(np.log(_measured(rows, metric)))
            if s is not None:
                sigmas.append(s)
    pooled = float(np.median(sigmas)) if sigmas else 0.0
    items = []
    for group in sorted(set(prev) & set(cur), key=Group.label):
        a, b = _measured(prev[group], metric), _measured(cur[group], metric)
        if metric == "peak_memory_bytes":
            kinds = {r["memory_kind"] for r in prev[group] + cur[group] if r["memory_kind"]}
            if len(kinds) > 1:
                continue  # CPU RSS against CUDA allocator peak: not comparable
        if not a or not b:
            continue
        ma, mb = float(np.median(a)), float(np.median(b))
        se = []
        for vals in (a, b):
            s = robust_sigma(np.log(vals))
            s = pooled if s is None else s
            se.append(MEDIAN_SE * s / math.sqrt(len(vals)))
        sigma_seed = math.sqrt(se[0] ** 2 + se[1] ** 2)
        series = [float(np.median(v)) for h in history if (v := _measured(h.get(group, []), metric))]
        sigma_night = 0.0
        if len(series) >= 3:
            diffs = np.diff(np.log(series[::-1]))
            sigma_night = (robust_sigma(diffs) or 0.0) / math.sqrt(2.0)
        band = max(math.log1p(th.min_rel), th.k * max(sigma_seed, sigma_night))
        d = math.log(mb / ma)
        flag = (up if d > 0 else down) if abs(d) > band else "unchanged"
        if len(series) >= 3:
            nights = f", nights {100 * sigma_night:.1f}% ({len(series)} earlier)"
        else:
            nights = f", nights n/a ({len(series)} earlier, 3 needed)"
        detail = (
            f"median of {len(b)} vs {len(a)} runs; noise: seeds {100 * sigma_seed:.1f}%{nights}"
            f"; band ±{100 * math.expm1(band):.1f}%"
        )
        items.append(_item(group, metric, ma, mb, threshold=math.expm1(band), flag=flag, detail=detail))
    return items


def _ttt_values(rows: list[dict[str, Any]]) -> list[float]:
    out = []
    for r in rows:
        if r["status"] not in FINISHED_STATUSES:
            continue  # an infrastructure failure says nothing about convergence
        t = r["time_to_target_s"]
        out.append(float(t) if t is not None and math.isfinite(float(t)) else math.inf)
    return out


def _loss_values(rows: list[dict[str, Any]]) -> list[float]:
    return [
        float(r["final_train_loss"])
        for r in rows
        if r["status"] in OK_STATUSES and r["final_train_loss"] is not None and math.isfinite(r["final_train_loss"])
    ]


def _test_items(
    metric: str,
    values: Any,
    prev: dict[Group, list[dict[str, Any]]],
    cur: dict[Group, list[dict[str, Any]]],
    th: Thresholds,
) -> list[dict[str, Any]]:
    """Seed-aware two-sample test for a convergence metric (lower is better)."""
    items = []
    for group in sorted(set(prev) & set(cur), key=Group.label):
        if metric == "time_to_target_s" and not any(r["target"] for r in prev[group] + cur[group]):
            continue
        a, b = values(prev[group]), values(cur[group])
        if not a or not b:
            continue
        ma, mb = float(np.median(a)), float(np.median(b))
        p, floor = permutation_p_value(a, b)
        if math.isfinite(ma) and math.isfinite(mb) and ma > 0:
            effect = mb / ma - 1.0
        elif ma == mb:
            effect = 0.0
        else:
            effect = math.inf if mb > ma else -math.inf
        flag = "unchanged"
        if p < th.alpha and abs(effect) >= th.min_effect:
            flag = "regression" if effect > 0 else "improvement"
        detail = f"{len(b)} vs {len(a)} seeds, permutation (rank-sum) test p={p:.3g}"
        if metric == "time_to_target_s":
            reached = sum(math.isfinite(v) for v in b), sum(math.isfinite(v) for v in a)
            detail += f"; target reached by {reached[0]}/{len(b)} (previously {reached[1]}/{len(a)})"
        extra: dict[str, Any] = {}
        if floor >= th.alpha:
            extra["underpowered"] = True
            if abs(effect) >= th.min_effect and p <= floor + 1e-12:
                detail += f"; every seed moved the same way but {len(a)}+{len(b)} seeds cannot reach p<{th.alpha:g}"
            else:
                detail += f"; underpowered (smallest attainable p {floor:.2g}: use ≥4 seeds per nightly)"
        items.append(
            _item(group, metric, ma, mb, threshold=th.min_effect, p_value=p, flag=flag, detail=detail, **extra)
        )
    return items


def _failure_items(prev: dict[Group, list[dict[str, Any]]], cur: dict[Group, list[dict[str, Any]]]) -> list[dict]:
    items = []
    for group in sorted(set(prev) & set(cur), key=Group.label):
        fa = [r["status"] for r in prev[group] if r["status"] not in OK_STATUSES]
        fb = [r["status"] for r in cur[group] if r["status"] not in OK_STATUSES]
        flag = "regression" if len(fb) > len(fa) else "improvement" if len(fb) < len(fa) else "unchanged"
        detail = f"failed runs {len(fb)}/{len(cur[group])} ({', '.join(sorted(fb)) or 'none'}); " + (
            f"previously {len(fa)}/{len(prev[group])} ({', '.join(sorted(fa)) or 'none'})"
        )
        items.append(_item(group, "failed_runs", float(len(fa)), float(len(fb)), flag=flag, detail=detail))
    return items


def compare(
    store: Store,
    sweep_id: int,
    baseline_id: int | None = None,
    *,
    thresholds: Thresholds | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The regression report of nightly ``sweep_id`` against ``baseline_id`` (default: the
    previous nightly on the same machine); see the module docstring."""
    th = thresholds or Thresholds()
    generated = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    current_env = sweep_environment(store, sweep_id)
    if baseline_id is None:
        baseline_id = previous_nightly(store, sweep_id)
    report: dict[str, Any] = {
        "previous_sweep_id": baseline_id,
        "sweep_id": sweep_id,
        "generated_at": generated,
        "settings": asdict(th),
        "items": [],
    }
    cur = _by_group(_runs(store, sweep_id))
    if baseline_id is None:
        report["summary"] = {
            "flagged": 0,
            "compared": 0,
            "note": "no earlier nightly of this name on this machine: nothing to compare (baseline recorded)",
        }
        return report
    prev_env = sweep_environment(store, baseline_id)
    prev = _by_group(_runs(store, baseline_id))
    history_ids = [sid for sid in earlier_nightlies(store, sweep_id, limit=th.history + 1) if sid != baseline_id]
    history = [prev] + [_by_group(_runs(store, sid)) for sid in history_ids[: th.history - 1]]
    items = []
    items += _step_items("step_time_median_s", "slowdown", "speedup", prev, cur, history, th)
    items += _step_items("peak_memory_bytes", "regression", "improvement", prev, cur, history, th)
    items += _test_items("time_to_target_s", _ttt_values, prev, cur, th)
    items += _test_items("final_train_loss", _loss_values, prev, cur, th)
    items += _failure_items(prev, cur)
    report["items"] = items
    flags = [i["flag"] for i in items]
    report["changes"] = {
        f: [prev_env.get(f), current_env.get(f)] for f in SOFTWARE_FIELDS if prev_env.get(f) != current_env.get(f)
    }
    if not same_machine(prev_env, current_env):
        report["changes"]["machine"] = [
            {f: prev_env.get(f) for f in MACHINE_FIELDS},
            {f: current_env.get(f) for f in MACHINE_FIELDS},
        ]
    report["summary"] = {
        "flagged": sum(f != "unchanged" for f in flags),
        "compared": len(items),
        "slowdowns": flags.count("slowdown"),
        "speedups": flags.count("speedup"),
        "regressions": flags.count("regression"),
        "improvements": flags.count("improvement"),
        "underpowered": sum(bool(i.get("underpowered")) for i in items),
        "new_groups": sorted(g.label() for g in set(cur) - set(prev)),
        "missing_groups": sorted(g.label() for g in set(prev) - set(cur)),
    }
    return report


def has_regressions(report: Mapping[str, Any]) -> bool:
    """Whether the report flags anything getting worse (slowdown or regression)."""
    return any(i.get("flag") in ("slowdown", "regression") for i in report.get("items", []))


# ---------------------------------------------------------------------------------- rendering

_FLAG_STYLE = {
    "slowdown": "bold red",
    "regression": "bold red",
    "speedup": "bold green",
    "improvement": "bold green",
    "unchanged": "dim",
}


def _fmt(metric: str, value: Any) -> str:
    if value is None:
        return "-"
    if metric == "peak_memory_bytes":
        return f"{value / 2**20:.1f} MiB"
    if metric.endswith("_s"):
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    return f"{value:.4g}"


def render(report: Mapping[str, Any], console: Any = None, *, show_all: bool = False) -> None:
    """Print the report as a rich table (flagged items; every item with ``show_all``)."""
    console = console or Console(highlight=False)
    summary = report.get("summary", {})
    base = report.get("previous_sweep_id")
    if base is None:
        console.print(f"nightly report (sweep {report.get('sweep_id')}): {summary.get('note', 'no baseline')}")
        return
    console.print(
        f"nightly report: sweep {report.get('sweep_id')} vs previous nightly {base}: "
        f"{summary.get('flagged', 0)} flagged of {summary.get('compared', 0)} compared "
        f"({summary.get('slowdowns', 0)} slowdowns, {summary.get('speedups', 0)} speedups, "
        f"{summary.get('regressions', 0)} regressions, {summary.get('improvements', 0)} improvements)"
    )
    for field_name, (old, new) in (report.get("changes") or {}).items():
        console.print(Text(f"  changed since the previous nightly: {field_name}: {old} -> {new}"))
    items = [i for i in report.get("items", []) if show_all or i.get("flag") != "unchanged"]
    if items:
        table = Table(show_lines=False)
        for col in ("flag", "suite", "optimizer", "backend", "metric", "previous", "current", "change", "p", "detail"):
            table.add_column(col, overflow="fold")
        for i in items:
            ratio = i.get("ratio")
            change = f"{100 * (ratio - 1):+.1f}%" if ratio is not None else "-"
            p = f"{i['p_value']:.3g}" if i.get("p_value") is not None else "-"
            table.add_row(
                Text(i["flag"], style=_FLAG_STYLE.get(i["flag"], "")),
                Text(str(i["suite"])),
                Text(str(i["optimizer"]) + (f" {i['config']}" if i.get("config") else "")),
                Text(str(i["backend"])),
                Text(str(i["metric"])),
                _fmt(i["metric"], i.get("previous")),
                _fmt(i["metric"], i.get("current")),
                change,
                p,
                Text(str(i.get("detail", ""))),
            )
        console.print(table)
    for key in ("new_groups", "missing_groups"):
        if summary.get(key):
            console.print(Text(f"  {key.replace('_', ' ')}: {', '.join(summary[key])}"))


def rebuild_site(store: Store, out: str) -> str:
    """Rebuild the static site into ``out`` as ``ngbench site build`` does (with the registry's
    method cards and current adapter versions); returns a one-line note."""
    result = build_site(store.url, Path(out), None)
    return f"site rebuilt in {out} ({result.pages} pages)"
