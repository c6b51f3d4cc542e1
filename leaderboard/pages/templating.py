"""The Jinja environment the pages render with: autoescaping, strict undefined, the filters.

Every value from the database reaches a page through a template that escapes it
(``select_autoescape``, also for string templates) and writes out Unicode bidirectional
controls (``finalize``: :func:`neutral_output`); nothing from the database is marked safe.
Formatting lives in :mod:`leaderboard.format`; the filters here only name it for the templates.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from db.engine import masked
from db.statuses import FAILED_STATUSES
from leaderboard import format as fmt
from leaderboard.views import STATUS_WORDS

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def environment() -> Environment:
    """The template environment: every page and the per-environment fragment of run pages."""
    env = Environment(
        # A path, not PackageLoader: it works for any install (editable finders included).
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "xml"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=neutral_output,
    )
    env.filters.update(
        seconds=fmt.seconds,
        bytes=fmt.bytes_,
        ratio=fmt.ratio,
        num=fmt.number,
        integer=fmt.integer,
        value=fmt.value,
        sortkey=fmt.sort_key,
        passes=fmt.passes,
        text=fmt.text,
        slug=fmt.slug,
        score=lambda v: fmt.DASH if fmt.finite(v) is None else f"{float(v):.3f}",
        date=lambda v: date_text(v),
        short=lambda v, n=10: fmt.DASH if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)[:n],
    )
    env.globals.update(status_words=STATUS_WORDS, failed_statuses=FAILED_STATUSES, DASH=fmt.DASH)
    return env


def neutral_output(v: Any) -> Any:
    """Every ``{{ ... }}`` output with its bidirectional controls written out (:func:`leaderboard.format.neutral`):
    a right-to-left override in a tag cannot reorder the rest of a page. Markup stays markup."""
    if isinstance(v, Markup):
        return Markup(fmt.neutral(str(v)))
    if isinstance(v, str):
        return fmt.neutral(v)
    return v


def date_text(v: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM UTC`` (naive values are taken as UTC); a dash if missing."""
    if v is None or v is pd.NaT or (isinstance(v, float) and math.isnan(v)):
        return fmt.DASH
    if isinstance(v, datetime):  # pd.Timestamp included
        v = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    try:
        ts = pd.Timestamp(v)
    except (TypeError, ValueError):
        return str(v)
    if pd.isna(ts):
        return fmt.DASH
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return ts.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")


def db_label(url: str) -> str:
    """Where the data came from, without host names or credentials."""
    text = masked(url)
    scheme, _, rest = text.partition("://")
    name = rest.rsplit("/", 1)[-1] if rest else ""
    return f"{scheme.split('+')[0]} database {name}".strip()


def present(v: Any) -> bool:
    """Not ``None`` and not NaN (a missing id in a runs frame)."""
    return v is not None and not (isinstance(v, float) and math.isnan(v))
