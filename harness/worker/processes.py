"""Process plumbing shared by both sides: the parent-death signal, exit descriptions, killing a
process group.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

#: Exit code of a child that found its launcher gone before it started.
ORPHAN_EXIT = 70


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def describe_exit(status: int) -> str:
    """``exit code 3`` or ``killed by signal SIGKILL (9)`` from a ``waitpid`` status."""
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by signal {name} ({-code})"


def kill_group(pid: int, sig: int) -> None:
    for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            target()
            return
