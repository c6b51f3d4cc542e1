"""Input limits of the schema, the same on every database.

SQLite stores a 300-character string in a ``VARCHAR(255)`` column and a 2**40 in an
``INTEGER`` one; PostgreSQL refuses both, at the moment of the write, which is after the
training. Commands therefore check what a user can type against the columns' limits up front,
with the same result on both databases:

* text (tags, sweep names, suite and optimizer names, device strings): at most the column's
  length in characters, no control characters (PostgreSQL cannot store NUL at all);
* integers stored in 32-bit columns (seeds, trial numbers): ``0 <= n < 2**31``.

Each function returns a list of problems (empty when the value fits), so a sweep file's
problems are reported together.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from db.models import Run, Sweep

#: Length limits (characters) of the text columns a user's input ends up in.
TEXT_LIMITS: dict[str, int] = {
    "tag": int(Run.__table__.c.tag.type.length),
    "sweep name": int(Sweep.__table__.c.name.type.length),
    "suite": int(Run.__table__.c.suite.type.length),
    "optimizer": int(Run.__table__.c.optimizer.type.length),
    "backend": int(Run.__table__.c.backend.type.length),
    "device": int(Run.__table__.c.device.type.length),
}
#: Largest value of a 32-bit ``INTEGER`` column (seeds, trial numbers).
INT32_MAX = 2**31 - 1


def text_problems(what: str, value: Any) -> list[str]:
    """Why ``value`` cannot be stored as ``what`` (a key of :data:`TEXT_LIMITS`); ``[]`` if it can."""
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{what} must be a string, got {value!r}"]
    out = []
    limit = TEXT_LIMITS[what]
    if len(value) > limit:
        out.append(f"{what} is {len(value)} characters long; at most {limit} can be stored")
    controls = sorted({c for c in value if unicodedata.category(c) == "Cc"})
    if controls:
        shown = ", ".join(f"U+{ord(c):04X}" for c in controls[:3])
        out.append(f"{what} contains control characters ({shown}), which cannot be stored")
    return out


def int32_problems(what: str, value: Any) -> list[str]:
    """Why ``value`` does not fit a non-negative 32-bit column; ``[]`` if it does."""
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        return []
    if not 0 <= value <= INT32_MAX:
        return [f"{what} must be between 0 and {INT32_MAX}, got {value}"]
    return []


def run_problems(
    *,
    suite: str | None = None,
    optimizer: str | None = None,
    backend: str | None = None,
    tag: str | None = None,
    device: str | None = None,
    seed: int | None = None,
) -> list[str]:
    """Every problem of one run's user-given fields (see the module docstring)."""
    out = []
    for what, value in (("suite", suite), ("optimizer", optimizer), ("backend", backend), ("tag", tag)):
        out += text_problems(what, value)
    out += text_problems("device", device)
    out += int32_problems("seed", seed)
    return out
