"""What the run loop checks of every step's outputs, and how a failure reads.

An adapter's ``step`` returns ``(params, state, stats)``: ``params`` a flat array of the
parameters' shape (``(P,)``), dtype and device, ``stats`` a mapping with the batch ``loss``
(``backends/spec.py``). A step that breaks this would fail one step later, deep inside the
oracle, with a message about a reshape; the run loop checks the outputs after every step
(outside the timed region: attribute reads, no device synchronisation) and stops the run with
the same one-line message ``ngbench check-adapter`` gives.

Errors are stored as their traceback, without JAX's note that it filtered its internal frames:
that note would otherwise be the last line, where readers (and one-line summaries) look for the
exception itself.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Mapping
from typing import Any

_JAX_FILTER_NOTE = re.compile(r"\n?-{20}\nFor simplicity, JAX has removed its internal frames[^\n]*\n*")


class StepContractError(Exception):
    """A step returned something the adapter contract does not allow (a one-line message)."""


def params_problem(problem: Any, params: Any, like: Any, what: str) -> str | None:
    """Why ``params`` is not a flat array like the parameters ``like`` (``None``: it is)."""
    if not (hasattr(params, "shape") and hasattr(params, "dtype")):
        return f"{what}: a {type(params).__name__}, not a {problem.backend} array"
    if tuple(params.shape) != (problem.num_params,):
        return f"{what}: shape {tuple(params.shape)}, expected the flat ({problem.num_params},)"
    if params.dtype != like.dtype:
        return f"{what}: dtype {params.dtype}, the parameters' is {like.dtype}"
    if problem.backend == "torch" and params.device != like.device:
        return f"{what}: on {params.device}, the parameters on {like.device}"
    return None


def check_step_outputs(problem: Any, step: int, params: Any, like: Any, stats: Any) -> None:
    """Raise :class:`StepContractError` unless ``params`` is flat and like ``like`` and ``stats``
    is a mapping with a ``loss``."""
    reason = params_problem(problem, params, like, f"step {step} returned parameters")
    if reason is not None:
        raise StepContractError(reason)
    if not isinstance(stats, Mapping):
        raise StepContractError(f"step {step} returned stats of type {type(stats).__name__}, not a dict")
    if "loss" not in stats:
        raise StepContractError(
            f"step {step}: stats has no 'loss' (the mean batch loss at the incoming parameters is required)"
        )


def format_error(exc: BaseException) -> str:
    """What a failed run stores: the traceback (a contract violation: its one line)."""
    if isinstance(exc, StepContractError):
        return f"{type(exc).__name__}: {exc}"
    return _JAX_FILTER_NOTE.sub("\n", "".join(traceback.format_exception(exc))).rstrip("\n") + "\n"
