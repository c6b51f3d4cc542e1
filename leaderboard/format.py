"""Number and name formatting for the site: plain strings, escaped later by the templates.

Every function takes whatever the database holds (``None``, NaN, ``inf``, numpy scalars) and
returns text; none of them produces markup.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

DASH = "—"
_SLUG_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def finite(value: Any) -> float | None:
    """``value`` as a finite float, else ``None``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def slug(name: Any) -> str:
    """A file-name-safe, collision-free form of a database string.

    Names that are already safe (``tiny-ce``, ``adamw``) stay as they are; anything else (path
    separators, markup, unicode) is reduced to ``[a-z0-9._-]`` and suffixed with a hash of the
    original, so two different names never share a page.
    """
    text = str(name)
    base = _SLUG_UNSAFE.sub("-", text.lower()).strip("-.")[:60] or "x"
    if base == text and not base.startswith("."):
        return base
    return f"{base}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def seconds(value: Any) -> str:
    """``1.23 ms``, ``4.5 s``, ``3.2 min``; ``—`` for missing values, ``∞`` for misses."""
    f = _float(value)
    if f is None:
        return DASH
    if math.isinf(f):
        return "∞"
    a = abs(f)
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{f * 1e6:.3g} µs"
    if a < 1:
        return f"{f * 1e3:.3g} ms"
    if a < 120:
        return f"{f:.3g} s"
    if a < 7200:
        return f"{f / 60:.3g} min"
    return f"{f / 3600:.3g} h"


def bytes_(value: Any) -> str:
    f = finite(value)
    if f is None:
        return DASH
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(f) >= size:
            return f"{f / size:.3g} {unit}"
    return f"{f:.0f} B"


def ratio(value: Any) -> str:
    f = _float(value)
    if f is None:
        return DASH
    if math.isinf(f):
        return "∞"
    return f"{f:.2f}×"


def number(value: Any, digits: int = 4) -> str:
    f = _float(value)
    if f is None:
        return DASH
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f != 0 and (abs(f) >= 1e5 or abs(f) < 1e-3):
        return f"{f:.{digits - 1}e}"
    return f"{f:.{digits}g}"


def integer(value: Any) -> str:
    f = _float(value)
    if f is None:
        return DASH
    if math.isinf(f):
        return "∞"
    return f"{round(f):,}"


def value(v: Any) -> str:
    """Any JSON value (a hyperparameter, a spec field) as one line of text."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else ("∞" if v > 0 else "-∞" if v < 0 else "NaN")
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


#: Unicode bidirectional controls (embeddings, overrides, isolates, marks). In user text (a tag,
#: a name) they reorder what follows on the page, so ``abc\u202etxt.exe`` reads as ``abcexe.txt``;
#: :func:`neutral` shows them as ``[U+202E]`` instead. Letters of right-to-left scripts are untouched.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BIDI = re.compile("[" + "".join(sorted(BIDI_CONTROLS)) + "]")


def neutral(v: str) -> str:
    """``v`` with every bidirectional control written out as ``[U+XXXX]`` (see :data:`BIDI_CONTROLS`)."""
    return _BIDI.sub(lambda m: f"[U+{ord(m.group(0)):04X}]", v)


def text(v: Any, missing: str = DASH) -> str:
    """A stored string for display; ``None``, NaN, NaT and empty strings become ``missing``."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ == "NaTType":
        return missing
    return str(v) or missing


def sort_key(v: Any) -> str:
    """The ``data-sort`` attribute of a numeric cell: sortable text, missing values empty."""
    f = _float(v)
    if f is None:
        return ""
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return repr(f)


def _float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def passes(counts: Any) -> str:
    """Per-step pass counts ``{"forward": 1, "backward": 1, "jvp": 0}`` as ``fwd 1 · bwd 1``."""
    if not isinstance(counts, dict) or not counts:
        return DASH
    short = {"forward": "fwd", "backward": "bwd", "jvp": "jvp", "vjp": "vjp"}
    parts = []
    for k, v in counts.items():
        f = finite(v)
        if f is None or f == 0:
            continue
        parts.append(f"{short.get(str(k), str(k))} {f:.3g}")
    return " · ".join(parts) or "0"
