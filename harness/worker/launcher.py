"""The warm zygote (``python -m harness.worker serve``) that forks the lanes' workers, as the parent
sees it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.worker.processes import describe_exit, kill_group
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


class LauncherDied(LaneError):
    """The launcher died while a request was on its way or in flight: the request did not fail,
    it never got a fair chance (its child was killed with the launcher); run it again."""


class _Child:
    """A forked worker as seen by the parent: its pid once started, its status once reaped."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.status: int | None = None
        self.lost: str | None = None  # why the launcher cannot report it (it died)
        self.started = threading.Event()
        self.exited = threading.Event()


class _Generation:
    """One launcher process and the children it forked (a restart begins a new generation)."""

    def __init__(self, proc: subprocess.Popen[bytes], number: int) -> None:
        self.proc = proc
        self.number = number
        self.children: dict[int, _Child] = {}
        self.dead = False


class Launcher:
    """A warm zygote (``python -m harness.worker serve``) shared by the lanes of one executor.

    It imports torch, the suites and the run loop once; every request forks a fresh child, so
    N lanes pay the import cost once, not N times. Per-lane settings (``CUDA_VISIBLE_DEVICES``,
    thread counts) travel with each request and are applied in the child before anything
    touches the device. A reader thread routes the launcher's replies to the waiting lanes.

    **Death.** The reader sees the end of the launcher's output the moment it dies (``kill -9``,
    the OOM killer): it marks the generation dead, kills the process group of every child still
    listed (they die with the launcher anyway, by their parent-death signal), wakes their lanes
    with :attr:`_Child.lost` set and sets :attr:`died`. Lanes raise :class:`LauncherDied` for
    such runs; whoever supervises the launcher calls :meth:`start` again (a new generation) and
    the lanes run them again. Nothing waits for a timeout.

    :meth:`start` must be called from a thread that outlives the launcher (the main thread, or
    a supervisor thread): Linux delivers the parent-death signal when the *thread* that started
    it ends.
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
            fd, log = tempfile.mkstemp(prefix=f"ngbench-launcher-{os.getpid()}-", suffix=".log")
            os.close(fd)
        self.log = Path(log)
        self._gen: _Generation | None = None
        self._lock = threading.Lock()  # guards _gen, its children and writes to its stdin
        self._next_id = 0
        self._readers: list[threading.Thread] = []
        #: Set when a launcher process died (cleared by :meth:`start`).
        self.died = threading.Event()
        #: Launcher processes started so far (1 + restarts).
        self.starts = 0

    @property
    def alive(self) -> bool:
        gen = self._gen
        return gen is not None and not gen.dead and gen.proc.poll() is None

    @property
    def pid(self) -> int | None:
        gen = self._gen
        return gen.proc.pid if gen is not None else None

    def start(self) -> None:
        """Start the launcher process unless one is running (a restart after a death)."""
        with self._lock:
            if self.alive:
                self.died.clear()  # a stale notice from a generation already replaced
                return
            with open(self.log, "ab") as log:
                proc = subprocess.Popen(
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
            self.starts += 1
            gen = _Generation(proc, self.starts)
            self._gen = gen
            self.died.clear()
        reader = threading.Thread(target=self._read, args=(gen,), name="ngbench-launcher", daemon=True)
        reader.start()
        self._readers = [r for r in self._readers if r.is_alive()] + [reader]

    def _read(self, gen: _Generation) -> None:
        assert gen.proc.stdout is not None
        for raw in gen.proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            with self._lock:
                child = gen.children.get(msg.get("id"))
                if child is not None and msg.get("event") == "exited":
                    gen.children.pop(msg.get("id"), None)
            if child is None:
                continue
            if msg.get("event") == "started":
                child.pid = int(msg["pid"])
                child.started.set()
            elif msg.get("event") == "exited":
                child.status = int(msg["status"])
                child.started.set()
                child.exited.set()
        # End of output: the launcher is gone; nobody will report the children still listed.
        with self._lock:
            gen.dead = True
            orphans = list(gen.children.values())
            gen.children.clear()
        with contextlib.suppress(Exception):
            gen.proc.wait(timeout=5)
        tail = log_tail(self.log) or "no message"
        why = f"the worker launcher (pid {gen.proc.pid}) died ({_exit_text(gen.proc)}): {tail}"
        for child in orphans:
            if child.pid is not None:  # they die by their parent-death signal; make sure of it
                kill_group(child.pid, signal.SIGKILL)
            child.lost = why
            child.started.set()
            child.exited.set()
        self.died.set()

    def spawn(self, request: dict[str, Any], start_timeout: float = 600.0) -> _Child:
        """Fork a child for ``request``; returns once it started (raises :class:`LauncherDied`
        when there is no live launcher, :class:`LaneError` when it does not answer)."""
        child = _Child()
        with self._lock:
            gen = self._gen
            if gen is None or gen.dead or gen.proc.poll() is not None:
                raise LauncherDied(f"the worker launcher is not running: {log_tail(self.log) or 'no message'}")
            self._next_id += 1
            ident = self._next_id
            gen.children[ident] = child
            assert gen.proc.stdin is not None
            try:
                gen.proc.stdin.write((json.dumps(dict(request, id=ident)) + "\n").encode())
                gen.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                gen.children.pop(ident, None)
                raise LauncherDied(f"the worker launcher is gone: {log_tail(self.log) or 'no message'}") from None
        # The first request waits for the launcher's imports (seconds; minutes on a busy node).
        if not child.started.wait(start_timeout):
            raise LaneError(f"the worker launcher did not answer within {start_timeout:g} s")
        if child.lost is not None or child.pid is None:
            raise LauncherDied(child.lost or "the worker launcher died")
        return child

    def kill_children(self) -> None:
        """SIGKILL the process group of every child the live launcher runs (a hurried stop)."""
        with self._lock:
            gen = self._gen
            pids = [c.pid for c in gen.children.values() if c.pid is not None] if gen is not None else []
        for pid in pids:
            kill_group(pid, signal.SIGKILL)

    def close(self, wait_s: float = 10.0, hurry: threading.Event | None = None) -> None:
        """End the launcher: closing its input makes it kill its children and exit (SIGKILL
        after ``wait_s``, or as soon as ``hurry`` is set)."""
        with self._lock:
            gen, self._gen = self._gen, None
        if gen is not None:
            with contextlib.suppress(Exception):
                assert gen.proc.stdin is not None
                gen.proc.stdin.close()
            deadline = time.monotonic() + wait_s
            while gen.proc.poll() is None and time.monotonic() < deadline and not (hurry and hurry.is_set()):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    gen.proc.wait(timeout=0.05)
            if gen.proc.poll() is None:
                gen.proc.kill()
                gen.proc.wait()
            for reader in self._readers:
                reader.join(timeout=min(5.0, wait_s))
            if gen.proc.stdout is not None:
                with contextlib.suppress(Exception):
                    gen.proc.stdout.close()
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log.unlink()


def _exit_text(proc: subprocess.Popen[bytes]) -> str:
    code = proc.poll()
    if code is None:
        return "still running, output closed"
    return describe_exit(-code if code < 0 else code << 8)
