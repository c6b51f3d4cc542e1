"""Worker processes: every run in a fresh process, and every way a worker can fail is a result.

The parent of a sweep never runs adapter code. It owns one :class:`Lane` per slot (a GPU, or
a share of the CPU cores); a lane runs one job at a time in a **fresh process** and turns
whatever happens into a :class:`~harness.runner.RunResult`:

* the run returns → its result (any status the run loop gives: ``done`` ... ``oom``, ``error``);
* the process dies without a result (``os._exit``, a segfault, the kernel's OOM killer) →
  ``crashed``, with the exit code or signal and the tail of the worker's stderr;
* the process outlives its wall-clock limit (``timeout_s`` plus a grace period; the run loop
  itself stops at ``timeout_s`` between steps) → its whole process group is killed →
  ``timeout``;
* the parent is interrupted (Ctrl-C) → the worker gets SIGINT, then SIGKILL → ``interrupted``.

Fresh processes come from a :class:`Launcher` (a zygote, ``python -m harness.worker serve``,
one per executor, shared by its lanes) that imports torch, the suites and the run loop once
and then forks one child per run; per-lane settings (``CUDA_VISIBLE_DEVICES``, threads) travel
with each request and are applied in the child. A child is as fresh as a new interpreter (its
own CUDA context, process group and memory peak: on the CPU the peak resident set includes
the interpreter and libraries, as it would in a new interpreter) but starts in milliseconds
instead of the seconds a cold ``import torch, sklearn`` costs. The launcher never imports JAX
(JAX is not fork-safe once initialised) and never touches CUDA, so JAX runs pay their own
import and CUDA is initialised only in children. ``isolation="spawn"`` starts a new
interpreter per run instead (``python -m harness.worker run``).

Safety:

* workers never see database credentials: launchers and spawned workers get
  :func:`scrubbed_environ` (no ``NGBENCH_DB_URL``, no ``*DATABASE_URL``/``*_DB_URL``, no
  ``PG*`` credentials, no variable whose value is a URL with a password), are started with
  ``exec`` (so the parent's memory, which holds the URL, is not inherited), and receive only a
  :class:`~harness.runner.RunSpec`, which holds no URL;
* workers die with the parent: launchers and children set ``PR_SET_PDEATHSIG`` (Linux), so a
  ``kill -9`` of the sweep leaves no orphan burning a GPU; the run is redone on resume.

Results travel as JSON files in a private temporary directory (atomic rename), not pipes, so
a large metric series can never dead-lock a pipe and a half-written result is never read.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.runner import RunResult, RunSpec

#: Environment variables never passed to a worker (exact names).
SECRET_ENV_NAMES: frozenset[str] = frozenset(
    {
        "NGBENCH_DB_URL",
        "NGBENCH_TEST_PG_URL",
        "DATABASE_URL",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICEFILE",
        "PGSERVICE",
        "PGUSER",
        "PGHOST",
        "PGDATABASE",
    }
)
#: ... and names matching this pattern.
SECRET_ENV_PATTERN = re.compile(r"(DB_URL|DATABASE_URL|_DSN|PASSWORD|SECRET|TOKEN|CREDENTIAL)", re.IGNORECASE)
#: A value that is a URL with a password (``scheme://user:password@host``).
_URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)

#: Set in every worker's environment (tests find leftover workers by it).
WORKER_MARK = "NGBENCH_WORKER"
#: Bytes of a dead worker's stderr kept in the error text.
STDERR_TAIL = 4000
#: Exit code of a child that found its launcher gone before it started.
_ORPHAN_EXIT = 70


def scrubbed_environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default ``os.environ``) without database URLs or credentials."""
    source = os.environ if env is None else env
    return {
        k: v
        for k, v in source.items()
        if k not in SECRET_ENV_NAMES and not SECRET_ENV_PATTERN.search(k) and not _URL_WITH_PASSWORD.search(v)
    }


