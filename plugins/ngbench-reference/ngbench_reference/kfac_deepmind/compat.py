"""kfac-jax 0.0.8 on jax >= 0.9.2: the one compatibility patch, applied when the row is loaded.

kfac-jax 0.0.8 (the newest release) unpacks ``subfuns, params = primitive.get_bind_params(...)``
in ``kfac_jax._src.tag_graph_matcher.eval_jaxpr_eqn``; from jax 0.9.2 on ``get_bind_params``
returns only the parameter dict, so tracing any tagged loss fails with "too many values to unpack".
:func:`eval_jaxpr_eqn` accepts both return shapes and binds the primitive as kfac-jax does.
:func:`install` puts it in place (idempotent; the ``kfac-jax`` adapter module calls it on import,
so nothing else in a process that never loads this row is touched); :func:`patched` installs it
for a ``with`` block and restores kfac-jax's own function afterwards (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import kfac_jax
from jax._src import source_info_util
from kfac_jax._src import tag_graph_matcher

__all__ = ["eval_jaxpr_eqn", "install", "needs_patch", "patched"]


def eval_jaxpr_eqn(eqn: Any, in_values: list[Any]) -> list[Any]:
    """kfac-jax's ``eval_jaxpr_eqn`` for both ``get_bind_params`` return shapes (jax < / >= 0.9.2)."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    with source_info_util.user_context(eqn.source_info.traceback):
        out = eqn.primitive.bind(*subfuns, *in_values, **params)
    return out if isinstance(out, list) else [out]


def needs_patch() -> bool:
    """Whether this jax returns only the params from ``get_bind_params`` (jax >= 0.9.2)."""
    import jax

    return not isinstance(jax.lax.add_p.get_bind_params({}), tuple)


def install() -> Any:
    """Install :func:`eval_jaxpr_eqn` into kfac-jax (no-op when already there); returns ``kfac_jax``."""
    tag_graph_matcher.eval_jaxpr_eqn = eval_jaxpr_eqn
    return kfac_jax


@contextlib.contextmanager
def patched() -> Iterator[Any]:
    """``kfac_jax`` with the patch installed for the block, then kfac-jax's previous function back."""
    original = tag_graph_matcher.eval_jaxpr_eqn
    tag_graph_matcher.eval_jaxpr_eqn = eval_jaxpr_eqn
    try:
        yield kfac_jax
    finally:
        tag_graph_matcher.eval_jaxpr_eqn = original
