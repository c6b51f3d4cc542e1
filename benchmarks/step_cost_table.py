"""The step-cost table's rows (:class:`Cost`) and what is made of them: the printed tables, the
``--json`` document ``ngbench nightly`` reads, and the rows ``--store`` appends to the database
(``db.step_costs``). Measured by ``benchmarks.step_cost``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import pass_costs

__all__ = [
    "ALGEBRA_FIELDS",
    "JSON_FORMAT",
    "Cost",
    "format_pass_costs",
    "format_table",
    "machine_description",
    "store_table",
    "table_json",
    "write_json",
]


@dataclass
class Cost:
    backend: str
    problem: str
    adapter: str
    params: int
    median_s: float
    p10_s: float
    p90_s: float
    compile_s: float
    ratio_to_sgd: float
    passes: dict[str, float]
    status: str = "ok"
    #: What the counted passes cost on their own (``benchmarks.pass_costs.floor``), and
    #: ``median_s / floor_s``.
    floor_s: float = float("nan")
    efficiency: float = float("nan")
    #: The method's dense linear algebra per step (``benchmarks.method_algebra``; NaN for a
    #: method without a probe) and ``median_s / (floor_s + algebra_s)``.
    algebra_s: float = float("nan")
    efficiency_algebra: float = float("nan")
    #: The same algebra timed after a pass, as a step runs it (``method_algebra.AfterPass``),
    #: and ``median_s / (floor_s + algebra_after_pass_s)``.
    algebra_after_pass_s: float = float("nan")
    efficiency_after_pass: float = float("nan")


def format_table(costs: list[Cost]) -> str:
    lines = [
        "| backend | problem | adapter | params | median step | p10–p90 | ratio to SGD | floor | efficiency "
        "| algebra: alone / after a pass | step / (floor + algebra): alone / after a pass | compile "
        "| passes (f/b/jvp/vjp/ps) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in costs:
        if c.status != "ok":
            lines.append(
                f"| {c.backend} | {c.problem} | {c.adapter} | {c.params} | failed: {c.status} | | | | | | | | |"
            )
            continue
        p = c.passes
        passes = "/".join(f"{p.get(k, 0):.2g}" for k in pass_costs.PASS_KINDS)
        lines.append(
            f"| {c.backend} | {c.problem} | {c.adapter} | {c.params} | {c.median_s * 1e3:.3f} ms | "
            f"{c.p10_s * 1e3:.2f}–{c.p90_s * 1e3:.2f} ms | {c.ratio_to_sgd:.2f} | {c.floor_s * 1e3:.3f} ms | "
            f"{c.efficiency:.2f} | {_pair(c.algebra_s * 1e3, c.algebra_after_pass_s * 1e3, ' ms')} | "
            f"{_pair(c.efficiency_algebra, c.efficiency_after_pass, '')} | "
            f"{c.compile_s:.2f} s | {passes} |"
        )
    return "\n".join(lines)


def _pair(alone: float, after: float, unit: str) -> str:
    """``alone / after`` (3 decimals with a unit, 2 for a ratio); empty where not measured."""
    if np.isnan(alone):
        return ""
    digits = 3 if unit else 2
    return f"{alone:.{digits}f}{unit}" if np.isnan(after) else f"{alone:.{digits}f} / {after:.{digits}f}{unit}"


def format_pass_costs(tables: dict[tuple[str, str], dict[str, float]]) -> str:
    """The per-pass-kind costs behind the floors, one row per (backend, problem)."""
    kinds = pass_costs.PASS_KINDS
    lines = ["| backend | problem | " + " | ".join(kinds) + " |", "|---|---|" + "---:|" * len(kinds)]
    for (backend, problem), costs in tables.items():
        cells = " | ".join(f"{costs[k] * 1e3:.3f} ms" if k in costs else "" for k in kinds)
        lines.append(f"| {backend} | {problem} | {cells} |")
    return "\n".join(lines)


#: Version of the ``--json`` document (:func:`table_json`).
JSON_FORMAT = "ngbench-step-cost/1"


def _json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    return value


def table_json(costs: list[Cost], tables: dict[tuple[str, str], dict[str, float]], settings: dict[str, Any]) -> str:
    """The ``--json`` document: ``format``, the measurement's ``settings`` (backends, problems,
    adapters, rounds, warmup, threads, block), ``rows`` as ``db.step_costs.save_step_costs``
    takes them (the algebra figures also inside ``passes``) and the per-kind ``pass_costs``;
    missing figures are ``null``."""
    from dataclasses import asdict

    document = {
        "format": JSON_FORMAT,
        "settings": settings,
        "rows": [_stored_row(asdict(c)) for c in costs],
        "pass_costs": [{"backend": b, "problem": p, "costs": costs} for (b, p), costs in tables.items()],
    }
    return json.dumps(_json_ready(document), indent=1, allow_nan=False) + "\n"


def write_json(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a table)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)


def machine_description(backends: list[str], threads: int | None) -> str:
    """Where a table was measured, in words: host, CPU, cores, threads and framework versions."""
    from harness import environment

    record = environment.fingerprint(backends[0], "cpu") if backends else {}
    versions = ", ".join(f"{b} {record.get(b)}" for b in backends if record.get(b))
    return (
        f"{record.get('hostname')}: {record.get('cpu')} ({record.get('cpu_count')} cores), "
        f"{threads or 'default'} thread(s); {versions}"
    )


#: The figures of a :class:`Cost` stored inside its ``passes`` JSON.
ALGEBRA_FIELDS = ("algebra_s", "efficiency_algebra", "algebra_after_pass_s", "efficiency_after_pass")


def _stored_row(row: dict[str, Any]) -> dict[str, Any]:
    """A :class:`Cost` as ``db.step_costs`` stores it: the algebra figures ride in the JSON
    ``passes`` field (:data:`ALGEBRA_FIELDS`) where the method has a probe."""
    extra = {k: row[k] for k in ALGEBRA_FIELDS if not np.isnan(row.get(k, float("nan")))}
    return {**row, "passes": {**row["passes"], **extra}}


def store_table(
    db: str | None, costs: list[Cost], backends: list[str], threads: int | None, rounds: int, store: Any = None
) -> int:
    """Append ``costs`` to the database ``db`` (``db.step_costs``) with the machine, threads,
    commit and time of the measurement; returns the rows written."""
    from dataclasses import asdict

    from db.step_costs import save_step_costs
    from db.store import open_store
    from harness import environment

    commit, dirty = environment.git_state()
    target = store or open_store(db, writable=True)
    try:
        return save_step_costs(
            target,
            [_stored_row(asdict(c)) for c in costs],
            machine=machine_description(backends, threads),
            threads=threads,
            git_commit=commit,
            git_dirty=dirty,
            rounds=rounds,
        )
    finally:
        if store is None:
            target.dispose()
