"""kfac-jax 0.0.8 on jax >= 0.9.2: the compatibility shim for tests and benchmarks only.

kfac-jax 0.0.8 (the newest release) unpacks ``subfuns, params = primitive.get_bind_params(...)``
in ``tag_graph_matcher.eval_jaxpr_eqn``; from jax 0.9.2 on ``get_bind_params`` returns only the
parameter dict (``docs/environment.md``, "kfac-jax 0.0.8 and jax >= 0.9.2"). :func:`eval_jaxpr_eqn`
accepts both return shapes and binds the primitive as before; :func:`patched` installs it for the
duration of a ``with`` block. The product code never imports kfac-jax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def eval_jaxpr_eqn(eqn: Any, in_values: list[Any]) -> list[Any]:
    """kfac-jax's ``eval_jaxpr_eqn`` for both ``get_bind_params`` return shapes (jax < / >= 0.9.2)."""
    from jax._src import source_info_util

    bound = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    with source_info_util.user_context(eqn.source_info.traceback):
        out = eqn.primitive.bind(*subfuns, *in_values, **params)
    return out if isinstance(out, list) else [out]


@contextlib.contextmanager
def patched() -> Iterator[Any]:
    """``kfac_jax`` with the shim installed (restored on exit)."""
    import kfac_jax
    from kfac_jax._src import tag_graph_matcher

    original = tag_graph_matcher.eval_jaxpr_eqn
    tag_graph_matcher.eval_jaxpr_eqn = eval_jaxpr_eqn
    try:
        yield kfac_jax
    finally:
        tag_graph_matcher.eval_jaxpr_eqn = original
