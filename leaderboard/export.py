"""CSV and JSON exports of the site's tables, written next to the pages.

Conventions: JSON is a list of records; missing values are ``null``; an infinite time or step
count (a missed target) is the string ``"inf"`` in JSON and ``inf`` in CSV; times are ISO 8601
in UTC; nested values (hyperparameters, status counts, pass counts) are JSON objects in JSON
and JSON text in CSV. Text cells that a spreadsheet would run as a formula (``=``, ``+``,
``-``, ``@``, tab, carriage return first) get a leading apostrophe in CSV (OWASP, "CSV
injection"); JSON keeps the text as stored.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_FORMULA_START = r"^[=+\-@\t\r]"


def _is_datetime_column(col: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(col):
        return True
    if col.dtype != object:
        return False
    sample = col.dropna()
    return len(sample) > 0 and isinstance(sample.iloc[0], datetime)


def _prepare(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Datetimes to ISO strings, ``inf`` to ``"inf"``; returns the frame and its nested columns."""
    out = {}
    nested = []
    for name in frame.columns:
        col = frame[name]
        if _is_datetime_column(col):
            ts = pd.to_datetime(col, utc=True, errors="coerce")
            iso = ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            out[name] = iso.astype(object).where(ts.notna(), None)
        elif pd.api.types.is_float_dtype(col):
            values = col.to_numpy(dtype=float)
            inf = np.isinf(values)
            if inf.any():
                obj = col.astype(object).where(col.notna(), None)
                obj[inf] = np.where(values[inf] > 0, "inf", "-inf")
                out[name] = obj
            else:
                out[name] = col
        else:
            if col.dtype == object and col.map(lambda v: isinstance(v, (dict, list, tuple))).any():
                nested.append(str(name))
                col = col.map(_plain)
            out[name] = col
    return pd.DataFrame(out, index=frame.index), nested


def _plain(v: Any) -> Any:
    """Nested values with numpy scalars and non-finite floats made JSON-safe."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return None
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf")
    return v


def write_table(frame: pd.DataFrame | None, stem: Path) -> None:
    """Write ``stem.csv`` and ``stem.json``; ``None`` or an empty frame writes empty tables."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    frame = frame if frame is not None else pd.DataFrame()
    frame = frame.reset_index(drop=True)
    prepared, nested = _prepare(frame)
    stem.with_suffix(".json").write_text(
        prepared.to_json(orient="records", force_ascii=False, default_handler=str) if len(prepared) else "[]",
        encoding="utf-8",
    )
    csv_frame = prepared.copy()
    for name in csv_frame.columns:
        col = csv_frame[name]
        if name in nested:
            csv_frame[name] = col.map(lambda v: "" if v is None else json.dumps(v, sort_keys=True))
            col = csv_frame[name]
        if col.dtype == object or pd.api.types.is_string_dtype(col):
            text = col.astype(object)
            is_text = text.map(lambda v: isinstance(v, str))
            risky = is_text & text.where(is_text, "").astype(str).str.match(_FORMULA_START)
            if risky.any():
                numeric = pd.to_numeric(text.where(risky), errors="coerce").notna()
                fix = risky & ~numeric & ~text.isin(["-inf"])
                csv_frame[name] = text.where(~fix, "'" + text.where(fix, "").astype(str))
    csv_frame.to_csv(stem.with_suffix(".csv"), index=False, lineterminator="\n")
