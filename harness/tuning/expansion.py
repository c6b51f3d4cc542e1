"""The tuned track's expansion: one study per (suite, optimizer, backend), its trials sampled from
the adapter's search space (with the sweep's overrides) and validated by the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.spec import HyperparameterError
from harness import external
from harness.errors import ConfigError
from harness.runner import RunSpec
from harness.sweep.expansion import ResolvedSweep, run_template, sample_value
from harness.sweep.parsing import Problems, suggest
from harness.sweep.schema import RunRole, SweepConfig, SweepPlan
from harness.tuning.studies import adapter_space, effective_space, plan_study, study_points
from harness.worker import LaneError


def expand_tuned(config: SweepConfig, resolved: ResolvedSweep, where: str) -> SweepPlan:
    """The trials of every (suite, optimizer, backend) study of a tuned sweep (phase 1)."""
    suites, backends, adapters = resolved.suites, resolved.backends, resolved.adapters
    skipped = list(resolved.skipped)
    assert config.tuning is not None
    protocol = config.tuning
    problems = Problems(where)
    spaces: dict[tuple[str, str], dict[str, Any]] = {}
    for (opt, b), info in adapters.items():
        known = {h.name for h in info.hyperparams}
        overrides = dict(config.search.get(opt, {}))
        for name in overrides:
            if name not in known:
                problems.add(
                    f"search.{opt}.{name}: {name!r} is not a hyperparameter of {opt}{suggest(name, sorted(known))}"
                )
        try:
            declared = adapter_space(opt, b, info)
        except ValueError as exc:
            problems.add(f"{opt} ({b}): {exc}")
            continue
        spaces[(opt, b)] = effective_space(declared, config.hparams.get(opt, {}), overrides)
    problems.raise_if_any()

    # Sample every study's points (independent of the backend), then validate them all, with
    # the ends of every overridden range, in one describe call per adapter.
    fixed = {opt: dict(config.hparams.get(opt, {})) for opt in config.optimizers}
    sampled: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    requests: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (opt, b), space in spaces.items():
        edges = []
        for name, dist in config.search.get(opt, {}).items():
            for u in (0.0, 1.0 - 1e-12):
                edges.append({**fixed[opt], name: sample_value(dist, u)})
        requests[(opt, b)] = edges
        for suite_name in suites:
            pts = study_points(suite_name, opt, space, fixed[opt], protocol)
            sampled[(suite_name, opt, b)] = pts
            requests[(opt, b)].extend(pts)
    pairs = list(requests)
    try:
        answers = external.describe(
            [
                external.DescribeRequest(opt, b, tuple((p, config.presets.get(opt)) for p in requests[(opt, b)]))
                for opt, b in pairs
            ]
        )
    except LaneError as exc:
        raise ConfigError(f"invalid sweep file {where}: could not describe its adapters: {exc}") from None
    described: dict[tuple[str, str], external.AdapterInfo] = {}
    for (opt, b), answer in zip(pairs, answers, strict=True):
        if isinstance(answer, str):
            problems.add(f"optimizers: {answer}")
            continue
        described[(opt, b)] = answer
        for point in requests[(opt, b)][: 2 * len(config.search.get(opt, {}))]:
            try:
                answer.resolve(point, config.presets.get(opt))
            except HyperparameterError as exc:
                problems.add(f"search.{opt} ({b}): the range reaches a value the adapter refuses: {exc}")
                break
    problems.raise_if_any()

    studies: list[Any] = []
    specs: list[RunSpec] = []
    roles: list[RunRole] = []
    for suite_name, suite in suites.items():
        for b in backends:
            for opt in config.optimizers:
                described_info = described.get((opt, b))
                if described_info is None:
                    continue
                info = described_info
                if suite.likelihood not in info.likelihoods:
                    skipped.append(f"{opt} ({b}) does not support {suite.likelihood} on {suite_name}")
                    continue
                space = spaces[(opt, b)]

                def resolve(point: Mapping[str, Any], preset: str | None, _info: Any = info) -> dict[str, Any]:
                    return _info.resolve(point, preset)

                try:
                    study = plan_study(
                        suite_name,
                        opt,
                        b,
                        protocol=protocol,
                        space=space,
                        fixed=fixed[opt],
                        preset=config.presets.get(opt),
                        template=run_template(config, suite_name, opt, b),
                        resolve=resolve,
                    )
                except HyperparameterError as exc:
                    problems.add(f"search space of {opt} ({b}) on {suite_name}: a sampled point is refused: {exc}")
                    continue
                studies.append(study)
                for trial in study.trials:
                    specs.append(study.trial_spec(trial))
                    roles.append(RunRole("trial", trial.index, trial.config_hash))
                if study.note:
                    skipped.append(f"{study.label}: {study.note}")
    problems.raise_if_any()
    if not specs:
        why = "; ".join(skipped) or "no combinations"
        raise ConfigError(f"invalid sweep file {where}: the sweep has no runs ({why})")
    return SweepPlan(
        config=config,
        specs=tuple(specs),
        skipped=tuple(skipped),
        source=where,
        adapters=described,
        roles=tuple(roles),
        studies=tuple(studies),
    )