def grace_period(timeout_s: float) -> float:
    """Extra seconds past a run's ``timeout_s`` before its worker is killed (the run loop
    stops cooperatively at ``timeout_s``; the kill is for code that never returns)."""
    return min(60.0, max(2.0, 0.25 * timeout_s))


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


# ---------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    """One run to execute: its position in the sweep, spec, expected key and wall limit."""

    index: int
    spec: RunSpec
    key: str | None = None
    #: The probed environment of the target device (used for results the worker never wrote).
    environment: Mapping[str, Any] = field(default_factory=dict)

    @property
    def timeout_s(self) -> float | None:
        return self.spec.timeout_s

    @property
    def label(self) -> str:
        s = self.spec
        extra = ",".join(f"{k}={v}" for k, v in s.hparams.items())
        return f"{s.suite} {s.optimizer}{'[' + extra + ']' if extra else ''} {s.backend} seed={s.seed}"


@dataclass
class Outcome:
    """A finished job: the result and where the time went (seconds; wall clocks of this host)."""

    job: Job
    result: RunResult
    #: ``queued``/``dispatched``/``received`` (parent), ``child_start``/``exec_start``/
    #: ``exec_end``/``written`` (worker), all ``time.time()`` values.
    timing: dict[str, float] = field(default_factory=dict)
    lane: str = ""

    @property
    def run_seconds(self) -> float | None:
        t = self.timing
        return t["exec_end"] - t["exec_start"] if "exec_end" in t and "exec_start" in t else None

    @property
    def overhead_seconds(self) -> float | None:
        """Wall time from dispatch to the result in the parent, minus the run itself."""
        t, run = self.timing, self.run_seconds
        if run is None or "dispatched" not in t or "received" not in t:
            return None
        return t["received"] - t["dispatched"] - run


def failed_result(job: Job, status: str, error: str) -> RunResult:
    """A result for a run whose worker produced none (crashed, killed, interrupted)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    env = dict(job.environment)
    return RunResult(
        spec=job.spec,
        status=status,
        error=error,
        key=job.key,
        environment=env,
        device=job.spec.device,
        started_at=now,
        finished_at=now,
    )


# ---------------------------------------------------------------------------------- child side


def _write_json_atomic(path: str, payload: dict[str, Any]) -> None:
    tmp = f"{path}.part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f)
    os.replace(tmp, path)


def _set_threads(threads: int | None) -> None:
    if not threads:
        return
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["torch"].set_num_threads(int(threads))


def execute_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Do what ``request`` asks in this process and return the envelope to write.

    ``{"op": "run", "spec": RunSpec dict}`` → ``{"result": RunResult dict, "timing": ...}``;
    ``{"op": "probe", "backend", "device"}`` → ``{"environment": fingerprint}``;
    ``{"op": "describe", "items": [...]}`` → ``{"describe": [...]}`` (``harness.external``);
    ``{"op": "approx", "spec": ApproxSpec dict}`` → ``{"result": ...}`` (``harness.approx``).
    """
    timing: dict[str, float] = {"exec_start": time.time()}
    if request.get("op") == "approx":
        from harness.approx import evaluate_request

        envelope = evaluate_request(request)
        envelope["timing"] = timing
        return envelope
    if request.get("op") == "describe_all":
        from harness.external import describe_all_here

        return {"describe_all": describe_all_here(request["backends"]), "timing": timing}
    if request.get("op") == "describe":
        from harness.external import describe_here

        return {"describe": [describe_here(item) for item in request["items"]], "timing": timing}
    if request.get("op") == "probe":
        from harness.environment import fingerprint
        from harness.registry import backend_module

        backend_module(request["backend"])  # sets allocator defaults exactly as a run does
        env = fingerprint(request["backend"], request.get("device", "cpu"))
        return {"environment": env, "timing": timing}
    from harness.errors import USER_ERRORS
    from harness.runner import execute

    spec = RunSpec(**request["spec"])
    try:
        result = execute(spec)
    except USER_ERRORS as exc:  # validated up front; still a result, never a lost run
        result = RunResult(spec=spec, status="error", error=f"invalid run: {exc}")
    timing["exec_end"] = time.time()
    return {"result": result.to_dict(), "timing": timing}


