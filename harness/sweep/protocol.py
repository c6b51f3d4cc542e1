"""The tuned track's part of the sweep file: the tuning :class:`Protocol` and search-space
distributions in their sweep-file spelling (``lr = { log_uniform = [1e-4, 1.0] }``); the
tuning itself is :mod:`harness.tuning` (docs/tuning.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import scipy

from backends.spec import Choice, Distribution, LogUniform, OneMinusLogUniform, Uniform

SAMPLERS: tuple[str, ...] = ("halton", "sobol")
DEFAULT_TRIALS = 8
DEFAULT_RERUN_SEEDS: tuple[int, ...] = (0, 1, 2)
#: Seed of every trial run: not a scoring seed, so the re-runs never see the seed they were
#: selected on (no winner's curse in the reported numbers).
DEFAULT_TRIAL_SEED = 1000
DEFAULT_SAMPLER = "halton"

ROLE_RUN, ROLE_TRIAL, ROLE_RERUN = "run", "trial", "rerun"


# --------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class Protocol:
    """The tuning protocol of a tuned sweep (the same for every study in it)."""

    trials: int = DEFAULT_TRIALS
    rerun_seeds: tuple[int, ...] = DEFAULT_RERUN_SEEDS
    trial_seed: int = DEFAULT_TRIAL_SEED
    sampler: str = DEFAULT_SAMPLER
    study_seed: int = 0

    def problems(self) -> list[str]:
        """Everything wrong with the protocol, as sweep-file messages."""
        out = []
        if self.trials < 1:
            out.append(f"trials must be a positive integer, got {self.trials!r}")
        if not self.rerun_seeds:
            out.append("rerun_seeds is empty: the chosen configuration would never be scored")
        if any(s < 0 for s in self.rerun_seeds):
            out.append(f"rerun_seeds must be non-negative, got {list(self.rerun_seeds)!r}")
        if len(set(self.rerun_seeds)) != len(self.rerun_seeds):
            out.append(f"rerun_seeds lists a seed more than once: {list(self.rerun_seeds)!r}")
        if self.trial_seed < 0:
            out.append(f"trial_seed must be non-negative, got {self.trial_seed!r}")
        if self.trial_seed in self.rerun_seeds:
            out.append(
                f"trial_seed {self.trial_seed} is also a re-run seed: the re-runs must be fresh seeds, "
                "not the one the configuration was selected on"
            )
        if self.sampler not in SAMPLERS:
            out.append(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.study_seed < 0:
            out.append(f"study_seed must be non-negative, got {self.study_seed!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "rerun_seeds": list(self.rerun_seeds),
            "trial_seed": self.trial_seed,
            "sampler": f"scrambled {self.sampler} (scipy.stats.qmc {scipy.__version__})",
            "sampler_name": self.sampler,
            "study_seed": self.study_seed,
            "selection": "reached target: fastest time-to-target; else best validation metric; failed trials last",
        }


# --------------------------------------------------------------------------- distributions

#: Sweep-file spelling of each distribution: ``lr = { log_uniform = [1e-4, 1.0] }``.
TOML_DISTRIBUTIONS: dict[str, type] = {
    "log_uniform": LogUniform,
    "uniform": Uniform,
    "one_minus_log_uniform": OneMinusLogUniform,
    "choice": Choice,
}


def distribution_problem(dist: Distribution) -> str | None:
    """Why ``dist`` cannot be sampled (``None`` if it can)."""
    if isinstance(dist, Choice):
        return None if dist.values else "a choice needs at least one value"
    low, high = dist.low, dist.high
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        return f"bounds must be numbers, got [{low!r}, {high!r}]"
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        return f"need finite low < high, got [{low!r}, {high!r}]"
    if isinstance(dist, (LogUniform, OneMinusLogUniform)) and low <= 0:
        return f"a log-uniform range needs low > 0, got [{low!r}, {high!r}]"
    return None


def distribution_from_toml(value: Any) -> Distribution:
    """``{log_uniform = [lo, hi]}``, ``{uniform = ...}``, ``{one_minus_log_uniform = ...}`` or
    ``{choice = [v, ...]}`` from a sweep file; raises ``ValueError`` with the reason."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"must be a one-entry table {{ {' | '.join(TOML_DISTRIBUTIONS)} = [...] }}, got {value!r}")
    ((kind, args),) = value.items()
    if kind not in TOML_DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {kind!r} (known: {', '.join(TOML_DISTRIBUTIONS)})")
    if not isinstance(args, list):
        raise ValueError(f"{kind} takes a list, got {args!r}")
    if kind == "choice":
        dist: Distribution = Choice(tuple(args))
    else:
        if len(args) != 2:
            raise ValueError(f"{kind} takes [low, high], got {args!r}")
        dist = TOML_DISTRIBUTIONS[kind](*args)
    problem = distribution_problem(dist)
    if problem:
        raise ValueError(f"{kind}: {problem}")
    return dist


def distribution_to_dict(dist: Distribution) -> dict[str, Any]:
    """The sweep-file spelling (recorded in the sweep's spec)."""
    for name, kind in TOML_DISTRIBUTIONS.items():
        if type(dist) is kind:
            return {name: list(dist.values) if isinstance(dist, Choice) else [dist.low, dist.high]}
    raise TypeError(f"unknown distribution {dist!r}")
