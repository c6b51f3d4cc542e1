"""The child side: requests in, envelopes out.

A request is a JSON object naming its ``handler`` by dotted path (``module:function``); the
child imports the handler's module and calls it with the request, so the worker imports nothing
of what it runs. A request without a handler is a run (:data:`RUN_HANDLER`). The envelope
(the handler's answer plus ``timing``) is written as a JSON file, atomically. Children are
forked by the launcher loop (:func:`serve`) or are one fresh interpreter (:func:`run_once`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.environment import git_state
from harness.registry import adapters
from harness.worker.processes import ORPHAN_EXIT, kill_group, set_parent_death_signal
from harness.worker.scrubbing import WORKER_MARK
from suites.registry import get_suite, list_suites

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


#: The handler of a request that names none: one run (``{"spec": RunSpec dict}``).
RUN_HANDLER = "harness.worker.handlers:run_request"
#: The handler of a lane's probe: the environment fingerprint a run on the lane gets.
PROBE_HANDLER = "harness.worker.handlers:probe_request"


def resolve_handler(path: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """The function a request's ``handler`` names (``module:function``), imported here."""
    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"a request handler is 'module:function', got {path!r}")
    handler = getattr(importlib.import_module(module_name), name)
    if not callable(handler):
        raise TypeError(f"request handler {path!r} is not callable")
    return handler


def execute_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Do what ``request`` asks in this process and return the envelope to write: the answer of
    its handler (:data:`RUN_HANDLER` when it names none) with ``timing`` (``exec_start``, and
    whatever the handler adds, e.g. a run's ``exec_end``)."""
    timing: dict[str, float] = {"exec_start": time.monotonic()}
    envelope = resolve_handler(request.get("handler") or RUN_HANDLER)(request)
    envelope["timing"] = {**timing, **envelope.get("timing", {})}
    return envelope


def _child(request: Mapping[str, Any], launcher_pid: int, close_fds: tuple[int, ...] = ()) -> None:
    """Body of a forked child: never returns."""
    code = 1
    try:
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)  # its own group: a timeout kills everything it started
        set_parent_death_signal()
        if os.getppid() != launcher_pid:
            os._exit(ORPHAN_EXIT)
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
        started = time.monotonic()
        envelope = execute_request(request)
        envelope["timing"]["child_start"] = started
        envelope["timing"]["written"] = time.monotonic()
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
    import resource  # noqa: F401  (peak RSS reads: imported before the fork, not in every child)

    resolve_handler(RUN_HANDLER)  # the run loop
    list_suites()
    git_state()
    for name in suites or []:
        with contextlib.suppress(Exception):  # a data problem is reported by the run itself
            _ = get_suite(name).data
    if "torch" in backends:
        with contextlib.suppress(ImportError):
            import torch.fx.experimental.symbolic_shapes  # noqa: F401  (lazy import of the first backward)

            adapters("torch")
            _warm_flop_counter()
    torch_module = sys.modules.get("torch")
    if torch_module is not None and torch_module.cuda.is_initialized():  # pragma: no cover - a bug in an import
        raise RuntimeError("CUDA was initialised while preloading: forked workers would share its context")


def _warm_flop_counter() -> None:
    """The first use of torch's FLOP counter (after every run's loop) loads its operator tables:
    about 1-3 s that every forked child would otherwise pay. Done once here, on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.ones(2, 2, requires_grad=True)
    with FlopCounterMode(display=False):
        (x @ x).sum().backward()


def serve(parent_pid: int, preload: list[str], suites: list[str] | None = None) -> int:
    """The launcher loop: fork one child per request line on stdin, report births and deaths.

    Requests are JSON lines with an ``id``; several children may run at once (one per lane).
    Replies are JSON lines on stdout: ``{"event": "started", "id", "pid"}`` right after the
    fork and ``{"event": "exited", "id", "pid", "status"}`` (a ``waitpid`` status) once the
    child is reaped. End of input kills the remaining children and ends the launcher.
    """
    set_parent_death_signal()
    if os.getppid() != parent_pid:
        return ORPHAN_EXIT
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
                    kill_group(pid, signal.SIGKILL)
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
        return ORPHAN_EXIT
    os.environ[WORKER_MARK] = "1"
    raw = sys.stdin.read() if request_path == "-" else Path(request_path).read_text(encoding="utf-8")
    request = json.loads(raw)
    if "spec" not in request and "handler" not in request and "op" not in request:
        request = {"op": "run", "spec": request}  # a bare RunSpec
    os.environ.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
    _set_threads(request.get("threads"))
    started = time.monotonic()
    envelope = execute_request(request)
    envelope["timing"]["child_start"] = started
    envelope["timing"]["written"] = time.monotonic()
    _write_json_atomic(out_path, envelope)
    return 0
