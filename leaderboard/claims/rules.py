"""Decision rules: stored results in, a verdict per cell and overall out.

Every rule is a pure function of an evidence frame (:mod:`leaderboard.claims.evidence` builds
it from the database) and returns :class:`CellVerdict` rows, which :func:`combine` turns into
the claim's verdict. The rules use the board's own uncertainty (:mod:`leaderboard.uncertainty`):
a comparison of speed is a one-sided permutation test over seeds (misses count as ``+inf``),
significant only with at least three seeds a side; a cost ratio carries a bootstrap interval.

Run-experiment frames have one row per run: ``arm``, ``suite``, ``backend``, ``seed``,
``steps_to_target``, ``time_to_target_s`` (NaN for a miss) and ``step_time_median_s``.
Approximation frames have one row per (method, batch, checkpoint): ``suite``, ``method``,
``damping``, ``checkpoint``, ``gamma`` and ``gamma_ratio_sgd`` (smaller is better).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leaderboard.claims.spec import Verdict
from leaderboard.uncertainty import ALPHA, RNG_SEED, permutation_test


@dataclass(frozen=True)
class CellVerdict:
    """The verdict on one suite (and backend, and comparison) with its evidence in words."""

    cell: str
    verdict: Verdict
    evidence: str
    figures: dict[str, Any]


def combine(cells: Sequence[CellVerdict]) -> Verdict:
    """The claim's verdict from its cells, every cell required.

    ``not measured`` if any cell is; ``holds`` if at least half the cells hold and none
    contradicts; ``does not hold`` if at least half contradict and none holds; otherwise
    ``inconclusive``.
    """
    if not cells or any(c.verdict is Verdict.NOT_MEASURED for c in cells):
        return Verdict.NOT_MEASURED
    holds = sum(c.verdict is Verdict.HOLDS for c in cells)
    fails = sum(c.verdict is Verdict.DOES_NOT_HOLD for c in cells)
    half = math.ceil(len(cells) / 2)
    if holds >= half and fails == 0:
        return Verdict.HOLDS
    if fails >= half and holds == 0:
        return Verdict.DOES_NOT_HOLD
    return Verdict.INCONCLUSIVE


def _times(group: pd.DataFrame, value: str) -> list[float]:
    return [math.inf if v is None or not math.isfinite(float(v)) else float(v) for v in group[value]]


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else math.nan


def _cells(frame: pd.DataFrame, arms: Sequence[str]) -> list[tuple[str, str, dict[str, pd.DataFrame]]]:
    out = []
    keys = sorted({(str(s), str(b)) for s, b in zip(frame.get("suite", []), frame.get("backend", []), strict=True)})
    for suite, backend in keys:
        sel = frame[(frame["suite"] == suite) & (frame["backend"] == backend)]
        out.append((suite, backend, {arm: sel[sel["arm"] == arm] for arm in arms}))
    return out


def _fmt(x: float) -> str:
    return "miss" if not math.isfinite(x) else f"{x:.4g}"


def faster(frame: pd.DataFrame, *, a: str, b: Sequence[str] | str, value: str = "steps_to_target",
           alpha: float = ALPHA) -> list[CellVerdict]:  # fmt: skip
    """``a`` reaches the target faster (in ``value``) than each arm of ``b``, cell by cell.

    Holds where ``a`` is significantly faster; does not hold where the other arm is
    significantly faster; inconclusive otherwise (too few seeds, no significant difference,
    or neither reaching the target).
    """
    others = [b] if isinstance(b, str) else list(b)
    return _pairwise(frame, a, others, value, alpha, _faster_cell)


def not_slower(frame: pd.DataFrame, *, a: str, b: Sequence[str] | str, value: str = "steps_to_target",
               margin: float = 1.25, alpha: float = ALPHA) -> list[CellVerdict]:  # fmt: skip
    """``a`` is at least as good as each arm of ``b`` (non-inferiority on ``value``).

    Does not hold where the other arm is significantly faster or ``a``'s median is a miss while
    the other's is not; holds where neither, with at least three seeds a side and ``a``'s
    median within ``margin`` times the other's (or the other's a miss); inconclusive otherwise.
    """
    others = [b] if isinstance(b, str) else list(b)

    def cell(ta: list[float], tb: list[float], alpha: float) -> tuple[Verdict, dict[str, Any]]:
        ma, mb = _median(ta), _median(tb)
        b_faster = permutation_test(tb, ta)
        figures = {"median_a": ma, "median_b": mb, "p_b_faster": b_faster.p_value, "seeds": min(len(ta), len(tb))}
        if b_faster.significant(alpha) or (not math.isfinite(ma) and math.isfinite(mb)):
            return Verdict.DOES_NOT_HOLD, figures
        if not b_faster.testable or not math.isfinite(ma):
            return Verdict.INCONCLUSIVE, figures
        if not math.isfinite(mb) or ma <= margin * mb:
            return Verdict.HOLDS, figures
        return Verdict.INCONCLUSIVE, figures

    return _pairwise(frame, a, others, value, alpha, cell)


def _faster_cell(ta: list[float], tb: list[float], alpha: float) -> tuple[Verdict, dict[str, Any]]:
    a_faster, b_faster = permutation_test(ta, tb), permutation_test(tb, ta)
    figures = {
        "median_a": _median(ta),
        "median_b": _median(tb),
        "p_a_faster": a_faster.p_value,
        "p_b_faster": b_faster.p_value,
        "seeds": min(len(ta), len(tb)),
    }
    if a_faster.significant(alpha):
        return Verdict.HOLDS, figures
    if b_faster.significant(alpha):
        return Verdict.DOES_NOT_HOLD, figures
    return Verdict.INCONCLUSIVE, figures


def _pairwise(
    frame: pd.DataFrame,
    a: str,
    others: Sequence[str],
    value: str,
    alpha: float,
    decide: Callable[[list[float], list[float], float], tuple[Verdict, dict[str, Any]]],
) -> list[CellVerdict]:
    out = []
    for suite, backend, arms in _cells(frame, [a, *others]):
        for b in others:
            name = f"{suite} ({backend}): {a} vs {b}"
            if arms[a].empty or arms[b].empty:
                missing = a if arms[a].empty else b
                out.append(CellVerdict(name, Verdict.NOT_MEASURED, f"no runs of {missing}", {}))
                continue
            ta, tb = _times(arms[a], value), _times(arms[b], value)
            verdict, figures = decide(ta, tb, alpha)
            p = figures.get("p_a_faster", figures.get("p_b_faster"))
            text = (
                f"median {value} {_fmt(figures['median_a'])} vs {_fmt(figures['median_b'])} "
                f"over {figures['seeds']} seeds, p = {p:.3g}"
            )
            out.append(CellVerdict(name, verdict, text, figures))
    return out


def cost_ratio(frame: pd.DataFrame, *, a: str, b: str, low: float, high: float,
               n_resamples: int = 1000, level: float = 0.95) -> list[CellVerdict]:  # fmt: skip
    """The median step time of ``a`` over that of ``b`` lies in ``[low, high]``.

    Per cell a percentile-bootstrap interval of the ratio of medians over seeds (each arm's
    seeds resampled on its own). Holds if the interval lies inside the band, does not hold if it
    lies wholly outside, inconclusive otherwise.
    """
    rng = np.random.default_rng(RNG_SEED)
    out = []
    for suite, backend, arms in _cells(frame, [a, b]):
        name = f"{suite} ({backend}): {a} / {b} step time"
        xa = arms[a]["step_time_median_s"].dropna().to_numpy(dtype=float)
        xb = arms[b]["step_time_median_s"].dropna().to_numpy(dtype=float)
        if xa.size == 0 or xb.size == 0:
            out.append(CellVerdict(name, Verdict.NOT_MEASURED, "no timed steps", {}))
            continue
        ratio = float(np.median(xa) / np.median(xb))
        boot = np.median(xa[rng.integers(0, xa.size, (n_resamples, xa.size))], axis=1) / np.median(
            xb[rng.integers(0, xb.size, (n_resamples, xb.size))], axis=1
        )
        lo, hi = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
        lo, hi = min(lo, ratio), max(hi, ratio)
        if low <= lo and hi <= high:
            verdict = Verdict.HOLDS
        elif hi < low or lo > high:
            verdict = Verdict.DOES_NOT_HOLD
        else:
            verdict = Verdict.INCONCLUSIVE
        figures = {"ratio": ratio, "low": lo, "high": hi, "seeds": int(min(xa.size, xb.size))}
        text = f"ratio {ratio:.2f} (95% interval {lo:.2f}-{hi:.2f}) against [{low:g}, {high:g}]"
        out.append(CellVerdict(name, verdict, text, figures))
    return out


def _approx_medians(frame: pd.DataFrame) -> pd.DataFrame:
    """Median over batches per (suite, damping, checkpoint, method) of ``gamma`` and the ratio."""
    cols = ["suite", "damping", "checkpoint", "method"]
    return frame.groupby(cols, dropna=False)[["gamma", "gamma_ratio_sgd"]].median().reset_index()


def approx_ordering(frame: pd.DataFrame, *, method: str, baselines: Sequence[str], damping: float,
                    share: float = 0.8, suites: Sequence[str] = ()) -> list[CellVerdict]:  # fmt: skip
    """At one shared ``damping``, ``method``'s gamma ratio to SGD is below 1 and its gamma below
    every baseline's at a ``share`` of the checkpoints (medians over batches).

    Per suite: holds at or above ``share``, does not hold below one half, inconclusive between.
    """
    out = []
    med = _approx_medians(frame) if len(frame) else frame
    for suite in suites or sorted(set(frame.get("suite", []))):
        name = f"{suite}: {method} vs {', '.join(baselines)} at damping {damping:g}"
        rows = med[(med["suite"] == suite) & np.isclose(med["damping"].astype(float), damping)] if len(med) else med
        if rows.empty or method not in set(rows["method"]) or not set(baselines) <= set(rows["method"]):
            out.append(CellVerdict(name, Verdict.NOT_MEASURED, "no approximation rows at this damping", {}))
            continue
        ok = []
        for _, at in rows.groupby("checkpoint"):
            g = at.set_index("method")
            if method not in g.index or any(b not in g.index for b in baselines):
                continue
            ours = float(g.at[method, "gamma"])
            better = all(ours < float(g.at[b, "gamma"]) for b in baselines)
            ok.append(bool(float(g.at[method, "gamma_ratio_sgd"]) < 1.0 and better))
        frac = float(np.mean(ok)) if ok else math.nan
        if not ok:
            verdict = Verdict.NOT_MEASURED
        elif frac >= share:
            verdict = Verdict.HOLDS
        elif frac < 0.5:
            verdict = Verdict.DOES_NOT_HOLD
        else:
            verdict = Verdict.INCONCLUSIVE
        text = f"ordering holds at {sum(ok)} of {len(ok)} checkpoints (needs {share:.0%})"
        out.append(CellVerdict(name, verdict, text, {"share": frac, "checkpoints": len(ok)}))
    return out


def damping_robustness(frame: pd.DataFrame, *, method: str, baselines: Sequence[str], factor: float = 2.0,
                       suites: Sequence[str] = ()) -> list[CellVerdict]:  # fmt: skip
    """As the damping goes to its smallest value, ``method``'s gamma ratio to SGD grows by at
    most ``factor`` (median over checkpoints and batches, smallest over largest damping) while
    every baseline's grows by more.

    Per suite: holds if both; does not hold if ``method`` degrades by more than ``factor``;
    inconclusive if ``method`` holds up but a baseline does too.
    """
    out = []
    for suite in suites or sorted(set(frame.get("suite", []))):
        rows = frame[frame["suite"] == suite] if len(frame) else frame
        name = f"{suite}: {method} vs {', '.join(baselines)} as the damping shrinks"
        dampings = sorted(float(d) for d in set(rows["damping"].dropna())) if len(rows) else []
        if len(dampings) < 2 or method not in set(rows["method"]) or not set(baselines) <= set(rows["method"]):
            out.append(CellVerdict(name, Verdict.NOT_MEASURED, "needs at least two dampings of every method", {}))
            continue
        smallest, largest = dampings[0], dampings[-1]

        def growth(m: str, rows: pd.DataFrame = rows, smallest: float = smallest, largest: float = largest) -> float:
            at = rows[rows["method"] == m]
            lo = float(np.median(at[np.isclose(at["damping"], smallest)]["gamma_ratio_sgd"]))
            hi = float(np.median(at[np.isclose(at["damping"], largest)]["gamma_ratio_sgd"]))
            return lo / hi if hi > 0 else math.inf

        ours = growth(method)
        theirs = {b: growth(b) for b in baselines}
        if ours > factor:
            verdict = Verdict.DOES_NOT_HOLD
        elif all(g > factor for g in theirs.values()):
            verdict = Verdict.HOLDS
        else:
            verdict = Verdict.INCONCLUSIVE
        text = (
            f"gamma ratio grows x{ours:.3g} for {method}, "
            + ", ".join(f"x{g:.3g} for {b}" for b, g in theirs.items())
            + f" from damping {largest:g} to {smallest:g} (threshold x{factor:g})"
        )
        out.append(CellVerdict(name, verdict, text, {"growth": ours, **{f"growth_{b}": g for b, g in theirs.items()}}))
    return out


#: The rules a claim may name (``Rule.kind``).
RULES: dict[str, Callable[..., list[CellVerdict]]] = {
    "faster": faster,
    "not_slower": not_slower,
    "cost_ratio": cost_ratio,
    "approx_ordering": approx_ordering,
    "damping_robustness": damping_robustness,
}
