"""Run keys and adapter versions: what makes two runs "the same run".

A run's key covers everything that changes its result: suite name and version, adapter name
and a hash of its source, resolved hyperparameters, seed, backend, dtype, step and time
budgets, device kind and name, the framework versions, and ``torch.compile`` when a run asks
for it (an eager run's key does not mention it: keys stored before the option existed still
match). Sweeps skip a run whose key has already finished; results whose suite or adapter
version is stale stay stored but unranked.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from typing import Any

from harness.environment import framework_versions


def _source_of(obj: Any) -> str:
    try:
        module = sys.modules[obj.__module__]
        return inspect.getsource(module)
    except (KeyError, OSError, TypeError):
        return getattr(obj, "__qualname__", repr(obj))


def adapter_version(adapter_cls: type) -> str:
    """Hash of the adapter's module source and of its hyperparameter class's module source."""
    h = hashlib.sha256()
    h.update(_source_of(adapter_cls).encode())
    h.update(_source_of(adapter_cls.Hyperparams).encode())  # type: ignore[attr-defined]
    return h.hexdigest()[:16]


def run_key(spec: Any, suite: Any, adapter_cls: type, hparams: dict[str, Any], environment: dict[str, Any]) -> str:
    name = adapter_cls.name  # type: ignore[attr-defined]
    return run_key_for(spec, suite, name, adapter_version(adapter_cls), hparams, environment)


def run_key_for(
    spec: Any, suite: Any, name: str, version: str, hparams: dict[str, Any], environment: dict[str, Any]
) -> str:
    """:func:`run_key` from an adapter's name and version (no import of the adapter needed)."""
    ident = {
        "suite": suite.name,
        "suite_version": suite.version,
        "optimizer": name,
        "adapter_version": version,
        "hparams": hparams,
        "seed": spec.seed,
        "backend": spec.backend,
        "dtype": spec.dtype,
        "steps": spec.steps or suite.budget.steps,
        "time_budget_s": spec.time_budget_s if spec.time_budget_s is not None else suite.budget.time_s,
        "stop_at_target": spec.stop_at_target,
        "device_kind": environment.get("device_kind"),
        "device_name": environment.get("device_name"),
        "versions": framework_versions(spec.backend),
    }
    if getattr(spec, "torch_compile", False):
        ident["torch_compile"] = True
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]
