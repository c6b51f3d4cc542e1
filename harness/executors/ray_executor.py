"""The Ray executor: the same worker as a Ray task, one GPU (or CPU share) each, on a cluster.

Each task runs the job through a :class:`~harness.worker.Lane` kept in the Ray worker process:
the run still executes in a fresh child process (clean memory peak, its own CUDA context,
killed with its process group at its timeout), and the task returns the result to the driver,
which streams outcomes back as tasks finish (``ray.wait``) and alone writes to the database.

* ``num_gpus=1`` per task when the cluster has GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` per
  task; the lane hands it to the child), else ``num_cpus=cpus_per_task`` with as many torch
  threads;
* at most as many tasks in flight as the cluster has slots, so an interrupt knows which runs
  were running and a long sweep does not flood the scheduler;
* no retries by Ray (``max_retries=0``): a task whose worker or node died comes back as a
  ``crashed`` run and is retried by ``--resume``, like every other failure;
* the driver removes database URLs and other credentials from its environment while it
  starts a local Ray instance, because local Ray workers inherit it; it keeps Ray's own
  cluster credentials (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``RAY_AUTH_MODE``), which
  joining a head with token authentication needs (:func:`hidden_from_ray`); the runs' own
  processes see neither. On a cluster, never put credentials into the ``runtime_env``.

The expected run key (for skipping finished runs) comes from a probe task; a homogeneous
cluster (same GPU model, same framework versions on every node) is assumed. The key a worker
computes is the one stored, so a heterogeneous node's results are stored under their own
keys; they are simply not recognised as "already finished" by a resume.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from harness.devices import plan_devices
from harness.errors import ConfigError
from harness.executors.base import Executor
from harness.runner import RunResult
from harness.worker import Job, Lane, Outcome, failed_result, scrubbed_environ

#: Ray's own cluster credentials (token authentication, the default of the pinned Ray): the
#: driver keeps them through ``ray.init`` so it can join a head that requires a token. They
#: are Ray's, not the database's, and the run processes never see them either
#: (:func:`harness.worker.worker_environ` scrubs every ``*TOKEN*`` variable).
RAY_CLUSTER_CREDENTIALS: frozenset[str] = frozenset({"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"})


def hidden_from_ray(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` removed while the driver starts or joins Ray: every credential
    :func:`~harness.worker.scrubbed_environ` removes (database URLs, passwords, tokens), except
    Ray's own cluster credentials (:data:`RAY_CLUSTER_CREDENTIALS`)."""
    clean = scrubbed_environ(env)
    return {k: v for k, v in env.items() if k not in clean and k not in RAY_CLUSTER_CREDENTIALS}


#: The Ray worker process's lane (one per process; reused by the tasks it runs).
_LANE: Lane | None = None


def _task_env(use_gpu: bool) -> dict[str, str]:
    if use_gpu:
        return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    return {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}


def _lane(opts: dict[str, Any]) -> Lane:
    global _LANE
    if _LANE is None:
        cwd = opts.get("cwd")
        _LANE = Lane(
            f"ray-{socket.gethostname()}-{os.getpid()}",
            device="cuda" if opts["use_gpu"] else "cpu",
            threads=opts["threads"],
            preload=tuple(opts["preload"]),
            suites=tuple(opts["suites"]),
            cwd=cwd if cwd and os.path.isdir(cwd) else None,
        )
        atexit.register(_LANE.close)
    return _LANE


def ray_run(job: Job, opts: dict[str, Any]) -> dict[str, Any]:
    """Body of the Ray task: run ``job`` in a fresh process on this node, return the outcome."""
    lane = _lane(opts)
    outcome = lane.run(job, env=_task_env(opts["use_gpu"]))
    return {"result": outcome.result.to_dict(), "timing": outcome.timing, "lane": outcome.lane}


