"""Learning-rate schedules shared by the adapters of both backends (pure Python, no framework).

The iEF paper trains its EF and SF baselines with a *normalised update and a linearly decaying
learning rate* (Wu et al., 2024, arXiv 2406.06420, Sec. 7 and App. H.2: "normalised update"
with start LR 0.01, linear decay to zero). In the released code (``iEFOptimizer_GP.py``,
``norm_update=True``; ``transformers.get_linear_schedule_with_warmup`` with no warm-up) the
update at step ``t`` (0-based) of a ``T``-step run is::

    theta_{t+1} = theta_t - lr_t * d_t / (||d_t|| + 1e-12),     lr_t = lr_0 * max(0, (T - t) / T)

so the step *length* is ``lr_t`` whatever the scale of the direction ``d_t``. ``T`` is the run's
step budget (``problem.step_budget``, set by the harness, like AlgoPerf's ``step_hint``).

The functions below take plain numbers or 0-d framework arrays (torch tensors, traced JAX
values): they use only arithmetic and ``abs``, never ``max``/``min`` or branches on values,
so a jitted JAX step can call them with a traced step counter. :func:`scheduled_update` applies
the schedule to a flat direction with the injected array operations
(:class:`backends.array_ops.ArrayOps`) for the norm.
"""

from __future__ import annotations

from typing import Any, Literal

from backends.array_ops import Array, ArrayOps

#: Added to the direction norm before normalising (the iEF code's constant).
NORMALISE_EPS = 1e-12

Decay = Literal["constant", "linear"]
DECAYS: tuple[str, ...] = ("constant", "linear")


def _relu(x: Any) -> Any:
    """``max(x, 0)`` with arithmetic only (works on floats and traced arrays)."""
    return 0.5 * (x + abs(x))


def linear_decay_factor(step: Any, total_steps: int) -> Any:
    """``max(0, (T - t) / T)`` for step ``t`` (0-based) of ``T``; transformers' linear schedule."""
    total = max(int(total_steps), 1)
    return _relu((total - step) / total)


def scheduled_lr(base_lr: float, decay: str, step: Any, total_steps: int) -> Any:
    """The learning rate of step ``step``: ``base_lr`` (``constant``) or linearly decayed."""
    if decay == "constant":
        return base_lr
    if decay == "linear":
        return base_lr * linear_decay_factor(step, total_steps)
    raise ValueError(f"unknown learning-rate decay {decay!r} (known: {', '.join(DECAYS)})")


def step_size(lr: Any, direction_norm: Any, normalise: bool) -> Any:
    """The scalar ``s`` of the update ``theta - s * d``.

    ``lr / (||d|| + 1e-12)`` with a normalised update (the step length is then ``lr``), else
    ``lr``. Reporting ``s`` as ``stats["lr"]`` keeps ``step_along_direction`` true.
    """
    if normalise:
        return lr / (direction_norm + NORMALISE_EPS)
    return lr


def scheduled_update(
    ops: ArrayOps, hp: Any, params: Array, direction: Array, step: Any, total_steps: int
) -> tuple[Array, dict[str, Any]]:
    """``theta - s d`` with ``s = step_size(scheduled_lr(...), ||d||, normalise)`` for step
    ``step`` (0-based, a number or a 0-d array) of ``total_steps``; ``hp`` has ``lr``,
    ``lr_decay`` and ``normalise_update``.

    Returns the new parameters and the stats ``lr`` (``s``, so that ``step_along_direction``
    holds), ``lr_schedule`` (``lr_t``), ``direction_norm`` and ``update_norm``.
    """
    lr_t = scheduled_lr(hp.lr, hp.lr_decay, step, total_steps)
    norm = ops.norm(direction)
    size = step_size(lr_t, norm, hp.normalise_update)
    stats = {"lr": size, "lr_schedule": lr_t, "direction_norm": norm, "update_norm": size * norm}
    return params - size * direction, stats
