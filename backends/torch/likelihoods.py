"""Closed forms of the two likelihoods (suites.spec): losses, logit gradients, output Hessians.

For logits ``z_n`` and target ``y_n``:

* ``softmax_ce``: ``l_n = logsumexp(z_n) - z_n[y_n]``, ``r_n = p_n - onehot(y_n)``,
  ``Q_n = diag(p_n) - p_n p_n^T``;
* ``mse``: ``l_n = 0.5 ||z_n - y_n||^2``, ``r_n = z_n - y_n``, ``Q_n = I``.

Labels sampled from the model use the batch's uniform noise: for ``softmax_ce`` the inverse CDF
of ``p_n``; for ``mse`` ``z_n + ndtri(u)`` (the unit-variance Gaussian).
"""

from __future__ import annotations

import torch
from torch import Tensor


def per_sample_loss(likelihood: str, z: Tensor, y: Tensor) -> Tensor:
    if likelihood == "softmax_ce":
        return torch.logsumexp(z, dim=-1) - z.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return 0.5 * (z - y).pow(2).sum(dim=-1)


def probabilities(z: Tensor) -> Tensor:
    """``p_n = softmax(z_n)``: computed once per oracle and passed as ``p`` to the functions
    below (each would otherwise compute the same softmax again)."""
    return torch.softmax(z, dim=-1)


def logit_grads(likelihood: str, z: Tensor, y: Tensor, p: Tensor | None = None) -> Tensor:
    """``r_n = d l_n / d z_n`` for every sample, shape ``(B, C)``; targets ``y`` of shape
    ``(k, B)`` (or ``(k, B, C)`` for ``mse``) give ``(k, B, C)``, one set per draw."""
    if likelihood == "softmax_ce":
        r = probabilities(z) if p is None else p
        if y.ndim + 1 > r.ndim:
            r = r.expand(*y.shape, r.shape[-1])
        # ``p + (-1)`` at the label by the scalar form of scatter: the same sums as a
        # ``scatter_add`` of a ``-1`` tensor, without building that tensor (three operators).
        return r.scatter(-1, y.unsqueeze(-1), -1.0, reduce="add")
    return z - y


def output_hessian_apply(likelihood: str, z: Tensor, u: Tensor, p: Tensor | None = None) -> Tensor:
    """``Q_n u_n`` for every sample (``u`` shaped like ``z``, optionally with leading axes)."""
    if likelihood == "softmax_ce":
        p = probabilities(z) if p is None else p
        return p * (u - (p * u).sum(dim=-1, keepdim=True))
    return u


def output_quadratic(likelihood: str, z: Tensor, u: Tensor, p: Tensor | None = None) -> Tensor:
    """``u_n^T Q_n u_n`` for every sample, shape ``(B,)``."""
    if likelihood == "softmax_ce":
        p = probabilities(z) if p is None else p
        weighted = p * u  # shared by both terms: ``(p * u) * u`` is what ``p * u * u`` computes
        pu = weighted.sum(dim=-1)
        return (weighted * u).sum(dim=-1) - pu * pu
    return (u * u).sum(dim=-1)


def sample_targets(likelihood: str, z: Tensor, noise: Tensor, p: Tensor | None = None) -> Tensor:
    """Targets drawn from the model's predictive distribution.

    ``noise`` is ``(k, B, C)`` uniform; returns ``(k, B)`` labels (``softmax_ce``) or
    ``(k, B, C)`` targets (``mse``).
    """
    if likelihood == "softmax_ce":
        cdf = (probabilities(z) if p is None else p).cumsum(dim=-1)
        u = noise[..., :1].to(cdf.dtype)
        # The count of a bool tensor is int64 already; clamped in place (a fresh tensor).
        return (cdf < u).sum(dim=-1).clamp_max_(z.shape[-1] - 1)
    return z.detach().unsqueeze(0) + torch.special.ndtri(noise.to(z.dtype))


def sampled_logit_grad(likelihood: str, z: Tensor, noise: Tensor, p: Tensor | None = None) -> Tensor:
    """``r^_n = dl(y^_n, z_n)/dz_n`` for one target per sample drawn with the noise row
    ``noise`` (``(B, C)``), shape ``(B, C)``: ``logit_grads(z, sample_targets(z, noise[None]))[0]``
    bit for bit, in fewer operators. ``softmax_ce``: the label, the number of ``cdf`` entries
    below ``u`` clipped at ``C - 1``, is the number of the first ``C - 1`` entries below ``u``
    (the last entry is the largest), which on the non-decreasing ``cdf`` (a cumulative sum of
    probabilities, whose first ``C - 1`` entries are the cumulative sum of the first ``C - 1``
    probabilities) is ``searchsorted``; then ``p + (-1)`` at the label. ``mse``:
    ``z - (z + ndtri(noise))``."""
    if likelihood == "softmax_ce":
        p = probabilities(z) if p is None else p
        head = p[:, :-1].cumsum(dim=-1)  # the cdf without its last entry
        u = noise[:, :1].to(head.dtype).contiguous()  # a copy in either dtype: searchsorted reads it contiguous
        return p.scatter(-1, torch.searchsorted(head, u), -1.0, reduce="add")
    return z - (z.detach() + torch.special.ndtri(noise.to(z.dtype)))


def metrics(likelihood: str, z: Tensor, y: Tensor) -> dict[str, float]:
    """Mean loss plus accuracy (classification) or RMSE (regression), as Python floats."""
    loss = per_sample_loss(likelihood, z, y).mean()
    out = {"loss": float(loss)}
    if likelihood == "softmax_ce":
        # A count over n, exact in Python: a float32 mean turns 784/1000 into 0.78399998, which
        # misses a frozen target of 0.784 (JAX divides the count the same way).
        out["accuracy"] = int((z.argmax(dim=-1) == y).sum()) / y.shape[0]
    else:
        out["rmse"] = float((z - y).pow(2).mean().sqrt())
    return out
