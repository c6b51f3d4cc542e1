"""Executors: where a sweep's runs execute. Every executor runs each job in a fresh worker
process (:mod:`harness.worker`) and streams :class:`~harness.worker.Outcome` objects back to
the parent as they finish; only the parent writes to the database.

* :class:`~harness.executors.local.LocalExecutor`: worker lanes on this machine, one per GPU
  (``CUDA_VISIBLE_DEVICES`` per lane) or ``N`` on the CPU (cores shared out as threads);
* :class:`~harness.executors.ray_executor.RayExecutor`: the same worker inside Ray tasks with
  one GPU each (or CPUs), on a local Ray instance or a cluster.
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigError
from harness.executors.base import Executor
from harness.executors.local import LocalExecutor
from harness.executors.ray_executor import RayExecutor

EXECUTORS: tuple[str, ...] = ("local", "ray")


def make_executor(name: str, **options: Any) -> Executor:
    """``local`` or ``ray`` with its options (see each class); unknown names are a ConfigError."""
    if name == "local":
        options.pop("ray_address", None)
        return LocalExecutor(**options)
    if name == "ray":
        return RayExecutor(**options)
    raise ConfigError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")


__all__ = ["EXECUTORS", "Executor", "make_executor"]
