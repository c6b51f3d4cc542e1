"""The random streams of a run and the pure functions that draw from them.

Every backend draws the same numbers from the same seed: initial parameters
(:data:`STREAM_INIT`, drawn by :meth:`suites.layers.ModelSpec.init_params`), the data order
(:func:`batch_indices`) and the per-step noise that becomes sampled labels (:func:`batch_noise`).
Every consumer of randomness names its stream, so adding a consumer never shifts the numbers
another one sees.
"""

from __future__ import annotations

import numpy as np

#: Independent random streams derived from a run's master seed.
STREAM_INIT = 0
STREAM_DATA_ORDER = 1
STREAM_NOISE = 2

#: Rows of per-step uniform noise shipped with every batch (label sampling for SF, K-FAC).
NOISE_ROWS = 4

#: The ``train_*`` evaluation metrics use at most this many fixed training samples (default;
#: a suite may use fewer, ``Suite.train_eval_samples``).
TRAIN_EVAL_SAMPLES = 4096


def seed_sequence(seed: int, stream: int, *extra: int) -> np.random.Generator:
    """A generator for one named stream of one run (and optionally one epoch or step)."""
    return np.random.default_rng([int(seed), int(stream), *map(int, extra)])


def batch_indices(n_train: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the training samples used at ``step`` (0-based).

    Each epoch is a fresh permutation drawn from ``(seed, STREAM_DATA_ORDER, epoch)``; the last
    incomplete batch of an epoch is dropped, so every batch has exactly ``batch_size`` samples.
    """
    if batch_size > n_train:
        raise ValueError(f"batch size {batch_size} exceeds the {n_train} training samples")
    per_epoch = n_train // batch_size
    epoch, pos = divmod(int(step), per_epoch)
    perm = _epoch_permutation(n_train, int(seed), epoch)
    return perm[pos * batch_size : (pos + 1) * batch_size]


_PERM_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    perm = _PERM_CACHE.get(key)
    if perm is None:
        if len(_PERM_CACHE) > 64:
            _PERM_CACHE.clear()
        perm = seed_sequence(seed, STREAM_DATA_ORDER, epoch).permutation(n)
        _PERM_CACHE[key] = perm
    return perm


def batch_noise(seed: int, step: int, batch_size: int, num_outputs: int) -> np.ndarray:
    """Uniform(0, 1) noise of shape ``(NOISE_ROWS, batch_size, num_outputs)`` for ``step``.

    Backends turn it into sampled labels (inverse CDF of the model's softmax) or Gaussian
    targets (``ndtri``), so both frameworks draw the same labels from the same seed.
    """
    rng = seed_sequence(seed, STREAM_NOISE, step)
    return rng.random((NOISE_ROWS, batch_size, num_outputs))


def train_eval_indices(n_train: int, max_samples: int = TRAIN_EVAL_SAMPLES) -> np.ndarray:
    """The fixed, sorted training subset every backend evaluates ``train_*`` metrics on."""
    n_eval = min(n_train, max_samples)
    return np.sort(np.random.default_rng(0).permutation(n_train)[:n_eval])
