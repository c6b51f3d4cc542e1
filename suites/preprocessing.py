"""Deterministic splits and normalisation shared by the bundled-data suites."""

from __future__ import annotations

import numpy as np

from suites.spec import Dataset

#: The split never depends on a run's seed: one fixed permutation per suite.
SPLIT_SEED = 20241123


def split(x: np.ndarray, y: np.ndarray, val_fraction: float, *, seed: int = SPLIT_SEED) -> Dataset:
    """Fixed random train/validation split."""
    n = x.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(val_fraction * n)
    val, train = perm[:n_val], perm[n_val:]
    return Dataset(x[train], y[train], x[val], y[val])


def standardize(data: Dataset, *, targets: bool = False) -> Dataset:
    """Standardize inputs (and float targets) with the training split's mean and std."""

    def fit(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = a.mean(axis=0)
        sd = a.std(axis=0)
        return mu, np.where(sd > 0, sd, 1.0)

    mx, sx = fit(data.x_train)
    x_tr, x_va = (data.x_train - mx) / sx, (data.x_val - mx) / sx
    y_tr, y_va = data.y_train, data.y_val
    if targets:
        my, sy = fit(data.y_train)
        y_tr, y_va = (y_tr - my) / sy, (y_va - my) / sy
    return Dataset(x_tr, y_tr, x_va, y_va)


def as_classification(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def as_regression(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    return np.asarray(x, dtype=np.float64), y.reshape(y.shape[0], -1)
