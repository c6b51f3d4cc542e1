"""Quasi-random samples of a search space: scrambled Halton or Sobol points mapped through
:func:`backends.spec.sample_distribution`, from seeds derived from the study (docs/tuning.md).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import qmc

from backends.spec import Distribution, sample_distribution
from harness.sweep.protocol import DEFAULT_SAMPLER, SAMPLERS

# --------------------------------------------------------------------------- the sampler


def derived_seed(*parts: Any) -> int:
    """A 63-bit seed from ``parts`` (stable across processes and Python versions)."""
    text = "|".join(str(p) for p in ("ngbench-study", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def unit_samples(n: int, d: int, *, sampler: str = DEFAULT_SAMPLER, seed: int = 0) -> np.ndarray:
    """``n`` points of a scrambled Halton or Sobol sequence in ``[0, 1)^d`` (shape ``(n, d)``).

    Sobol's balance properties hold for powers of two (scipy warns otherwise; the warning is
    silenced here because the trial count is the user's choice, and documented instead).
    """
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    if d == 0:
        return np.zeros((n, 0))
    rng = np.random.default_rng(seed)
    if sampler == "halton":
        return np.asarray(qmc.Halton(d, scramble=True, rng=rng).random(n))
    if sampler == "sobol":
        engine = qmc.Sobol(d, scramble=True, rng=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(engine.random(n))
    raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")


def sample_configs(
    space: Mapping[str, Distribution], n: int, *, sampler: str = DEFAULT_SAMPLER, seed: int = 0
) -> list[dict[str, Any]]:
    """``n`` quasi-random points of ``space`` (dimensions in name order, so the order in which a
    card lists its space does not change the points)."""
    names = sorted(space)
    u = unit_samples(n, len(names), sampler=sampler, seed=seed)
    return [{name: sample_distribution(space[name], float(u[i, j])) for j, name in enumerate(names)} for i in range(n)]


def config_hash(hparams: Mapping[str, Any]) -> str:
    """Hash of a resolved configuration: equal hyperparameters, equal hash."""
    text = json.dumps(dict(hparams), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
