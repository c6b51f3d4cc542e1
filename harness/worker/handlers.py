"""The worker's own request handlers: a run, and a probe of the environment a run gets.

Named by dotted path in requests (:data:`~harness.worker.transport.RUN_HANDLER`,
:data:`~harness.worker.transport.PROBE_HANDLER`) and imported only in the worker process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from harness.environment import fingerprint
from harness.errors import USER_ERRORS
from harness.registry import backend_module
from harness.runner import RunResult, RunSpec, execute


def run_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """``{"spec": RunSpec dict}`` → ``{"result": RunResult dict, "timing": {"exec_end"}}``."""
    spec = RunSpec(**request["spec"])
    try:
        result = execute(spec)
    except USER_ERRORS as exc:  # validated up front; still a result, never a lost run
        result = RunResult(spec=spec, status="error", error=f"invalid run: {exc}")
    return {"result": result.to_dict(), "timing": {"exec_end": time.monotonic()}}


def probe_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """``{"backend", "device"}`` → ``{"environment": fingerprint}``."""
    backend_module(request["backend"])  # sets allocator defaults exactly as a run does
    return {"environment": fingerprint(request["backend"], request.get("device", "cpu"))}
