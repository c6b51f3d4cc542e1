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

What a worker does is named by the request: its ``handler`` is a dotted path
(``harness.worker.handlers:run_request``, ``harness.external:describe_request``,
``harness.approx.isolation:evaluate_request``) imported in the child, so this package imports
nothing of the code it runs.

Safety:

* workers never see database credentials: launchers and spawned workers get
  :func:`scrubbed_environ` (no ``NGBENCH_DB_URL``, no ``*DATABASE_URL``/``*_DB_URL``, no
  ``PG*`` credentials, no variable whose value is a URL with a password), are started with
  ``exec`` (so the parent's memory, which holds the URL, is not inherited), and receive only a
  :class:`~harness.runner.RunSpec`, which holds no URL;
* workers die with the parent: launchers and children set ``PR_SET_PDEATHSIG`` (Linux), so a
  ``kill -9`` of the sweep leaves no orphan burning a GPU; the run is redone on resume, and the
  next executor removes the folders the killed one left (:mod:`~harness.worker.stale`);
* a launcher that dies (``kill -9``, the OOM killer) takes its children with it, but not their
  runs: the lanes see the death at once (:class:`LauncherDied`), the launcher is started again
  and the runs that were in flight start again (:data:`~harness.worker.lanes.LAUNCH_ATTEMPTS`
  times at most before they are stored ``crashed``).

Results travel as JSON files in a private temporary directory (atomic rename), not pipes, so
a large metric series can never dead-lock a pipe and a half-written result is never read.

Modules: :mod:`~harness.worker.scrubbing` (secrets kept out), :mod:`~harness.worker.jobs` (jobs
and outcomes), :mod:`~harness.worker.transport` (the child side: handlers by dotted path, the
launcher loop), :mod:`~harness.worker.handlers` (runs and probes), :mod:`~harness.worker.launcher`
and :mod:`~harness.worker.lanes` (the parent side).
"""

from harness.worker.jobs import Job, Outcome, failed_result, grace_period
from harness.worker.lanes import Lane, request_in_worker
from harness.worker.launcher import STDERR_TAIL, LaneError, Launcher, LauncherDied
from harness.worker.processes import describe_exit, set_parent_death_signal
from harness.worker.scrubbing import SECRET_ENV_NAMES, SECRET_ENV_PATTERN, WORKER_MARK, scrubbed_environ, worker_environ
from harness.worker.transport import PROBE_HANDLER, RUN_HANDLER, execute_request, resolve_handler

__all__ = [
    "PROBE_HANDLER",
    "RUN_HANDLER",
    "SECRET_ENV_NAMES",
    "SECRET_ENV_PATTERN",
    "STDERR_TAIL",
    "WORKER_MARK",
    "Job",
    "Lane",
    "LaneError",
    "Launcher",
    "LauncherDied",
    "Outcome",
    "describe_exit",
    "execute_request",
    "failed_result",
    "grace_period",
    "request_in_worker",
    "resolve_handler",
    "scrubbed_environ",
    "set_parent_death_signal",
    "worker_environ",
]
