"""Lanes: execution slots that run one job at a time, each in a fresh worker process, and turn
whatever happens into a result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from harness.runner import RunResult
from harness.worker.jobs import Job, Outcome, failed_result, grace_period
from harness.worker.launcher import LaneError, Launcher, LauncherDied, log_tail
from harness.worker.processes import describe_exit, kill_group
from harness.worker.scrubbing import worker_environ
from harness.worker.transport import PROBE_HANDLER, RUN_HANDLER

#: How often one run is started again after the launcher died under it, before it is stored
#: ``crashed`` (a run that kills its own launcher every time must not loop forever).
LAUNCH_ATTEMPTS = 3
#: Prefix of a lane's private folder (``ngbench-lane-<pid>-…``: stale ones are removed by pid).
LANE_DIR_PREFIX = "ngbench-lane-"


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
        relaunch: Callable[[], None] | None = None,
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
        self.workdir = (
            Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix=f"{LANE_DIR_PREFIX}{os.getpid()}-"))
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._own_launcher = launcher is None and isolation == "fork"
        if self._own_launcher:
            launcher = Launcher(
                env=self.env, preload=preload, suites=suites, cwd=self.cwd, log=self.workdir / "launcher.log"
            )
        self.launcher = launcher
        #: Called after a shared launcher died, to wait for its restart (the executor's
        #: supervisor restarts it); an own launcher is restarted by the lane itself.
        self._relaunch = relaunch
        #: Runs started again because the launcher died under them.
        self.relaunched_runs = 0
        self._lock = threading.Lock()
        self._child_pid: int | None = None
        self._interrupted = False
        self._killed = threading.Event()
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
            kill_group(pid, signal.SIGKILL)
        self._killed.set()
        if self._own_launcher and self.launcher is not None:
            self.launcher.close()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the running child at once (its job ends ``interrupted``)."""
        with self._lock:
            self._interrupted = True
            pid = self._child_pid
        if pid is not None:
            kill_group(pid, signal.SIGKILL)
        self._killed.set()

    def interrupt(self) -> None:
        """Ctrl-C: stop the running child (SIGINT, SIGKILL after 3 s); its job ends ``interrupted``."""
        with self._lock:
            self._interrupted = True
            pid = self._child_pid
        if pid is None:
            return
        kill_group(pid, signal.SIGINT)

        def later() -> None:
            self._killed.wait(3.0)  # ends early on kill() or close(): nothing left to wait for
            with self._lock:
                still = self._child_pid == pid
            if still:
                kill_group(pid, signal.SIGKILL)

        threading.Thread(target=later, daemon=True).start()

    # ----------------------------------------------------------------- running
    def _paths(self) -> tuple[Path, Path, Path]:
        self._counter += 1
        stem = self.workdir / f"job-{self._counter}"
        return stem.with_suffix(".req.json"), stem.with_suffix(".out.json"), stem.with_suffix(".err")

    def probe(self, backend: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The environment fingerprint a run on this lane gets (computed in a worker)."""
        request = {
            "op": "probe",
            "handler": PROBE_HANDLER,
            "backend": backend,
            "device": self.device,
            "env": {**self.env, **(env or {})},
        }
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
        dispatched = time.monotonic()
        hard = None if spec.timeout_s is None else spec.timeout_s + grace_period(spec.timeout_s)
        request = {"op": "run", "handler": RUN_HANDLER, "spec": spec.to_dict(), "env": {**self.env, **(env or {})}}
        try:
            envelope, exit_text, err = self._call_relaunching(request, hard)
        except LaneError as exc:
            status = "interrupted" if self._killed_why(False) == "interrupted" else "crashed"
            timing = {"dispatched": dispatched, "received": time.monotonic()}
            return Outcome(job, failed_result(job, status, str(exc)), timing, self.name)
        timing = {"dispatched": dispatched, "received": time.monotonic()}
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

    def _call_relaunching(
        self, request: dict[str, Any], hard_timeout: float | None
    ) -> tuple[dict[str, Any] | None, str, str]:
        """:meth:`_call`, started again (up to :data:`LAUNCH_ATTEMPTS` times) when the launcher
        died under it: such a run never ran to an end of its own, so it is not a result."""
        with self._lock:
            self._interrupted = False
        for attempt in range(1, LAUNCH_ATTEMPTS + 1):
            try:
                return self._call(request, hard_timeout)
            except LauncherDied as exc:
                if attempt == LAUNCH_ATTEMPTS or self._killed_why(False) == "interrupted":
                    raise LaneError(f"{exc} (run started {attempt} time(s); the launcher died each time)") from None
                self.relaunched_runs += 1
                self._restart_launcher()
        raise AssertionError("unreachable")

    def _restart_launcher(self) -> None:
        if self._relaunch is not None:
            self._relaunch()
        elif self.launcher is not None:
            self.launcher.start()

    def _call(self, request: dict[str, Any], hard_timeout: float | None) -> tuple[dict[str, Any] | None, str, str]:
        """Run one request in a fresh process: ``(envelope or None, exit description, stderr tail)``.

        The exit description is ``timeout`` or ``interrupted`` when ngbench killed the worker.
        """
        req_path, out_path, err_path = self._paths()
        request = dict(request, out=str(out_path), err=str(err_path), threads=self.threads)
        try:
            try:
                if self.isolation == "fork":
                    status, why = self._call_fork(request, hard_timeout)
                else:
                    status, why = self._call_spawn(request, req_path, out_path, err_path, hard_timeout)
            except LauncherDied:
                if _read_envelope(out_path) is None:
                    raise
                status, why = 0, None  # it finished and wrote its result just before the launcher died
            envelope = _read_envelope(out_path)
            exit_text = why or (describe_exit(status) if status is not None else "unknown exit")
            return envelope, exit_text, log_tail(err_path) if envelope is None else ""
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
        child = self.launcher.spawn(request)  # LauncherDied when it is gone
        assert child.pid is not None
        with self._lock:
            self._child_pid = child.pid
        try:
            timed_out = False
            if not child.exited.wait(hard_timeout):
                timed_out = True
                kill_group(child.pid, signal.SIGKILL)
                child.exited.wait()
            if child.lost is not None:
                raise LauncherDied(child.lost)
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
                kill_group(proc.pid, signal.SIGKILL)
                proc.wait()
        finally:
            with self._lock:
                self._child_pid = None
        code = proc.returncode
        raw = -code if code < 0 else code << 8  # back to a waitpid-style status
        return raw, self._killed_why(timed_out)


def _read_envelope(path: Path) -> dict[str, Any] | None:
    """The worker's answer, or ``None`` when it wrote none (results are renamed into place
    whole, so a file that exists is complete)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
