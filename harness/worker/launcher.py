"""The warm zygote (``python -m harness.worker serve``) that forks the lanes' workers, as the parent
sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.worker.scrubbing import worker_environ

#: Bytes of a dead worker's stderr kept in the error text.
STDERR_TAIL = 4000
# ---------------------------------------------------------------------------------- parent side


def log_tail(path: Path, limit: int = STDERR_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return ("…" if size > limit else "") + text.strip()


class LaneError(RuntimeError):
    """A launcher could not be started or died (its log tail is in the message)."""


class _Child:
    """A forked worker as seen by the parent: its pid once started, its status once reaped."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.status: int | None = None
        self.lost: str | None = None  # why the launcher cannot report it
        self.started = threading.Event()
        self.exited = threading.Event()


class Launcher:
    """A warm zygote (``python -m harness.worker serve``) shared by the lanes of one executor.

    It imports torch, the suites and the run loop once; every request forks a fresh child, so
    N lanes pay the import cost once, not N times. Per-lane settings (``CUDA_VISIBLE_DEVICES``,
    thread counts) travel with each request and are applied in the child before anything
    touches the device. A reader thread routes the launcher's replies to the waiting lanes.

    :meth:`start` must be called from a thread that outlives the launcher (the main thread):
    Linux delivers the parent-death signal when the *thread* that started it ends.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        preload: tuple[str, ...] = ("torch",),
        suites: tuple[str, ...] = (),
        cwd: str | os.PathLike[str] | None = None,
        log: str | os.PathLike[str] | None = None,
    ) -> None:
        self.env = dict(env or {})
        self.preload = preload
        self.suites = suites
        self.cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
        self._own_log = log is None
        if log is None:
            fd, log = tempfile.mkstemp(prefix="ngbench-launcher-", suffix=".log")
            os.close(fd)
        self.log = Path(log)
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_lock = threading.Lock()
        self._children: dict[int, _Child] = {}
        self._next_id = 0
        self._reader: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.worker",
                    "serve",
                    "--parent",
                    str(os.getpid()),
                    "--preload",
                    ",".join(self.preload),
                    "--suites",
                    ",".join(self.suites),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=worker_environ(self.env, self.cwd),
                cwd=self.cwd,
                close_fds=True,
            )
        self._reader = threading.Thread(target=self._read, args=(self._proc,), name="ngbench-launcher", daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            child = self._children.get(msg.get("id"))
            if child is None:
                continue
            if msg.get("event") == "started":
                child.pid = int(msg["pid"])
                child.started.set()
            elif msg.get("event") == "exited":
                child.status = int(msg["status"])
                self._children.pop(msg.get("id"), None)
                child.started.set()
                child.exited.set()
        # End of output: the launcher is gone; nobody will report the children still listed.
        why = f"launcher died: {log_tail(self.log) or 'no message'}"
        for child in list(self._children.values()):
            child.lost = why
            child.started.set()
            child.exited.set()
        self._children.clear()

    def spawn(self, request: dict[str, Any], start_timeout: float = 600.0) -> _Child:
        """Fork a child for ``request``; returns once it started (raises :class:`LaneError`)."""
        child = _Child()
        with self._write_lock:
            if not self.alive:
                raise LaneError(f"the worker launcher is not running: {log_tail(self.log) or 'no message'}")
            self._next_id += 1
            ident = self._next_id
            self._children[ident] = child
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps(dict(request, id=ident)) + "\n").encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._children.pop(ident, None)
                raise LaneError(f"the worker launcher is gone: {log_tail(self.log) or 'no message'}") from None
        # The first request waits for the launcher's imports (seconds; minutes on a busy node).
        if not child.started.wait(start_timeout) or child.pid is None:
            raise LaneError(child.lost or f"the worker launcher did not answer within {start_timeout:g} s")
        return child

    def close(self) -> None:
        """End the launcher: closing its input makes it kill its children and exit."""
        if self._proc is not None:
            with contextlib.suppress(Exception):
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log.unlink()
