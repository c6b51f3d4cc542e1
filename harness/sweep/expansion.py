"""Expanding a sweep: its adapters described (third-party ones in a scrubbed worker) and its
hyperparameters validated, then the runs of the untuned track; the tuned track's expansion is
:func:`harness.tuning.expand_tuned`, and :func:`harness.plans.expand` chooses between them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.spec import HyperparameterError, sample_distribution
from harness import external, keys
from harness.errors import ConfigError
from harness.registry import backend_available
from harness.runner import RunSpec
from harness.sweep.parsing import Problems
from harness.sweep.schema import SweepConfig, SweepPlan
from harness.worker import LaneError
from suites import get_suite
from suites.registry import UnknownSuiteError


def grid(overrides: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid points of one optimizer's overrides (lists are axes; key order kept)."""
    names = list(overrides)
    axes = [v if isinstance(v, list) else [v] for v in overrides.values()]
    return [dict(zip(names, point)) for point in itertools.product(*axes)]


@dataclass(frozen=True)
class ResolvedSweep:
    """A sweep's names resolved and its adapters described: what either track expands from."""

    suites: dict[str, Any]
    backends: list[str]
    #: ``(optimizer, backend) -> description`` of every adapter found.
    adapters: dict[tuple[str, str], external.AdapterInfo]
    #: Per optimizer, its grid points (validated by every adapter of it).
    points: dict[str, list[dict[str, Any]]]
    #: Combinations left out, with the reason (extended by the expansion).
    skipped: list[str]


def resolve(config: SweepConfig, where: str) -> ResolvedSweep:
    """Resolve every suite, backend, optimizer and grid point of ``config`` (raises ``ConfigError``
    with every problem found)."""
    problems = Problems(where)
    skipped: list[str] = []
    suites = {}
    for name in config.suites:
        try:
            suites[name] = get_suite(name)
        except UnknownSuiteError as exc:
            problems.add(f"suites: {exc}")
    backends = []
    for b in config.backends:
        if not backend_available(b):
            problems.add(f"backend {b!r} is not installed" + (" (pip install 'ngbench[jax]')" if b == "jax" else ""))
        else:
            backends.append(b)
    # Third-party adapters are described (and their hyperparameters validated) in a scrubbed
    # worker: this process may hold database credentials (harness.external). A tuned sweep's
    # trial points are known only once the adapters' spaces are; they are validated below.
    points = {opt: grid(config.hparams.get(opt, {})) for opt in config.optimizers}
    pairs = [(opt, b) for opt in config.optimizers for b in backends]
    try:
        answers = external.describe(
            [
                external.DescribeRequest(opt, b, tuple((p, config.presets.get(opt)) for p in points[opt]))
                for opt, b in pairs
            ]
        )
    except LaneError as exc:
        raise ConfigError(f"invalid sweep file {where}: could not describe its adapters: {exc}") from None
    adapters: dict[tuple[str, str], external.AdapterInfo] = {}
    for opt in config.optimizers:
        found, errors = [], []
        for b in backends:
            answer = answers[pairs.index((opt, b))]
            if isinstance(answer, str):
                errors.append(answer)
            else:
                adapters[(opt, b)] = answer
                found.append(b)
        if backends and not found:
            problems.add(f"optimizers: {errors[0]}")
        for b in backends:
            if b not in found and found:
                skipped.append(f"{opt} has no {b} adapter")
    for (opt, b), info in adapters.items():
        for point in points[opt]:
            try:
                info.resolve(point, config.presets.get(opt))
            except HyperparameterError as exc:
                problems.add(f"hparams.{opt} ({b}): {exc}")
                break
    problems.raise_if_any()
    return ResolvedSweep(suites, backends, adapters, points, skipped)


def expand_untuned(config: SweepConfig, resolved: ResolvedSweep, where: str) -> SweepPlan:
    """The runs of an untuned sweep: suites x backends x optimizers x grid points x seeds."""
    suites, backends, adapters = resolved.suites, resolved.backends, resolved.adapters
    points, skipped = resolved.points, list(resolved.skipped)
    specs: list[RunSpec] = []
    for suite_name, suite in suites.items():
        budget = config.budgets.get(suite_name, {})
        for b in backends:
            for opt in config.optimizers:
                adapter = adapters.get((opt, b))
                if adapter is None:
                    continue
                if suite.likelihood not in adapter.likelihoods:
                    skipped.append(f"{opt} ({b}) does not support {suite.likelihood} on {suite_name}")
                    continue
                for point in points[opt]:
                    for seed in config.seeds:
                        specs.append(
                            RunSpec(
                                suite=suite_name,
                                optimizer=opt,
                                backend=b,
                                seed=seed,
                                steps=budget.get("steps", config.steps),
                                hparams=dict(point),
                                preset=config.presets.get(opt),
                                device="auto",
                                dtype=config.dtype,
                                tag=config.tag,
                                time_budget_s=budget.get("time_budget_s", config.time_budget_s),
                                timeout_s=config.timeout_s,
                                stop_at_target=config.stop_at_target,
                                eval_every=config.eval_every,
                                torch_compile=config.torch_compile and b == "torch",
                            )
                        )
    if not specs:
        why = "; ".join(skipped) or "no combinations"
        raise ConfigError(f"invalid sweep file {where}: the sweep has no runs ({why})")
    return SweepPlan(config=config, specs=tuple(specs), skipped=tuple(skipped), source=where, adapters=adapters)


def run_template(config: SweepConfig, suite_name: str, optimizer: str, backend: str) -> RunSpec:
    """A run of ``optimizer`` on ``suite_name`` with the sweep's budgets and settings (seed 0, no overrides)."""
    budget = config.budgets.get(suite_name, {})
    return RunSpec(
        suite=suite_name,
        optimizer=optimizer,
        backend=backend,
        seed=0,
        steps=budget.get("steps", config.steps),
        hparams={},
        preset=config.presets.get(optimizer),
        device="auto",
        dtype=config.dtype,
        tag=config.tag,
        time_budget_s=budget.get("time_budget_s", config.time_budget_s),
        timeout_s=config.timeout_s,
        stop_at_target=config.stop_at_target,
        eval_every=config.eval_every,
        torch_compile=config.torch_compile and backend == "torch",
    )


def sample_value(dist: Any, u: float) -> Any:
    """The value of ``dist`` at the unit-cube coordinate ``u``."""
    return sample_distribution(dist, u)


def expected_key(spec: RunSpec, environment: Mapping[str, Any], adapter: external.AdapterInfo | None = None) -> str:
    """The key :func:`harness.runner.execute` will give ``spec`` in ``environment``.

    ``environment`` needs ``device_kind`` and ``device_name`` of the device the run will use
    (a worker's probe); framework versions are this process's (a homogeneous installation is
    assumed; the worker's own key is what gets stored). ``adapter``: the plan's description of
    the spec's adapter (required for third-party adapters, which are not imported here).
    """
    suite = get_suite(spec.suite)
    if adapter is None:
        request = external.DescribeRequest(spec.optimizer, spec.backend, ((spec.hparams, spec.preset),))
        answer = external.describe([request])[0]
        if isinstance(answer, str):
            raise ConfigError(answer)
        adapter = answer
    hparams = adapter.resolve(spec.hparams, spec.preset)
    return keys.run_key_for(spec, suite, adapter.name, adapter.version, hparams, dict(environment))