def _child(request: Mapping[str, Any], launcher_pid: int, close_fds: tuple[int, ...] = ()) -> None:
    """Body of a forked child: never returns."""
    code = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own group: a timeout kills everything it started
        set_parent_death_signal()
        if os.getppid() != launcher_pid:
            os._exit(_ORPHAN_EXIT)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(err, 1)
        os.dup2(err, 2)
        os.close(err)
        os.close(devnull)
        os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        os.environ[WORKER_MARK] = "1"
        _set_threads(request.get("threads"))
        started = time.time()
        envelope = execute_request(request)
        envelope["timing"]["child_start"] = started
        envelope["timing"]["written"] = time.time()
        _write_json_atomic(request["out"], envelope)
        code = 0
    except BaseException:  # whatever happens, the parent reads the traceback from stderr
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _preload(backends: list[str], suites: list[str] | None = None) -> None:
    """Import what every run needs so forked children start warm (never JAX, never CUDA).

    Besides the run loop and the suite catalogue this loads the sweep's suite data (children
    inherit it) and the modules torch imports lazily on the first backward pass (sympy via
    ``torch.fx.experimental.symbolic_shapes``: about 1.5 s here).
    """
    import resource  # noqa: F401  (peak RSS reads)

    import harness.runner  # noqa: F401
    from harness.environment import git_state
    from suites.registry import get_suite, list_suites

    list_suites()
    git_state()
    for name in suites or []:
        with contextlib.suppress(Exception):  # a data problem is reported by the run itself
            _ = get_suite(name).data
    if "torch" in backends:
        with contextlib.suppress(ImportError):
            import torch.fx.experimental.symbolic_shapes  # noqa: F401  (lazy import of the first backward)

            from harness.registry import adapters

            adapters("torch")
    torch_module = sys.modules.get("torch")
    if torch_module is not None and torch_module.cuda.is_initialized():  # pragma: no cover - a bug in an import
        raise RuntimeError("CUDA was initialised while preloading: forked workers would share its context")


