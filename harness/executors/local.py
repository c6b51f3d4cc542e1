"""The local executor: worker lanes on this machine.

* GPUs (``devices=("cuda:0", "cuda:1", ...)``, or every visible GPU by default): one lane
  per GPU, its workers see only that GPU (``CUDA_VISIBLE_DEVICES=<index>``) and run on
  ``cuda``; the CPU cores are shared out among the lanes as intra-op threads.
* CPU (``devices=("cpu",)``, or no GPU): ``workers`` lanes (default 1), each with
  ``cores // workers`` threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``), so parallel
  runs do not oversubscribe the cores and distort each other's step times. JAX workers are
  pinned to the CPU (``JAX_PLATFORMS=cpu``).
* A GPU lane whose run failed (``crashed``, ``error``, ``timeout``, ``oom``) checks its GPU in a
  fresh interpreter; a GPU that fails the check turns the run into ``crashed`` and retires the
  lane, and the sweep goes on on the other lanes (docs/gpu-host.md, "When a GPU dies").

* The shared launcher is supervised: a thread of this executor restarts it the moment it dies
  (``kill -9``, the OOM killer), and the runs that were in flight on it start again on their
  lanes (they never ran to an end of their own, so they are neither results nor lost); a run
  under which the launcher dies :data:`~harness.worker.lanes.LAUNCH_ATTEMPTS` times is stored
  ``crashed``.

The plan (which lanes, devices, threads) is :func:`harness.devices.plan_devices`'s.

Each lane has one thread in the parent that takes jobs from a shared queue and blocks on its
worker; outcomes go to one result queue that :meth:`LocalExecutor.next_outcome` reads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from db.statuses import FINISHED_STATUSES
from harness.devices import DevicePlan, LanePlan, device_healthy, plan_devices
from harness.executors.base import Executor
from harness.worker import Job, Lane, LaneError, Launcher, Outcome, failed_result
from harness.worker.stale import remove_stale

#: Seconds a lane waits for the supervisor to bring a dead launcher back (its imports included).
RELAUNCH_WAIT_S = 600.0
#: Least seconds between two launcher starts (a launcher that dies at once is not restarted in a
#: tight loop; its runs use up their attempts and are stored ``crashed`` with its log).
RELAUNCH_SPACING_S = 0.5

#: Statuses after which a GPU lane checks that its GPU still works (a dead GPU retires the lane).
SUSPECT_STATUSES = frozenset({"crashed", "error", "timeout", "oom"})


class LocalExecutor(Executor):
    """Worker lanes on this machine (see the module docstring).

    Parameters
    ----------
    devices:
        ``("cpu",)``, ``("cuda:0", "cuda:1", ...)`` or ``None`` (every GPU, else the CPU).
    workers:
        Parallel workers on the CPU (default ``default_workers``, else 1); with GPUs, the first
        ``workers`` GPUs (see :func:`harness.devices.plan_devices`).
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
        default_workers: int | None = None,
        plan: DevicePlan | None = None,
    ) -> None:
        super().__init__()
        self.plan = plan or plan_devices(devices, workers, cores=cores, default_workers=default_workers)
        self._plan: tuple[LanePlan, ...] = self.plan.lanes
        #: GPU lanes whose GPU failed its health check: name -> why (they take no more jobs).
        self.retired: dict[str, str] = {}
        self.isolation = isolation
        self.lanes: list[Lane] = []
        self.launcher: Launcher | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._results: queue.Queue[Outcome] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._current: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._closed = threading.Event()
        self._submitted = 0
        self._returned = 0
        self._hurried = False
        self._hurry_event: threading.Event | None = None

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
        return self.plan.describe()

    def start(self) -> None:
        if self.lanes:
            return
        remove_stale()  # lane folders and launcher logs of sweeps that were killed
        if self.isolation == "fork":
            # One launcher for all lanes: settings the lanes share go into its environment,
            # the rest (CUDA_VISIBLE_DEVICES per GPU) into each forked child's.
            envs = [lane.env for lane in self._plan]
            common = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs)}
            counts = {lane.threads for lane in self._plan}
            if len(counts) == 1:
                common.update(OMP_NUM_THREADS=str(*counts), MKL_NUM_THREADS=str(*counts))
            self.launcher = Launcher(
                env=common, preload=tuple(b for b in self.backends if b == "torch"), suites=tuple(self.suites)
            )
            # Started (and restarted) by a supervisor thread that lives until close(): the
            # launcher's parent-death signal follows the thread that started it.
            started = threading.Event()
            self._supervisor = threading.Thread(
                target=self._supervise, args=(self.launcher, started), name="ngbench-supervisor", daemon=True
            )
            self._supervisor.start()
            started.wait()
        for p in self._plan:
            self.lanes.append(
                Lane(
                    p.name,
                    device=p.device,
                    env=p.env,
                    threads=p.threads,
                    isolation=self.isolation,
                    launcher=self.launcher,
                    relaunch=self._await_launcher if self.launcher is not None else None,
                )
            )
        for lane, p in zip(self.lanes, self._plan, strict=True):
            t = threading.Thread(target=self._serve, args=(lane, p), name=f"ngbench-{lane.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _supervise(self, launcher: Launcher, started: threading.Event) -> None:
        """Start the launcher, then start it again each time it dies, until :meth:`close`."""
        try:
            launcher.start()
        finally:
            started.set()
        last = time.monotonic()
        # This thread must outlive the launcher (its parent-death signal follows this thread):
        # it ends only once close() has ended the launcher, not when the executor starts stopping.
        while not self._closed.is_set():
            if self._stopping.is_set():  # no restarts any more; wait for close()
                self._closed.wait(0.2)
                continue
            if not launcher.died.wait(0.2):
                continue
            time.sleep(max(0.0, RELAUNCH_SPACING_S - (time.monotonic() - last)))
            if self._stopping.is_set():
                continue
            last = time.monotonic()
            try:
                launcher.start()
            except OSError:  # cannot even exec Python: the waiting lanes give up in time
                time.sleep(RELAUNCH_SPACING_S)

    def _await_launcher(self) -> None:
        """A lane's wait for the supervisor to restart the dead launcher (:class:`LaneError`
        when the executor is stopping or the launcher does not come back)."""
        launcher = self.launcher
        deadline = time.monotonic() + RELAUNCH_WAIT_S
        while launcher is not None and not launcher.alive:
            if self._stopping.is_set():
                raise LaneError("the executor is stopping; the dead worker launcher is not restarted")
            if time.monotonic() > deadline:
                raise LaneError(f"the worker launcher did not come back within {RELAUNCH_WAIT_S:g} s")
            launcher.died.set()  # in case the supervisor has not heard of the death yet
            time.sleep(0.02)

    @property
    def launcher_starts(self) -> int:
        """Launcher processes started (1 + restarts; 0 with ``spawn`` isolation)."""
        return self.launcher.starts if self.launcher is not None else 0

    def _serve(self, lane: Lane, plan: LanePlan) -> None:
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
            retire = None
            if plan.gpu is not None and outcome.result.status in SUSPECT_STATUSES and not self._stopping.is_set():
                retire = self._check_gpu(lane, plan, outcome)
            with self._lock:
                self._current.pop(lane.name, None)
            self._results.put(outcome)
            if retire is not None:
                self._retire(lane, retire)
                return

    def _check_gpu(self, lane: Lane, plan: LanePlan, outcome: Outcome) -> str | None:
        """After a failed run on a GPU lane: ``None`` if the GPU still works, else why not
        (the run becomes ``crashed``; docs/gpu-host.md, "When a GPU dies")."""
        healthy, why = device_healthy(plan.env)
        if healthy:
            return None
        reason = f"GPU {plan.gpu} ({lane.name}) failed after this run; lane retired: {why}"
        result = outcome.result
        result.status = "crashed"
        result.error = reason + (f"\n{result.error}" if result.error else "")
        return reason

    def _retire(self, lane: Lane, reason: str) -> None:
        """Stop ``lane`` taking jobs; when no lane is left, the queued jobs come back ``crashed``."""
        drained: list[Job] = []
        with self._lock:  # submit() queues under the same lock: no job slips in after the drain
            self.retired[lane.name] = reason
            if len(self.retired) < len(self._plan):
                return
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    drained.append(job)
        for job in drained:
            self._results.put(self._not_run(job))

    def _not_run(self, job: Job) -> Outcome:
        message = f"not run: every GPU lane is retired ({'; '.join(self.retired.values())})"
        return Outcome(job, failed_result(job, "crashed", message), {}, "retired")

    def probe(self, backend: str) -> dict[str, Any]:
        if not self.lanes:
            self.start()
        # The lane threads may be busy only after submit(); probing happens before that.
        return self.lanes[0].probe(backend)

    def submit(self, job: Job) -> None:
        self._submitted += 1
        with self._lock:
            if len(self.retired) < len(self._plan):
                self._jobs.put(job)
                return
        self._results.put(self._not_run(job))

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        try:
            outcome = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        self._returned += 1
        return outcome

    def interrupt(self, hurry: threading.Event | None = None) -> list[Outcome]:
        self._stopping.set()
        self._hurry_event = hurry
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
            if hurry is not None and hurry.is_set():  # a second Ctrl-C: no more waiting
                self._hurry()
                break
            got = self.next_outcome(timeout=0.1)
            if got is not None:
                got.result = _as_interrupted(got)
                outcomes.append(got)
        while (got := self.next_outcome(timeout=0)) is not None:  # answered meanwhile
            got.result = _as_interrupted(got)
            outcomes.append(got)
        with self._lock:
            stuck = [j for j in self._current.values() if all(o.job is not j for o in outcomes)]
            self._current.clear()
        for job in stuck:  # a lane that did not answer: its worker was SIGKILLed; record the run
            outcomes.append(Outcome(job, failed_result(job, "interrupted", "interrupted by the user (Ctrl-C)"), {}))
            self._returned += 1
        return outcomes

    def _hurry(self) -> None:
        """Kill every worker now and make :meth:`close` quick (the second Ctrl-C)."""
        self._hurried = True
        for lane in self.lanes:
            lane.kill()
        if self.launcher is not None:
            self.launcher.kill_children()

    def close(self) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._jobs.put(None)
        for lane in self.lanes:
            lane.close()
        quick = self._hurried or (self._hurry_event is not None and self._hurry_event.is_set())
        if self.launcher is not None:
            self.launcher.close(wait_s=1.0 if quick else 10.0, hurry=self._hurry_event)
        self._closed.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=1.0)
            self._supervisor = None
        self.launcher = None
        for t in self._threads:
            t.join(timeout=0.2 if quick else 5)
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
