"""The local executor: worker lanes on this machine.

* GPUs (``devices=("cuda:0", "cuda:1", ...)``, or every visible GPU by default): one lane
  per GPU, its workers see only that GPU (``CUDA_VISIBLE_DEVICES=<index>``) and run on
  ``cuda``; the CPU cores are shared out among the lanes as intra-op threads.
* CPU (``devices=("cpu",)``, or no GPU): ``workers`` lanes (default 1), each with
  ``cores // workers`` threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``), so parallel
  runs do not oversubscribe the cores and distort each other's step times. JAX workers are
  pinned to the CPU (``JAX_PLATFORMS=cpu``).

Each lane has one thread in the parent that takes jobs from a shared queue and blocks on its
worker; outcomes go to one result queue that :meth:`LocalExecutor.next_outcome` reads.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from db.statuses import FINISHED_STATUSES
from harness.errors import ConfigError
from harness.executors.base import Executor
from harness.worker import Job, Lane, Launcher, Outcome, failed_result


def visible_gpus() -> tuple[str, ...]:
    """``cuda:N`` for every GPU torch sees (without creating a CUDA context), else ``()``."""
    try:
        import torch  # the parent never imports a framework unless it looks for GPUs
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))


def plan_lanes(
    devices: Sequence[str] | None, workers: int | None, cores: int | None = None
) -> list[tuple[str, str, dict[str, str], int]]:
    """``(name, device, env, threads)`` per lane for the requested devices and worker count."""
    cores = cores or os.cpu_count() or 1
    devs = tuple(devices) if devices else (visible_gpus() or ("cpu",))
    if devs == ("cpu",):
        n = workers or 1
        if n < 1:
            raise ConfigError(f"--workers must be positive, got {n}")
        threads = max(1, cores // n)
        env = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
        return [(f"cpu{i}", "cpu", dict(env), threads) for i in range(n)]
    if workers not in (None, len(devs)) and workers != 1:
        raise ConfigError(
            f"--workers {workers} with GPUs: the local executor runs one worker per GPU; choose GPUs with --devices"
        )
    visible = visible_gpus()
    missing = [d for d in devs if d not in visible]
    if missing:
        seen = ", ".join(visible) or "none"
        raise ConfigError(
            f"--devices {','.join(d.split(':')[1] for d in devs)}: GPU(s) {', '.join(missing)} "
            f"not visible to torch (visible: {seen}); use --devices cpu"
        )
    threads = max(1, cores // len(devs))
    lanes = []
    for dev in devs:
        index = dev.split(":", 1)[1]
        lanes.append((f"gpu{index}", "cuda", {"CUDA_VISIBLE_DEVICES": index}, threads))
    return lanes


class LocalExecutor(Executor):
    """Worker lanes on this machine (see the module docstring).

    Parameters
    ----------
    devices:
        ``("cpu",)``, ``("cuda:0", "cuda:1", ...)`` or ``None`` (every GPU, else the CPU).
    workers:
        Parallel workers on the CPU (default 1).
    isolation:
        ``fork`` (a warm launcher forks a fresh child per run; default) or ``spawn`` (a new
        interpreter per run).
    """

    name = "local"

    def __init__(
        self,
        devices: Sequence[str] | None = None,
        workers: int | None = None,
        *,
        isolation: str = "fork",
        cores: int | None = None,
    ) -> None:
        super().__init__()
        self._plan = plan_lanes(devices, workers, cores)
        self.isolation = isolation
        self.lanes: list[Lane] = []
        self.launcher: Launcher | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._results: queue.Queue[Outcome] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._current: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._submitted = 0
        self._returned = 0

    @property
    def slots(self) -> int:
        return len(self._plan)

    @property
    def pending(self) -> int:
        return self._submitted - self._returned

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._current)

    def describe(self) -> str:
        lanes = ", ".join(f"{name} ({threads} thr)" for name, _, _, threads in self._plan)
        return f"local, {self.slots} worker{'s' if self.slots != 1 else ''}: {lanes}"

    def start(self) -> None:
        if self.lanes:
            return
        if self.isolation == "fork":
            # One launcher for all lanes: settings the lanes share go into its environment,
            # the rest (CUDA_VISIBLE_DEVICES per GPU) into each forked child's.
            envs = [env for _, _, env, _ in self._plan]
            common = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs)}
            counts = {t for *_, t in self._plan}
            if len(counts) == 1:
                common.update(OMP_NUM_THREADS=str(*counts), MKL_NUM_THREADS=str(*counts))
            self.launcher = Launcher(
                env=common, preload=tuple(b for b in self.backends if b == "torch"), suites=tuple(self.suites)
            )
            self.launcher.start()  # from this (long-lived) thread: see Launcher.start
        for name, device, env, threads in self._plan:
            self.lanes.append(
                Lane(name, device=device, env=env, threads=threads, isolation=self.isolation, launcher=self.launcher)
            )
        for lane in self.lanes:
            t = threading.Thread(target=self._serve, args=(lane,), name=f"ngbench-{lane.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, lane: Lane) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._stopping.is_set():
                return
            with self._lock:
                self._current[lane.name] = job
            try:
                outcome = lane.run(job)
            except Exception as exc:  # a bug here must not lose the job or hang the sweep
                outcome = Outcome(
                    job, failed_result(job, "crashed", f"lane {lane.name} failed: {exc!r}"), {}, lane.name
                )
            with self._lock:
                self._current.pop(lane.name, None)
            self._results.put(outcome)

    def probe(self, backend: str) -> dict[str, Any]:
        if not self.lanes:
            self.start()
        # The lane threads may be busy only after submit(); probing happens before that.
        return self.lanes[0].probe(backend)

    def submit(self, job: Job) -> None:
        self._submitted += 1
        self._jobs.put(job)

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        try:
            outcome = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        self._returned += 1
        return outcome

    def interrupt(self) -> list[Outcome]:
        self._stopping.set()
        dropped = 0
        while True:
            try:
                if self._jobs.get_nowait() is not None:
                    dropped += 1
            except queue.Empty:
                break
        self._submitted -= dropped
        with self._lock:
            running = dict(self._current)
        for lane in self.lanes:
            if lane.name in running:
                lane.interrupt()
        outcomes: list[Outcome] = []
        deadline = time.monotonic() + 15.0
        while self.pending > 0 and time.monotonic() < deadline:
            got = self.next_outcome(timeout=0.2)
            if got is not None:
                got.result = _as_interrupted(got)
                outcomes.append(got)
        with self._lock:
            stuck = list(self._current.values())
        for job in stuck:  # a lane that did not answer: its worker was SIGKILLed; record the run
            outcomes.append(Outcome(job, failed_result(job, "interrupted", "interrupted by the user (Ctrl-C)"), {}))
            self._returned += 1
        return outcomes

    def close(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._jobs.put(None)
        for lane in self.lanes:
            lane.close()
        if self.launcher is not None:
            self.launcher.close()
            self.launcher = None
        for t in self._threads:
            t.join(timeout=5)
        self.lanes = []
        self._threads = []


def _as_interrupted(outcome: Outcome) -> Any:
    """Keep a result that finished on its own; anything the interrupt cut short is ``interrupted``."""
    result = outcome.result
    if result.status in FINISHED_STATUSES:
        return result
    if result.status != "interrupted":
        result.status = "interrupted"
        result.error = "interrupted by the user (Ctrl-C)" + (f"\n{result.error}" if result.error else "")
    return result
