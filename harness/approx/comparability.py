"""What a method's direction preconditions, so that its approximation figures compare like with like.

The track scores a direction ``d`` against the batch gradient ``g`` and the batch GGN ``G``
(``gamma = sqrt(d^T G d) / |d^T g|``) and against the exact damped natural gradient
``(G + lam I)^{-1} g``. Two kinds of method precondition something else:

* **a regularised objective.** A method with an ``l2_reg`` hyperparameter ``eta > 0`` (K-FAC's
  ``eta``, Martens & Grosse 2015, Sec. 6.1) preconditions the gradient of
  ``h = L + eta/2 |theta|^2``: its proposal is ``F^{-1} (g + eta theta)`` with the curvature
  ``F + eta I``. Its figures are computed for ``h``:
  ``gamma_h = sqrt(d^T G d + eta |d|^2) / |d^T (g + eta theta)|``, divided by SGD's
  ``gamma_h`` (the direction ``g + eta theta``), and its cosine to the exact natural gradient of
  ``h``, ``(G + (lam + eta) I)^{-1} (g + eta theta)``.
* **not a damped natural gradient at all.** AdamQLR's direction is Adam's diagonal rescaling of
  a first-moment average over past batches; its ``damping`` only damps the quadratic model that
  sets its step size. There is no natural gradient "at its damping" to compare the direction
  with, so its cosine and relative error to the exact NG are marked not comparable (stored as
  empty, with the reason); its ``gamma`` is the paper's indicator of any direction and stays.
"""

from __future__ import annotations

import math
from typing import Any

#: Methods whose cosine / relative error to the exact NG are not comparable, with the reason.
NG_NOT_COMPARABLE: dict[str, str] = {
    "adamqlr": (
        "its direction is Adam's diagonal rescaling of a gradient average, and its damping only "
        "damps the step-size model: there is no damped natural gradient of its own to compare with"
    ),
}


def l2_term(hparams: Any) -> float:
    """``eta`` of a method that preconditions ``g + eta theta`` (``l2_reg``); 0 when it has none."""
    value = getattr(hparams, "l2_reg", 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    value = float(value)
    return value if math.isfinite(value) and value > 0.0 else 0.0


def ng_not_comparable(method: str) -> str | None:
    """Why ``method``'s cosine to the exact NG is not comparable (``None``: it is)."""
    return NG_NOT_COMPARABLE.get(method)
