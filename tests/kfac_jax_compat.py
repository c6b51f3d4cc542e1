"""kfac-jax 0.0.8 on jax >= 0.9.2: the tests' handle on the ``kfac-jax`` reference row's patch.

The patch lives with the adapter that needs it (``plugins/ngbench-reference/ngbench_reference/
kfac_deepmind/compat.py``; ``docs/environment.md``, "kfac-jax 0.0.8 and jax >= 0.9.2"). The test
suite does not install the plug-in distribution, so this module loads that file by path and
re-exports :func:`eval_jaxpr_eqn` and :func:`patched` (the patch for a ``with`` block, restored on
exit). There is one copy of the patch: the product's.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

PATH = Path(__file__).resolve().parents[1] / "plugins/ngbench-reference/ngbench_reference/kfac_deepmind/compat.py"


def _load() -> Any:
    name = "_ngbench_reference_kfac_jax_compat"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def eval_jaxpr_eqn(eqn: Any, in_values: list[Any]) -> list[Any]:
    """The row's ``eval_jaxpr_eqn`` (both ``get_bind_params`` return shapes)."""
    return _load().eval_jaxpr_eqn(eqn, in_values)


def patched() -> Any:
    """``with patched() as kfac_jax:``: the row's patch installed for the block."""
    return _load().patched()
