"""An evaluation in a scrubbed worker process, for third-party adapters (docs/approximation.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.approx.evaluation import evaluate
from harness.approx.planning import ApproxSpec, prepare
from harness.approx.results import ApproxResult
from harness.errors import USER_ERRORS, ConfigError
from harness.worker import request_in_worker


def evaluate_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Body of the worker's ``approx`` request: ``{"result": ...}`` or ``{"error": message}``."""
    spec = ApproxSpec.from_dict(request["spec"])
    try:
        plan = prepare(spec)
    except USER_ERRORS as exc:
        return {"error": str(exc)}
    return {"result": evaluate(spec, plan=plan).to_dict()}


def evaluate_isolated(spec: ApproxSpec) -> ApproxResult:
    """:func:`prepare` and :func:`evaluate` in a scrubbed worker (third-party adapters must not
    run in a process that holds database credentials); user errors are raised here."""
    envelope = request_in_worker(
        {"op": "approx", "handler": f"{__name__}:evaluate_request", "spec": spec.to_dict()}, timeout_s=None
    )
    if "error" in envelope:
        raise ConfigError(envelope["error"])
    return ApproxResult.from_dict(envelope["result"])
