"""Small inline SVG charts built from strings: run-page curves and history sparklines.

Ten thousand run pages cannot each afford a matplotlib figure (about 0.1 s apiece), so these
charts are written directly: one ``<polyline>`` per series, axis extremes as text, no styles
(the site's CSS colours them through classes, which keeps them inside the page's strict
Content-Security-Policy). Every text that reaches the output goes through
:func:`markupsafe.escape`; coordinates are numbers formatted here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from markupsafe import Markup, escape

from leaderboard import format as fmt

#: Points drawn per series at most (evenly thinned above this).
MAX_POINTS = 160


@dataclass(frozen=True)
class Series:
    x: np.ndarray
    y: np.ndarray
    #: CSS class of the line (``s0`` ... ``s7``, ``batch``, ``target``).
    css: str
    label: str


def _thin(x: np.ndarray, y: np.ndarray, limit: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= limit:
        return x, y
    idx = np.unique(np.linspace(0, x.size - 1, limit).round().astype(int))
    return x[idx], y[idx]


def _points(px: np.ndarray, py: np.ndarray) -> str:
    """``"x,y x,y ..."`` with one C-level format call (the hot loop of 10,000 run pages)."""
    flat = np.empty(2 * px.size)
    flat[0::2], flat[1::2] = px, py
    return (" ".join(["%.1f,%.1f"] * px.size)) % tuple(flat.tolist())


def _segments(px: np.ndarray, py: np.ndarray, ok: np.ndarray) -> list[str]:
    """``points`` attributes of the runs of consecutive drawable points."""
    if ok.all():
        return [_points(px, py)] if px.size else []
    if not ok.any():
        return []
    out = []
    breaks = np.flatnonzero(np.diff(ok.astype(np.int8)) != 0) + 1
    for chunk in np.split(np.arange(ok.size), breaks):
        if chunk.size and ok[chunk[0]]:
            out.append(_points(px[chunk], py[chunk]))
    return out


def chart(
    series: Sequence[Series],
    *,
    title: str,
    xlabel: str,
    width: int = 360,
    height: int = 170,
    logy: bool = False,
    hline: float | None = None,
    x_notes: tuple[str, str] | None = None,
) -> Markup:
    """A line chart with min/max tick labels on both axes; empty data gives a "no data" box.

    ``x_notes`` are appended to the two x tick labels (the run pages put the steady-state time
    at the first and last step there, so one chart reads against steps and time).
    """
    left, right, top, bottom = 54, 8, 18, 30
    pw, ph = width - left - right, height - top - bottom
    xs, ys = [], []
    prepared = []
    for s in series:
        x = np.asarray(s.x, dtype=float)
        y = np.asarray(s.y, dtype=float)
        x, y = _thin(x, y)
        ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if logy else True)
        prepared.append((s, x, y, ok))
        xs.append(x[ok])
        ys.append(y[ok])
    allx = np.concatenate(xs) if xs else np.zeros(0)
    ally = np.concatenate(ys) if ys else np.zeros(0)
    if hline is not None and math.isfinite(hline) and (hline > 0 or not logy):
        ally = np.append(ally, hline)
    head = (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text class="ct" x="{left}" y="12">{escape(title)}</text>'
    )
    if allx.size == 0:
        return Markup(
            head + f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>'
            f'<text class="tick" x="{left + pw / 2:.0f}" y="{top + ph / 2:.0f}" text-anchor="middle">'
            "no data</text></svg>"
        )
    x0, x1 = float(allx.min()), float(allx.max())
    fy = np.log10 if logy else (lambda v: v)
    ty = fy(ally)
    y0, y1 = float(ty.min()), float(ty.max())
    if x1 == x0:
        x1 = x0 + 1.0
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.04 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(v: np.ndarray) -> np.ndarray:
        return left + (v - x0) / (x1 - x0) * pw

    def py(v: np.ndarray) -> np.ndarray:
        return top + (1.0 - (fy(v) - y0) / (y1 - y0)) * ph

    parts = [head, f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    if hline is not None and math.isfinite(hline) and (hline > 0 or not logy):
        yy = float(py(np.array([hline]))[0])
        parts.append(f'<line class="hline" x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
    for s, x, y, ok in prepared:
        with np.errstate(divide="ignore", invalid="ignore"):
            pxs, pys = px(x), py(np.where(ok, y, 1.0))
        for pts in _segments(pxs, pys, ok):
            parts.append(f'<polyline class="{escape(s.css)}" points="{pts}"/>')
    note0, note1 = (f" ({x_notes[0]})", f" ({x_notes[1]})") if x_notes else ("", "")
    ylo = 10**y0 if logy else y0
    yhi = 10**y1 if logy else y1
    parts.append(
        f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">{escape(fmt.number(yhi, 3))}</text>'
        f'<text class="tick" x="{left - 4}" y="{top + ph}" text-anchor="end">{escape(fmt.number(ylo, 3))}</text>'
        f'<text class="tick" x="{left}" y="{top + ph + 12}">{escape(fmt.number(x0, 3) + note0)}</text>'
        f'<text class="tick" x="{left + pw}" y="{top + ph + 12}" text-anchor="end">'
        f"{escape(fmt.number(x1, 3) + note1)}</text>"
        f'<text class="tick" x="{left + pw / 2:.0f}" y="{height - 4}" text-anchor="middle">{escape(xlabel)}</text>'
    )
    legend_x = left + 14 + 6 * len(title)  # legend on the title line, right of the title
    for s, *_ in prepared:
        if not s.label:
            continue
        parts.append(
            f'<line class="{escape(s.css)}" x1="{legend_x}" x2="{legend_x + 12}" y1="8" y2="8"/>'
            f'<text class="tick" x="{legend_x + 15}" y="11">{escape(s.label)}</text>'
        )
        legend_x += 22 + 6 * len(s.label)
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(
    values: Sequence[float | None], flags: Sequence[bool] = (), *, width: int = 96, height: int = 22
) -> Markup:
    """A trend line over nightly values; flagged points (regressions) drawn as dots."""
    y = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    ok = np.isfinite(y)
    head = f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-hidden="true">'
    if not ok.any():
        return Markup(head + "</svg>")
    n = y.size
    lo, hi = float(y[ok].min()), float(y[ok].max())
    if hi == lo:
        lo, hi = lo - 1.0, hi + 1.0
    px = 2 + np.arange(n) * ((width - 4) / max(n - 1, 1))
    py = 2 + (1 - (np.where(ok, y, lo) - lo) / (hi - lo)) * (height - 4)
    parts = [head]
    for pts in _segments(px, py, ok):
        if " " not in pts:  # a single point: draw a dot instead of an empty line
            continue
        parts.append(f'<polyline class="sl" points="{pts}"/>')
    for i in range(n):
        if ok[i] and ((i < len(flags) and flags[i]) or (i == n - 1)):
            css = "flag" if i < len(flags) and flags[i] else "last"
            parts.append(f'<circle class="{css}" cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="2.2"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