def ray_probe(backend: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Body of the probe task: the environment fingerprint of a run on this node."""
    return _lane(opts).probe(backend, env=_task_env(opts["use_gpu"]))


class RayExecutor(Executor):
    """Jobs as Ray tasks (see the module docstring).

    Parameters
    ----------
    ray_address:
        ``None`` starts a local Ray instance; ``"auto"`` or ``"ray://host:10001"`` joins a
        cluster (``ray start --head`` / ``ray start --address=...`` on the nodes).
    devices:
        ``("cpu",)`` forces CPU tasks; ``None`` uses GPUs when the cluster has any. Ray places
        tasks itself: GPU indices cannot be chosen.
    workers:
        Concurrent tasks (default: the cluster's GPU count, or CPUs / ``cpus_per_task``);
        also the CPU count of a local instance.
    """

    name = "ray"

    def __init__(
        self,
        devices: Sequence[str] | None = None,
        workers: int | None = None,
        *,
        ray_address: str | None = None,
        cpus_per_task: int = 1,
    ) -> None:
        super().__init__()
        plan_devices(devices, workers, executor="ray", gpus=0, cores=1)  # bad requests fail before Ray starts
        self.devices = tuple(devices) if devices is not None else None
        self.force_cpu = devices is not None
        self.workers = workers
        self.address = ray_address
        self.cpus_per_task = cpus_per_task
        self.use_gpu = False
        self._slots = 0
        self._started_ray = False
        self._queue: collections.deque[Job] = collections.deque()
        self._running: dict[Any, tuple[Job, float]] = {}
        self._remote_run: Any = None
        self._remote_probe: Any = None

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._running)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    def describe(self) -> str:
        where = self.address or "local Ray instance"
        kind = "1 GPU" if self.use_gpu else f"{self.cpus_per_task} CPU"
        return f"ray ({where}), {self._slots} concurrent tasks of {kind} each"

    def _opts(self) -> dict[str, Any]:
        return {
            "use_gpu": self.use_gpu,
            "threads": self.cpus_per_task,
            "preload": [b for b in self.backends if b == "torch"],
            "suites": list(self.suites),
            "cwd": os.getcwd(),
        }

    def start(self) -> None:
        if self._remote_run is not None:
            return
        try:
            import ray  # optional dependency (the "ray" extra), imported only when Ray is used
        except ImportError:
            raise ConfigError("the Ray executor needs ray: pip install 'ngbench[ray]'") from None
        if not ray.is_initialized():
            # Local Ray workers inherit the driver's environment: keep credentials out of it.
            hidden = hidden_from_ray(os.environ)
            for k in hidden:
                del os.environ[k]
            try:
                kwargs: dict[str, Any] = {
                    "include_dashboard": False,
                    "log_to_driver": False,
                    "configure_logging": False,
                    "namespace": "ngbench",
                }
                if self.address is None:
                    kwargs["num_cpus"] = self.workers or os.cpu_count() or 1
                    kwargs["num_gpus"] = None
                ray.init(address=self.address, **kwargs)
            except Exception as exc:  # unreachable cluster, bad address ...
                raise ConfigError(f"cannot start or join Ray ({self.address or 'local'}): {exc}") from None
            finally:
                os.environ.update(hidden)
            self._started_ray = True
        resources = ray.cluster_resources()
        try:
            plan = plan_devices(
                self.devices,
                self.workers,
                executor="ray",
                gpus=int(resources.get("GPU", 0)),
                cores=int(resources.get("CPU", 1)),
                cpus_per_task=self.cpus_per_task,
            )
        except ConfigError:
            self.close()
            raise
        self.use_gpu = plan.use_gpu
        self._slots = plan.slots
        options: dict[str, Any] = {"num_cpus": self.cpus_per_task}
        if self.use_gpu:
            options["num_gpus"] = 1
        remote: Any = ray.remote
        self._remote_run = remote(max_retries=0, **options)(ray_run)
        self._remote_probe = remote(max_retries=0, **options)(ray_probe)

    def probe(self, backend: str) -> dict[str, Any]:
        import ray  # optional dependency (the "ray" extra), imported only when Ray is used

        self.start()
        try:
            return dict(ray.get(self._remote_probe.remote(backend, self._opts())))
        except ray.exceptions.RayError as exc:
            raise ConfigError(f"probing {backend} on Ray failed: {exc}") from None

    def submit(self, job: Job) -> None:
        self._queue.append(job)
        self._fill()

    def _fill(self) -> None:
        opts = self._opts()
        while self._queue and len(self._running) < self._slots:
            job = self._queue.popleft()
            ref = self._remote_run.remote(job, opts)
            self._running[ref] = (job, time.time())

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        import ray  # optional dependency (the "ray" extra), imported only when Ray is used

        self._fill()
        if not self._running:
            return None
        ready, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        if not ready:
            return None
        ref = ready[0]
        job, submitted = self._running.pop(ref)
        try:
            payload = ray.get(ref)
        except ray.exceptions.RayError as exc:
            text = str(exc).strip().splitlines()
            result = failed_result(job, "crashed", f"Ray task failed ({type(exc).__name__}): {' '.join(text[:3])}")
            outcome = Outcome(job, result, {"submitted": submitted, "received": time.time()}, "ray")
        else:
            timing = dict(payload.get("timing", {}))
            timing["submitted"] = submitted
            timing["driver_received"] = time.time()
            outcome = Outcome(job, RunResult.from_dict(payload["result"]), timing, payload.get("lane", "ray"))
        self._fill()
        return outcome

    def interrupt(self) -> list[Outcome]:
        import ray  # optional dependency (the "ray" extra), imported only when Ray is used

        self._queue.clear()
        outcomes = []
        if self._running:  # runs that finished meanwhile keep their real result
            ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
            for _ in ready:
                got = self.next_outcome(timeout=0)
                if got is not None:
                    outcomes.append(got)
            self._queue.clear()
        for ref, (job, _submitted) in list(self._running.items()):
            with contextlib.suppress(Exception):  # already finished or gone
                ray.cancel(ref, force=True)
            outcomes.append(
                Outcome(job, failed_result(job, "interrupted", "interrupted by the user (Ctrl-C)"), {}, "ray")
            )
        self._running.clear()
        return outcomes

    def close(self) -> None:
        if self._started_ray:
            import ray  # optional dependency (the "ray" extra), imported only when Ray is used

            ray.shutdown()
            self._started_ray = False
        self._remote_run = self._remote_probe = None
