"""Matplotlib figures rendered to SVG at build time (Agg, no pyplot state, no external assets).

Text stays text (``svg.fonttype = none``: the browser's own sans-serif font draws it, nothing
is fetched), mathtext is off (``$`` in an optimizer's name must not be parsed, nor crash the
build), and the SVG ids are salted deterministically so rebuilding unchanged data gives
identical files. The SVGs are shown through ``<img>``, where a browser never runs scripts, and
matplotlib escapes the text it writes.

One figure per (board, suite), per board's profile, per approximation-quality suite and
damping sweep: the number of files is bounded by the number of suites, never by the runs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

#: rcParams of every figure (typed loosely: matplotlib's stub wants literal keys).
RC: Any = {
    "svg.fonttype": "none",
    "svg.hashsalt": "ngbench",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "path.simplify": True,
}
#: Colour-blind-safe palette (Okabe & Ito, 2008) with line styles as a second cue.
PALETTE: tuple[str, ...] = (
    "#000000",
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#F0E442",
    "#999999",
)
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")


def styles(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """A fixed colour and line style per name, stable across every figure of one site."""
    combos = itertools.cycle(itertools.product(LINESTYLES, PALETTE))
    out = {}
    for name, (ls, colour) in zip(names, combos):
        out[name] = {"color": colour, "linestyle": ls}
    return out


def _label(name: str, limit: int = 28) -> str:
    # Matplotlib hides legend entries whose label starts with an underscore; long names are cut
    # so that the fixed legend margin holds them.
    text = name if len(name) <= limit else name[: limit - 1] + "…"
    return text if not text.startswith("_") else " " + text


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(RC):
        fig.savefig(path, format="svg", metadata={"Date": None, "Creator": "ngbench"})


def _figure(width: float, height: float, nrows: int = 1, ncols: int = 1) -> tuple[Figure, np.ndarray]:
    """A figure with fixed margins and a legend column on the right.

    Fixed margins instead of constrained layout or a tight bounding box: each of those lays the
    figure out again and triples the rendering time of a site with many suites.
    """
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width, height))
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax in axes.ravel():
            ax.xaxis.set_major_locator(MaxNLocator(6))
            ax.yaxis.set_major_locator(MaxNLocator(6))
        legend_in = 2.0  # inches kept for the legend
        fig.subplots_adjust(
            left=0.7 / width,
            right=1 - legend_in / width,
            bottom=0.55 / height,
            top=1 - 0.3 / height,
            wspace=0.28,
            hspace=0.35 if nrows > 1 else 0.2,
        )
    return fig, axes


def _plain_number(value: float, _pos: int | None = None) -> str:
    return f"{value:g}"


def _log_axis(ax: object, which: str = "y") -> None:
    """Log scale with plain tick labels (the default ones are mathtext, which is off here)."""
    axis = ax.yaxis if which == "y" else ax.xaxis  # type: ignore[attr-defined]
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")  # type: ignore[attr-defined]
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    axis.set_major_formatter(FuncFormatter(_plain_number))
    # Minor ticks cost a Tick object each (a large share of the drawing time), unlabelled.
    axis.set_minor_locator(NullLocator())


def _legend(fig: Figure, handles: list, labels: list) -> None:
    if handles:
        fig.legend(handles, labels, loc="upper right", frameon=False, borderaxespad=0.3)


def convergence(
    curves: pd.DataFrame,
    style: Mapping[str, Mapping[str, str]],
    *,
    val_metric: str,
    val_log: bool,
    target: float | None,
    path: Path,
) -> None:
    """Train loss and validation metric vs wall-clock and vs steps, median and spread over seeds.

    ``curves``: rows ``optimizer, name, step, time_s (median), median, lo, hi``; ``name`` is
    ``train_loss`` or ``val_metric``.
    """
    with matplotlib.rc_context(RC):
        fig, axes = _figure(9.0, 6.0, 2, 2)
        for row, (metric, log) in enumerate((("train_loss", True), (val_metric, val_log))):
            for col, xcol in enumerate(("time_s", "step")):
                ax = axes[row, col]
                sub = curves[curves["name"] == metric]
                for opt, g in sub.groupby("optimizer", sort=False):
                    g = g.sort_values("step")
                    st = dict(style.get(str(opt), {}))
                    ax.plot(g[xcol], g["median"], label=_label(str(opt)), linewidth=1.4, **st)
                    if (g["hi"] > g["lo"]).any():
                        ax.fill_between(g[xcol], g["lo"], g["hi"], color=st.get("color"), alpha=0.15, linewidth=0)
                if log and len(sub) and (sub["lo"] > 0).all():
                    _log_axis(ax)
                if row == 1 and target is not None and math.isfinite(target):
                    ax.axhline(target, color="#D55E00", linewidth=0.8, linestyle=(0, (4, 3)), label="target")
                ax.set_xlabel("time (s, steady-state steps)" if xcol == "time_s" else "step")
                ax.set_ylabel(metric)
        handles, labels = axes[0, 1].get_legend_handles_labels()
        h2, l2 = axes[1, 1].get_legend_handles_labels()
        for h, lab in zip(h2, l2):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        _legend(fig, handles, labels)
        _save(fig, path)


def profiles(
    profile_points: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    style: Mapping[str, Mapping[str, str]],
    *,
    tau_max: float,
    path: Path,
) -> None:
    """Performance profiles rho(tau) (one panel per measure: time, steps), exact step functions."""
    with matplotlib.rc_context(RC):
        fig, axes = _figure(9.0, 3.4, 1, len(profile_points))
        for ax, (measure, points) in zip(axes[0], profile_points.items()):
            for opt, (taus, rho) in points.items():
                ax.step(taus, rho, where="post", label=_label(opt), linewidth=1.4, **dict(style.get(opt, {})))
            ax.set_xlim(1.0, tau_max)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"τ (ratio of {measure}-to-target to the best)")
            ax.set_ylabel("ρ(τ): fraction of suites")
            ax.set_title(f"by {measure}")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        _legend(fig, handles, labels)
        _save(fig, path)


def approx_stages(frame: pd.DataFrame, style: Mapping[str, Mapping[str, str]], *, path: Path) -> None:
    """Median γ/γ_SGD per method vs training stage (log scale), band: quartiles over batches.

    ``frame``: rows ``method, step, median, q25, q75``.
    """
    with matplotlib.rc_context(RC):
        fig, axes = _figure(7.5, 3.6)
        ax = axes[0, 0]
        for method, g in frame.groupby("method", sort=False):
            g = g.sort_values("step")
            st = dict(style.get(str(method), {}))
            ax.plot(g["step"], g["median"], marker="o", markersize=3, label=_label(str(method)), **st)
            ax.fill_between(g["step"], g["q25"], g["q75"], color=st.get("color"), alpha=0.12, linewidth=0)
        ax.axhline(1.0, color="#555555", linewidth=0.8, linestyle=(0, (4, 3)))
        if len(frame) and (frame["q25"] > 0).all():
            _log_axis(ax)
        ax.set_xlabel("checkpoint step of the reference run")
        ax.set_ylabel("γ / γ_SGD (below 1: closer to NG)")
        handles, labels = ax.get_legend_handles_labels()
        _legend(fig, handles, labels)
        _save(fig, path)


def damping_sweep(frame: pd.DataFrame, style: Mapping[str, Mapping[str, str]], *, path: Path) -> None:
    """γ/γ_SGD vs damping per method (log-log), solid: earliest checkpoint, dashed: latest.

    ``frame``: rows ``method, damping, stage ("first"/"last"), median``.
    """
    with matplotlib.rc_context(RC):
        fig, axes = _figure(7.5, 3.6)
        ax = axes[0, 0]
        for (method, stage), g in frame.groupby(["method", "stage"], sort=False):
            g = g.sort_values("damping")
            st = dict(style.get(str(method), {}))
            st["linestyle"] = "-" if stage == "first" else "--"
            label = _label(f"{method} ({stage} checkpoint)")
            ax.plot(g["damping"], g["median"], marker="o", markersize=3, label=label, **st)
        ax.axhline(1.0, color="#555555", linewidth=0.8, linestyle=(0, (4, 3)))
        _log_axis(ax, "x")
        if len(frame) and (frame["median"] > 0).all():
            _log_axis(ax)
        ax.set_xlabel("damping λ (mean-loss convention)")
        ax.set_ylabel("median γ / γ_SGD")
        handles, labels = ax.get_legend_handles_labels()
        _legend(fig, handles, labels)
        _save(fig, path)


def ladder(
    rungs: Sequence[Mapping[str, Any]],
    style: Mapping[str, Mapping[str, str]],
    *,
    optimizers: Sequence[str],
    path: Path,
) -> None:
    """Score vs target-ladder rung per optimizer (one panel per measure: time, steps).

    ``rungs``: in rung order, each ``{"rung": label, "fraction": f, "scores": {optimizer:
    (score_time, score_steps)}}`` (:func:`leaderboard.views.confidence.board_confidence`).
    """
    with matplotlib.rc_context(RC):
        fig, axes = _figure(9.0, 3.4, 1, 2)
        fractions = [float(r["fraction"]) for r in rungs]
        labels = [str(r["rung"]) for r in rungs]
        for ax, (col, measure) in zip(axes[0], ((0, "time"), (1, "steps"))):
            for opt in optimizers:
                ys = [r["scores"][opt][col] if opt in r["scores"] else math.nan for r in rungs]
                if all(not math.isfinite(y) for y in ys):
                    continue
                ax.plot(
                    fractions,
                    ys,
                    marker="o",
                    markersize=3,
                    label=_label(opt),
                    linewidth=1.4,
                    **dict(style.get(opt, {})),
                )
            ax.set_xticks(fractions)
            ax.set_xticklabels(labels)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("rung (fraction of the way from the initial metric to the target)")
            ax.set_ylabel(f"score by {measure}")
            ax.set_title(f"by {measure}-to-rung")
        handles, labels_ = axes[0, 0].get_legend_handles_labels()
        _legend(fig, handles, labels_)
        _save(fig, path)
