"""Closed forms of the two likelihoods (suites.spec) in JAX: losses, logit grads, output Hessians.

The same formulas as ``backends/torch/likelihoods.py``, written once more for ``jax.numpy``
(the backends never import each other). For logits ``z_n`` and target ``y_n``:

* ``softmax_ce``: ``l_n = logsumexp(z_n) - z_n[y_n]``, ``r_n = p_n - onehot(y_n)``,
  ``Q_n = diag(p_n) - p_n p_n^T``;
* ``mse``: ``l_n = 0.5 ||z_n - y_n||^2``, ``r_n = z_n - y_n``, ``Q_n = I``.

Labels sampled from the model use the batch's uniform noise ``u``: for ``softmax_ce`` the
inverse CDF of ``p_n`` (the number of cumulative probabilities below ``u[..., 0]``); for ``mse``
``z_n + ndtri(u)`` (the unit-variance Gaussian). Same noise, same labels as the torch backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

Array = jax.Array


def per_sample_loss(likelihood: str, z: Array, y: Array) -> Array:
    """``l_n`` for every sample, shape ``(B,)``."""
    if likelihood == "softmax_ce":
        picked = jnp.take_along_axis(z, y[..., None].astype(jnp.int32), axis=-1)[..., 0]
        return jax.nn.logsumexp(z, axis=-1) - picked
    return 0.5 * jnp.sum((z - y) ** 2, axis=-1)


def logit_grads(likelihood: str, z: Array, y: Array) -> Array:
    """``r_n = d l_n / d z_n`` for every sample, shape ``(B, C)``."""
    if likelihood == "softmax_ce":
        return jax.nn.softmax(z, axis=-1) - jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
    return z - y


def output_hessian_apply(likelihood: str, z: Array, u: Array) -> Array:
    """``Q_n u_n`` for every sample (``u`` shaped like ``z``, optionally with leading axes)."""
    if likelihood == "softmax_ce":
        p = jax.nn.softmax(z, axis=-1)
        return p * (u - jnp.sum(p * u, axis=-1, keepdims=True))
    return u


def output_quadratic(likelihood: str, z: Array, u: Array) -> Array:
    """``u_n^T Q_n u_n`` for every sample, shape ``(B,)``."""
    if likelihood == "softmax_ce":
        p = jax.nn.softmax(z, axis=-1)
        pu = jnp.sum(p * u, axis=-1)
        return jnp.sum(p * u * u, axis=-1) - pu * pu
    return jnp.sum(u * u, axis=-1)


def sample_targets(likelihood: str, z: Array, noise: Array) -> Array:
    """Targets drawn from the model's predictive distribution.

    ``noise`` is ``(k, B, C)`` uniform; returns ``(k, B)`` int64 labels (``softmax_ce``) or
    ``(k, B, C)`` targets (``mse``). The model output is treated as a constant.
    """
    z = jax.lax.stop_gradient(z)
    if likelihood == "softmax_ce":
        cdf = jnp.cumsum(jax.nn.softmax(z, axis=-1), axis=-1)
        u = noise[..., 0, None].astype(cdf.dtype)
        labels = jnp.sum(cdf < u, axis=-1)
        return jnp.minimum(labels, z.shape[-1] - 1).astype(jnp.int64)
    return z[None] + ndtri(noise.astype(z.dtype))


def metric_sums(likelihood: str, z: Array, y: Array) -> dict[str, Array]:
    """Sums over a chunk of samples that :func:`finish_metrics` turns into means.

    ``loss``: sum of ``l_n``; ``correct``: number of argmax hits (classification);
    ``sq_error``: sum of squared errors over samples and outputs (regression).
    """
    out = {"loss": jnp.sum(per_sample_loss(likelihood, z, y))}
    if likelihood == "softmax_ce":
        out["correct"] = jnp.sum(jnp.argmax(z, axis=-1) == y)
    else:
        out["sq_error"] = jnp.sum((z - y) ** 2)
    return out


def finish_metrics(likelihood: str, sums: dict[str, float], n: int, num_outputs: int) -> dict[str, float]:
    """Mean loss plus accuracy or RMSE (``sqrt`` of the mean over samples and outputs)."""
    out = {"loss": sums["loss"] / n}
    if likelihood == "softmax_ce":
        out["accuracy"] = sums["correct"] / n
    else:
        out["rmse"] = float(sums["sq_error"] / (n * num_outputs)) ** 0.5
    return out
