"""Tuning studies: the searched space of one (suite, optimizer, backend) and its trials."""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backends.spec import Choice, Distribution, LogUniform, OneMinusLogUniform, Uniform
from harness import external
from harness.registry import get_adapter
from harness.sweep.protocol import Protocol, distribution_to_dict
from harness.tuning.sampling import config_hash, derived_seed, sample_configs

_RANGE = re.compile(r"^(?P<kind>log-uniform|uniform|1 − log-uniform) \[(?P<low>[^,]+), (?P<high>[^\]]+)\]$")


def distribution_from_description(text: str) -> Distribution:
    """Invert :func:`harness.external.describe_distribution` (how a worker describes a third-party
    adapter's space to this process). Bounds were printed with ``%g`` (six significant digits)."""
    m = _RANGE.match(text.strip())
    if m:
        kinds: dict[str, type[LogUniform | Uniform | OneMinusLogUniform]] = {
            "log-uniform": LogUniform,
            "uniform": Uniform,
            "1 − log-uniform": OneMinusLogUniform,
        }
        return kinds[m["kind"]](float(m["low"]), float(m["high"]))
    if text.startswith("one of "):
        values = ast.literal_eval("(" + text[len("one of ") :] + ",)")
        return Choice(tuple(values))
    raise ValueError(f"cannot read the search-space entry {text!r}")


# --------------------------------------------------------------------------- studies


@dataclass(frozen=True)
class Trial:
    """One trial of a study: its index, the overrides it runs with, its resolved configuration."""

    index: int
    point: dict[str, Any]
    resolved: dict[str, Any]
    config_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.index, "point": dict(self.point), "config_hash": self.config_hash}


@dataclass(frozen=True)
class Study:
    """The tuning of one optimizer on one suite and backend."""

    suite: str
    optimizer: str
    backend: str
    protocol: Protocol
    space: dict[str, Distribution]
    fixed: dict[str, Any]
    preset: str | None
    trials: tuple[Trial, ...]
    #: Template of every run of the study (budgets, dtype, tag ...); seed and hparams vary.
    template: Any
    #: Why the study has fewer trials than the protocol asks (an empty search space).
    note: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.optimizer, self.backend)

    @property
    def label(self) -> str:
        return f"{self.suite} / {self.optimizer} ({self.backend})"

    def trial_spec(self, trial: Trial) -> Any:
        return dataclasses.replace(self.template, seed=self.protocol.trial_seed, hparams=dict(trial.point))

    def rerun_specs(self, trial: Trial) -> list[Any]:
        point = dict(trial.point)
        return [dataclasses.replace(self.template, seed=s, hparams=point) for s in self.protocol.rerun_seeds]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "optimizer": self.optimizer,
            "backend": self.backend,
            "space": {k: distribution_to_dict(v) for k, v in sorted(self.space.items())},
            "fixed": dict(self.fixed),
            "preset": self.preset,
            "trials": [t.to_dict() for t in self.trials],
            "note": self.note,
        }


def adapter_space(optimizer: str, backend: str, info: Any) -> dict[str, Distribution]:
    """The adapter's declared search space: the class's own objects for ngbench's adapters, the
    worker's description read back for third-party ones (``harness.external``)."""
    if external.is_builtin(optimizer, backend):
        return dict(get_adapter(optimizer, backend).search_space)
    return {name: distribution_from_description(text) for name, text in info.search_space.items()}


def effective_space(
    declared: Mapping[str, Distribution], fixed: Mapping[str, Any], overrides: Mapping[str, Distribution]
) -> dict[str, Distribution]:
    """The declared space with the sweep's overrides applied and its fixed hyperparameters removed."""
    space = {**dict(declared), **dict(overrides)}
    return {k: v for k, v in space.items() if k not in fixed}


def study_points(
    suite: str, optimizer: str, space: Mapping[str, Distribution], fixed: Mapping[str, Any], protocol: Protocol
) -> list[dict[str, Any]]:
    """The overrides of each trial of a study: the fixed ones, then the sampled values. An empty
    space gives a single trial (its defaults): more would repeat the same configuration."""
    n = protocol.trials if space else 1
    seed = derived_seed(suite, optimizer, protocol.study_seed)
    return [{**dict(fixed), **p} for p in sample_configs(space, n, sampler=protocol.sampler, seed=seed)]


def plan_study(
    suite: str,
    optimizer: str,
    backend: str,
    *,
    protocol: Protocol,
    space: Mapping[str, Distribution],
    fixed: Mapping[str, Any],
    preset: str | None,
    template: Any,
    resolve: Callable[[Mapping[str, Any], str | None], dict[str, Any]],
) -> Study:
    """The study's trials (:func:`study_points`); ``resolve(point, preset)`` validates a point
    (raising the adapter's ``HyperparameterError``) and returns its resolved hyperparameters."""
    note = "" if space else "no search space: one trial with the defaults"
    trials = []
    for i, point in enumerate(study_points(suite, optimizer, space, fixed, protocol)):
        resolved = resolve(point, preset)
        trials.append(Trial(index=i, point=point, resolved=resolved, config_hash=config_hash(resolved)))
    return Study(
        suite=suite,
        optimizer=optimizer,
        backend=backend,
        protocol=protocol,
        space=dict(space),
        fixed=dict(fixed),
        preset=preset,
        trials=tuple(trials),
        template=template,
        note=note,
    )
