"""Leftovers of killed sweeps: private folders and logs named after the process that made them.

A lane keeps its request and result files in ``ngbench-lane-<pid>-…`` and a launcher logs to
``ngbench-launcher-<pid>-….log``, both in the temporary directory; a sweep that ends (even by
Ctrl-C) removes them, a ``kill -9`` cannot. The next executor that starts removes every such
entry whose process no longer exists on this host (:func:`remove_stale`). Entries without a pid
(made by older versions) go once they are a day old.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

#: Prefixes of the temporary entries a sweep's processes make (``<prefix><pid>-…``).
TEMP_PREFIXES: tuple[str, ...] = ("ngbench-lane-", "ngbench-launcher-")
#: Age after which an entry with no pid in its name counts as left behind.
UNOWNED_AGE_S = 86400.0


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def owner_pid(name: str, prefix: str) -> int | None:
    """The pid in ``<prefix><pid>-…``, or ``None`` for a name without one."""
    head, sep, _ = name[len(prefix) :].partition("-")
    return int(head) if sep and head.isdigit() else None


def remove_stale(
    directory: str | os.PathLike[str] | None = None, prefixes: Iterable[str] = TEMP_PREFIXES
) -> list[Path]:
    """Remove the entries of ``directory`` (default: the temporary directory) named ``<prefix>…``
    whose owner process is gone; returns what was removed."""
    root = Path(directory if directory is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        prefix = next((p for p in prefixes if path.name.startswith(p)), None)
        if prefix is None:
            continue
        pid = owner_pid(path.name, prefix)
        if pid is None:
            stale = False
            with contextlib.suppress(OSError):
                stale = now - path.lstat().st_mtime > UNOWNED_AGE_S
            if not stale:
                continue
        elif pid == os.getpid() or process_exists(pid):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed
