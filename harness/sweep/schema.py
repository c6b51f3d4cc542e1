"""What a sweep file holds once validated (:class:`SweepConfig`), the keys it may use, and what it
expands to (:class:`SweepPlan`, each run with its :class:`RunRole`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.methods import BUILTIN_METHODS, card
from backends.spec import BACKENDS, Distribution
from harness import external
from harness.runner import RunSpec
from harness.sweep.protocol import Protocol, distribution_to_dict

#: Per-run wall-clock limit when the sweep file sets none (a hung adapter must not hang a nightly).
DEFAULT_TIMEOUT_S = 3600.0
TRACKS: tuple[str, ...] = ("untuned", "tuned")
DTYPES: tuple[str, ...] = ("float32", "float64")

#: Top-level keys of a sweep file and what they hold (also the reference in the docs).
KEYS: dict[str, str] = {
    "name": "sweep name (string, required)",
    "suites": "suite names (list of strings, required)",
    "optimizers": "optimizer names or module:Class references (list of strings, required)",
    "backends": 'backends (list of strings, default ["torch"])',
    "seeds": "seeds (list of non-negative integers, or an integer n for 0..n-1; default [0])",
    "steps": "step budget for every suite (positive integer)",
    "time_budget_s": "steady-state time budget for every suite, seconds (positive number)",
    "timeout_s": f"wall-clock limit per run, seconds (positive number; default {DEFAULT_TIMEOUT_S:g})",
    "eval_every": "evaluation period in steps (positive integer)",
    "dtype": "float32 or float64 (default float32)",
    "stop_at_target": "stop a run when it reaches the suite's target (boolean, default true)",
    "torch_compile": "compile the torch runs' steps with torch.compile (boolean, default false; "
    "ranked as backend torch-compiled)",
    "devices": 'devices: "cpu", "auto", or a list of GPU indices / "cuda:N" strings',
    "workers": "parallel worker processes on CPU (positive integer)",
    "track": "ranking track: untuned or tuned (default untuned)",
    "tag": "tag stored with every run (string)",
    "hparams": "per-optimizer hyperparameter overrides: [hparams.<optimizer>] key = value | [values]",
    "presets": "per-optimizer hyperparameter preset: [presets] <optimizer> = name",
    "budgets": "per-suite budget overrides: [budgets.<suite>] steps = N, time_budget_s = S",
    "trials": "tuned track: quasi-random trials per (suite, optimizer, backend) study (positive integer)",
    "rerun_seeds": "tuned track: seeds the chosen configuration is re-run on (K for 0..K-1, or a list; default 3)",
    "trial_seed": "tuned track: the seed every trial runs on, not a re-run seed (default 1000)",
    "sampler": "tuned track: halton or sobol (default halton)",
    "study_seed": "tuned track: scrambling seed of the sampler (non-negative integer, default 0)",
    "search": "tuned track: search-space overrides: [search.<optimizer>] name = { log_uniform = [lo, hi] } "
    "(or uniform, one_minus_log_uniform, choice = [values])",
    "step_cost": "nightly: measure the step-cost table after the runs: true, or a table "
    "[step_cost] adapters, problems, backends, rounds, warmup, threads, timeout_s",
}
BUDGET_KEYS: tuple[str, ...] = ("steps", "time_budget_s")
#: Keys that only a tuned sweep (one with ``trials``) may use.
TUNING_KEYS: tuple[str, ...] = ("rerun_seeds", "trial_seed", "sampler", "study_seed", "search")


#: The step-cost table's problems (``benchmarks.step_cost.PROBLEMS``; harness does not import
#: ``benchmarks``, and a test keeps the two lists equal).
STEP_COST_PROBLEMS: tuple[str, ...] = ("digits-mlp", "digits-wide")
#: Keys of a sweep file's ``[step_cost]`` table and what they hold.
STEP_COST_KEYS: dict[str, str] = {
    "adapters": "adapters, or adapter:preset (list of strings; default every adapter of each backend)",
    "problems": f"problems (list of {', '.join(STEP_COST_PROBLEMS)}; default both)",
    "backends": "backends (list of strings; default the backends the sweep's runs use)",
    "rounds": "timed rounds (positive integer, default 100)",
    "warmup": "warm-up rounds, not timed (non-negative integer, default 10)",
    "threads": "intra-op threads of the measuring process (positive integer, default 1)",
    "timeout_s": "wall-clock limit per backend's measurement, seconds (positive number, default 3600)",
}


@dataclass(frozen=True)
class StepCostSettings:
    """What a nightly's step-cost measurement covers (``[step_cost]`` of a sweep file; see
    :mod:`harness.nightly_step_cost`). ``adapters=None``: every adapter of each backend, as the
    table measures by default; ``backends=None``: the backends the sweep's runs use."""

    adapters: tuple[str, ...] | None = None
    problems: tuple[str, ...] = STEP_COST_PROBLEMS
    backends: tuple[str, ...] | None = None
    rounds: int = 100
    warmup: int = 10
    threads: int = 1
    timeout_s: float = 3600.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapters": list(self.adapters) if self.adapters is not None else None,
            "problems": list(self.problems),
            "backends": list(self.backends) if self.backends is not None else None,
            "rounds": self.rounds,
            "warmup": self.warmup,
            "threads": self.threads,
            "timeout_s": self.timeout_s,
        }


def _names(table: Mapping[str, Any], key: str, problems: list[str]) -> tuple[str, ...] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        problems.append(f"step_cost.{key} must be a non-empty list of names, got {value!r}")
        return None
    return tuple(dict.fromkeys(v.strip() for v in value))


def _number(table: Mapping[str, Any], key: str, default: Any, kind: str, problems: list[str]) -> Any:
    """``table[key]`` (else ``default``) if it is a ``kind``: ``positive integer``,
    ``non-negative integer`` or ``positive number``."""
    value = table.get(key, default)
    types = (int, float) if kind == "positive number" else int
    fits = isinstance(value, types) and not isinstance(value, bool) and math.isfinite(value)
    if not (fits and (value >= 0 if kind.startswith("non-negative") else value > 0)):
        problems.append(f"step_cost.{key} must be a {kind}, got {value!r}")
        return default
    return value


def _adapter_problem(name: str) -> str | None:
    """Why ``name`` (``adapter`` or ``adapter:preset``) cannot be measured, or ``None``."""
    adapter, _, preset = name.partition(":")
    plugins = {n for b in BACKENDS for n in external.entry_point_names(b)}
    if adapter in BUILTIN_METHODS:
        presets = card(adapter).presets
        if preset and preset not in presets:
            return f"step_cost.adapters: {adapter}: unknown preset {preset!r} (known: {', '.join(presets) or 'none'})"
        return None
    if adapter in plugins:
        return None
    known = ", ".join([*BUILTIN_METHODS, *sorted(plugins)])
    return f"step_cost.adapters: unknown adapter {adapter!r} (known: {known}; a preset is adapter:preset)"


def step_cost_settings(value: Any) -> tuple[StepCostSettings | None, list[str]]:
    """The ``step_cost`` key of a sweep file (``true``, ``false`` or a table) as settings, with
    every problem found (one line each); ``None`` when the nightly measures no table."""
    if isinstance(value, bool):
        return (StepCostSettings() if value else None), []
    if not isinstance(value, Mapping):
        return None, [f"step_cost must be true, false or a table ([step_cost] rounds = 100, ...), got {value!r}"]
    problems = [
        f"step_cost: unknown key {k!r} (known: {', '.join(STEP_COST_KEYS)})" for k in value if k not in STEP_COST_KEYS
    ]
    adapters = _names(value, "adapters", problems)
    for name in adapters or ():
        if (problem := _adapter_problem(name)) is not None:
            problems.append(problem)
    chosen_problems = _names(value, "problems", problems)
    for name in chosen_problems or ():
        if name not in STEP_COST_PROBLEMS:
            problems.append(f"step_cost.problems: unknown problem {name!r} (known: {', '.join(STEP_COST_PROBLEMS)})")
    backends = _names(value, "backends", problems)
    for name in backends or ():
        if name not in BACKENDS:
            problems.append(f"step_cost.backends: unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    default = StepCostSettings()
    settings = StepCostSettings(
        adapters=adapters,
        problems=chosen_problems or default.problems,
        backends=backends,
        rounds=_number(value, "rounds", default.rounds, "positive integer", problems),
        warmup=_number(value, "warmup", default.warmup, "non-negative integer", problems),
        threads=_number(value, "threads", default.threads, "positive integer", problems),
        timeout_s=float(_number(value, "timeout_s", default.timeout_s, "positive number", problems)),
    )
    return (None if problems else settings), problems


@dataclass(frozen=True)
class RunRole:
    """How a planned run is stored: ``run``; or ``trial``/``rerun`` of a tuning study, with the
    trial index and the configuration's hash (:mod:`harness.tuning`)."""

    role: str = "run"
    trial: int | None = None
    config_hash: str | None = None


PLAIN_RUN = RunRole()


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep file, normalised (every optional field has its effective value)."""

    name: str
    suites: tuple[str, ...]
    optimizers: tuple[str, ...]
    backends: tuple[str, ...] = ("torch",)
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    time_budget_s: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    eval_every: int | None = None
    dtype: str = "float32"
    stop_at_target: bool = True
    #: The torch runs compile their step (``RunSpec.torch_compile``); other backends are unaffected.
    torch_compile: bool = False
    devices: tuple[str, ...] | None = None
    workers: int | None = None
    track: str = "untuned"
    tag: str | None = None
    hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    presets: Mapping[str, str] = field(default_factory=dict)
    budgets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The tuning protocol (a tuned sweep, i.e. one with ``trials``), else ``None``.
    tuning: Protocol | None = None
    #: Per-optimizer search-space overrides of a tuned sweep.
    search: Mapping[str, Mapping[str, Distribution]] = field(default_factory=dict)
    #: What ``ngbench nightly`` measures of the step-cost table after the runs (``None``: nothing).
    step_cost: StepCostSettings | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as the sweep row's ``spec``)."""
        tuning = None
        if self.tuning is not None:
            tuning = {
                **self.tuning.to_dict(),
                "search": {
                    opt: {k: distribution_to_dict(d) for k, d in space.items()} for opt, space in self.search.items()
                },
            }
        return {
            "name": self.name,
            "suites": list(self.suites),
            "optimizers": list(self.optimizers),
            "backends": list(self.backends),
            "seeds": list(self.seeds),
            "steps": self.steps,
            "time_budget_s": self.time_budget_s,
            "timeout_s": self.timeout_s,
            "eval_every": self.eval_every,
            "dtype": self.dtype,
            "stop_at_target": self.stop_at_target,
            "torch_compile": self.torch_compile,
            "devices": list(self.devices) if self.devices is not None else None,
            "workers": self.workers,
            "track": self.track,
            "tag": self.tag,
            "hparams": {k: dict(v) for k, v in self.hparams.items()},
            "presets": dict(self.presets),
            "budgets": {k: dict(v) for k, v in self.budgets.items()},
            "tuning": tuning,
            "step_cost": self.step_cost.to_dict() if self.step_cost is not None else None,
        }


@dataclass(frozen=True)
class SweepPlan:
    """A sweep expanded into run specs, in execution order, with the combinations it skipped."""

    config: SweepConfig
    specs: tuple[RunSpec, ...]
    skipped: tuple[str, ...] = ()
    source: str | None = None
    #: ``(optimizer, backend) -> description`` of every adapter the plan uses.
    adapters: Mapping[tuple[str, str], external.AdapterInfo] = field(default_factory=dict)
    #: How each run is stored (aligned with ``specs``; empty: every run is a plain ``run``).
    roles: tuple[RunRole, ...] = ()
    #: The tuning studies of a tuned sweep (:class:`harness.tuning.Study`; ``specs`` are then their trials).
    studies: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def tuned(self) -> bool:
        return self.config.tuning is not None

    def role_of(self, index: int) -> RunRole:
        """The role of ``specs[index]``."""
        return self.roles[index] if self.roles else PLAIN_RUN

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends that at least one run uses, in file order."""
        used = {s.backend for s in self.specs}
        return tuple(b for b in self.config.backends if b in used)

    def to_dict(self) -> dict[str, Any]:
        out = self.config.to_dict()
        out["runs"] = len(self.specs)
        out["skipped"] = list(self.skipped)
        if self.source:
            out["source"] = self.source
        if self.studies:
            out["reruns_planned"] = sum(len(s.protocol.rerun_seeds) for s in self.studies)
            out["studies"] = [s.to_dict() for s in self.studies]
        return out