def serve(parent_pid: int, preload: list[str], suites: list[str] | None = None) -> int:
    """The launcher loop: fork one child per request line on stdin, report births and deaths.

    Requests are JSON lines with an ``id``; several children may run at once (one per lane).
    Replies are JSON lines on stdout: ``{"event": "started", "id", "pid"}`` right after the
    fork and ``{"event": "exited", "id", "pid", "status"}`` (a ``waitpid`` status) once the
    child is reaped. End of input kills the remaining children and ends the launcher.
    """
    set_parent_death_signal()
    if os.getppid() != parent_pid:
        return _ORPHAN_EXIT
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.environ[WORKER_MARK] = "1"
    _preload(preload, suites)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)  # SIGCHLD wakes the select below
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stdin_fd = sys.stdin.fileno()
    launcher_pid = os.getpid()
    children: dict[int, Any] = {}
    buffer = b""
    eof = False

    def reply(message: dict[str, Any]) -> None:
        os.write(1, (json.dumps(message) + "\n").encode())

    while not eof or children:
        watch = [wake_r] if eof else [stdin_fd, wake_r]
        ready, _, _ = select.select(watch, [], [], 1.0)
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 4096):
                    pass
        if stdin_fd in ready:
            chunk = os.read(stdin_fd, 65536)
            if not chunk:
                eof = True
                for pid in children:  # the parent is closing: nothing may outlive it
                    _kill_group(pid, signal.SIGKILL)
            buffer += chunk
            while b"\n" in buffer:
                line, _, buffer = buffer.partition(b"\n")
                if not line.strip():
                    continue
                request = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(request, launcher_pid, (wake_r, wake_w, stdin_fd))
                with contextlib.suppress(OSError):
                    os.setpgid(pid, pid)  # also from this side: no window where a kill misses the group
                children[pid] = request.get("id")
                reply({"event": "started", "id": request.get("id"), "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reply({"event": "exited", "id": children.pop(pid, None), "pid": pid, "status": status})
    return 0


def run_once(request_path: str, out_path: str, parent_pid: int | None) -> int:
    """``python -m harness.worker run``: one request in this fresh interpreter."""
    set_parent_death_signal()
    if parent_pid is not None and os.getppid() != parent_pid:
        return _ORPHAN_EXIT
    os.environ[WORKER_MARK] = "1"
    raw = sys.stdin.read() if request_path == "-" else Path(request_path).read_text(encoding="utf-8")
    request = json.loads(raw)
    if "spec" not in request and "op" not in request:
        request = {"op": "run", "spec": request}  # a bare RunSpec
    os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
    _set_threads(request.get("threads"))
    started = time.time()
    envelope = execute_request(request)
    envelope["timing"]["child_start"] = started
    envelope["timing"]["written"] = time.time()
    _write_json_atomic(out_path, envelope)
    return 0


# ---------------------------------------------------------------------------------- parent side


def _tail(path: Path, limit: int = STDERR_TAIL) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return ("…" if size > limit else "") + text.strip()


def _kill_group(pid: int, sig: int) -> None:
    for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            target()
            return


def worker_environ(extra: Mapping[str, str] | None = None, cwd: str | None = None) -> dict[str, str]:
    """The environment of launchers and spawned workers: scrubbed, marked, importable paths."""
    env = scrubbed_environ()
    env.update(extra or {})
    env[WORKER_MARK] = "1"
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([cwd or os.getcwd(), *paths]))
    return env


class LaneError(RuntimeError):
    """A launcher could not be started or died (its log tail is in the message)."""


def request_in_worker(request: dict[str, Any], *, timeout_s: float | None = 300.0) -> dict[str, Any]:
    """Do one request (``describe``, ``probe``, ``run`` ...) in a fresh, scrubbed interpreter.

    For credential-holding processes that need an answer from adapter code they must not
    import (``harness.external``). Raises :class:`LaneError` when the worker gives no answer.
    """
    lane = Lane("request", isolation="spawn")
    try:
        envelope, exit_text, err = lane._call(request, timeout_s)
    finally:
        lane.close()
    if envelope is None:
        raise LaneError(f"worker request {request.get('op')!r} failed ({exit_text}): {err or 'no output'}")
    return envelope


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
        why = f"launcher died: {_tail(self.log) or 'no message'}"
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
                raise LaneError(f"the worker launcher is not running: {_tail(self.log) or 'no message'}")
            self._next_id += 1
            ident = self._next_id
            self._children[ident] = child
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write((json.dumps(dict(request, id=ident)) + "\n").encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._children.pop(ident, None)
                raise LaneError(f"the worker launcher is gone: {_tail(self.log) or 'no message'}") from None
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


class Lane:
    """One execution slot: runs jobs one at a time, each in a fresh worker process.

    ``env`` is set in the slot's workers (e.g. ``CUDA_VISIBLE_DEVICES``); ``device`` is the
    device string the runs get (``cpu`` or ``cuda``); ``threads`` is torch's intra-op thread
    count in the workers. With ``isolation="fork"`` the workers are forked by ``launcher``
    (shared with other lanes; a private one is started if none is given), with ``"spawn"``
    each is a new interpreter.
    """

    def __init__(
        self,
        name: str,
        *,
        device: str = "cpu",
        env: Mapping[str, str] | None = None,
        threads: int | None = None,
        isolation: str = "fork",
        launcher: Launcher | None = None,
        preload: tuple[str, ...] = ("torch",),
        suites: tuple[str, ...] = (),
        workdir: str | os.PathLike[str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        if isolation not in ("fork", "spawn"):
            raise ValueError(f"unknown isolation {isolation!r} (fork or spawn)")
        self.name = name
        self.device = device
        self.env = dict(env or {})
        if threads:
            self.env.setdefault("OMP_NUM_THREADS", str(threads))
            self.env.setdefault("MKL_NUM_THREADS", str(threads))
        self.threads = threads
        self.isolation = isolation
        self.cwd = os.fspath(cwd) if cwd is not None else os.getcwd()
        self._own_dir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ngbench-lane-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._own_launcher = launcher is None and isolation == "fork"
        if self._own_launcher:
            launcher = Launcher(
                env=self.env, preload=preload, suites=suites, cwd=self.cwd, log=self.workdir / "launcher.log"
            )
        self.launcher = launcher
        self._lock = threading.Lock()
        self._child_pid: int | None = None
        self._interrupted = False
        self._counter = 0

    def start(self) -> None:
        """Start the lane's own launcher, if it has one (call from a long-lived thread)."""
        if self._own_launcher and self.launcher is not None:
            self.launcher.start()

    def close(self) -> None:
        """Kill a running child, stop an own launcher, remove the lane's files."""
        with self._lock:
            pid = self._child_pid
        if pid is not None:
            _kill_group(pid, signal.SIGKILL)
        if self._own_launcher and self.launcher is not None:
            self.launcher.close()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)

    def interrupt(self) -> None:
        """Ctrl-C: stop the running child (SIGINT, SIGKILL after 3 s); its job ends ``interrupted``."""
        with self._lock:
            self._interrupted = True
            pid = self._child_pid
        if pid is None:
            return
        _kill_group(pid, signal.SIGINT)

        def later() -> None:
            time.sleep(3.0)
            with self._lock:
                still = self._child_pid == pid
            if still:
                _kill_group(pid, signal.SIGKILL)

        threading.Thread(target=later, daemon=True).start()

    # ----------------------------------------------------------------- running
    def _paths(self) -> tuple[Path, Path, Path]:
        self._counter += 1
        stem = self.workdir / f"job-{self._counter}"
        return stem.with_suffix(".req.json"), stem.with_suffix(".out.json"), stem.with_suffix(".err")

    def probe(self, backend: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The environment fingerprint a run on this lane gets (computed in a worker)."""
        request = {"op": "probe", "backend": backend, "device": self.device, "env": {**self.env, **(env or {})}}
        envelope, exit_text, err = self._call(request, None)
        if envelope is None or "environment" not in envelope:
            raise LaneError(f"probing {backend} on lane {self.name} failed ({exit_text}): {err or 'no output'}")
        return dict(envelope["environment"])

    def run(self, job: Job, env: Mapping[str, str] | None = None) -> Outcome:
        """Run ``job`` in a fresh worker; always returns an outcome (never raises for the run).

        ``env`` is set in the worker on top of the lane's (Ray's per-task ``CUDA_VISIBLE_DEVICES``).
        """
        spec = dataclasses.replace(job.spec, device=self.device)
        job = dataclasses.replace(job, spec=spec)
        dispatched = time.time()
        hard = None if spec.timeout_s is None else spec.timeout_s + grace_period(spec.timeout_s)
        try:
            request = {"op": "run", "spec": spec.to_dict(), "env": {**self.env, **(env or {})}}
            envelope, exit_text, err = self._call(request, hard)
        except LaneError as exc:
            return Outcome(job, failed_result(job, "crashed", str(exc)), {"dispatched": dispatched}, self.name)
        timing = {"dispatched": dispatched, "received": time.time()}
        if envelope is not None and "result" in envelope:
            result = RunResult.from_dict(envelope["result"])
            timing.update(envelope.get("timing", {}))
            if result.key is None:
                result.key = job.key
            if not result.environment:
                result.environment = dict(job.environment)
            return Outcome(job, result, timing, self.name)
        if exit_text == "timeout":
            msg = (
                f"worker killed after exceeding its wall-clock limit ({spec.timeout_s:g} s + "
                f"{grace_period(spec.timeout_s or 0):g} s grace) without returning"
            )
            status = "timeout"
        elif exit_text == "interrupted":
            msg, status = "interrupted by the user (Ctrl-C); the worker was stopped", "interrupted"
        else:
            hint = ""
            if "SIGKILL" in exit_text:
                hint = " (SIGKILL not sent by ngbench: the kernel's out-of-memory killer is the usual cause)"
            msg, status = f"worker process died without a result: {exit_text}{hint}", "crashed"
        if err:
            msg += f"\n--- worker stderr (tail) ---\n{err}"
        return Outcome(job, failed_result(job, status, msg), timing, self.name)

    def _call(self, request: dict[str, Any], hard_timeout: float | None) -> tuple[dict[str, Any] | None, str, str]:
        """Run one request in a fresh process: ``(envelope or None, exit description, stderr tail)``.

        The exit description is ``timeout`` or ``interrupted`` when ngbench killed the worker.
        """
        req_path, out_path, err_path = self._paths()
        request = dict(request, out=str(out_path), err=str(err_path), threads=self.threads)
        with self._lock:
            self._interrupted = False
        try:
            if self.isolation == "fork":
                status, why = self._call_fork(request, hard_timeout)
            else:
                status, why = self._call_spawn(request, req_path, out_path, err_path, hard_timeout)
            envelope = None
            if out_path.exists():
                try:
                    envelope = json.loads(out_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    envelope = None
            exit_text = why or (describe_exit(status) if status is not None else "unknown exit")
            return envelope, exit_text, _tail(err_path) if envelope is None else ""
        finally:
            for p in (req_path, out_path, err_path, Path(f"{out_path}.part")):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _killed_why(self, timed_out: bool) -> str | None:
        with self._lock:
            interrupted = self._interrupted
        if interrupted:
            return "interrupted"
        return "timeout" if timed_out else None

    def _call_fork(self, request: dict[str, Any], hard_timeout: float | None) -> tuple[int | None, str | None]:
        assert self.launcher is not None
        if not self.launcher.alive and self._own_launcher:
            self.launcher.start()
        child = self.launcher.spawn(request)
        assert child.pid is not None
        with self._lock:
            self._child_pid = child.pid
        try:
            timed_out = False
            if not child.exited.wait(hard_timeout):
                timed_out = True
                _kill_group(child.pid, signal.SIGKILL)
                child.exited.wait()
            if child.lost is not None:
                return None, child.lost
            return child.status, self._killed_why(timed_out)
        finally:
            with self._lock:
                self._child_pid = None

    def _call_spawn(
        self, request: dict[str, Any], req_path: Path, out_path: Path, err_path: Path, hard_timeout: float | None
    ) -> tuple[int | None, str | None]:
        req_path.write_text(json.dumps(request), encoding="utf-8")
        with open(err_path, "ab") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.worker",
                    "run",
                    "--request",
                    str(req_path),
                    "--out",
                    str(out_path),
                    "--parent",
                    str(os.getpid()),
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                env=worker_environ(self.env, self.cwd),
                cwd=self.cwd,
                start_new_session=True,  # its own process group, out of reach of the terminal's Ctrl-C
                close_fds=True,
            )
        with self._lock:
            self._child_pid = proc.pid
        timed_out = False
        try:
            try:
                proc.wait(timeout=hard_timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            with self._lock:
                self._child_pid = None
        code = proc.returncode
        raw = -code if code < 0 else code << 8  # back to a waitpid-style status
        return raw, self._killed_why(timed_out)


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.worker serve|run ...`` (started by :class:`Lane`, not by users)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="launcher: fork one child per request line on stdin")
    p_serve.add_argument("--parent", type=int, required=True)
    p_serve.add_argument("--preload", default="torch", help="backends to import up front (comma-separated)")
    p_serve.add_argument("--suites", default="", help="suites whose data to load up front (comma-separated)")
    p_run = sub.add_parser("run", help="run one request (a RunSpec or {'op': ...} JSON) in this process")
    p_run.add_argument("--request", default="-", help="JSON file, or - for stdin")
    p_run.add_argument("--out", required=True, help="where to write the result envelope (JSON)")
    p_run.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.parent, [p for p in args.preload.split(",") if p], [s for s in args.suites.split(",") if s])
    return run_once(args.request, args.out, args.parent)


if __name__ == "__main__":
    raise SystemExit(main())
