"""The worker's transport: a request names its handler by dotted path, resolved in the child."""

from __future__ import annotations

import pytest

from harness.worker import PROBE_HANDLER, RUN_HANDLER, execute_request, resolve_handler
from harness.worker.handlers import probe_request, run_request


def test_handlers_are_resolved_by_dotted_path() -> None:
    assert resolve_handler(RUN_HANDLER) is run_request
    assert resolve_handler(PROBE_HANDLER) is probe_request


@pytest.mark.parametrize("path", ["harness.worker.handlers", ":run_request", "harness.worker.handlers:"])
def test_a_handler_path_without_module_and_function_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="module:function"):
        resolve_handler(path)


def test_a_handler_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="not callable"):
        resolve_handler("harness.worker.transport:RUN_HANDLER")


def test_the_envelope_is_the_handlers_answer_with_its_timing() -> None:
    envelope = execute_request({"op": "probe", "handler": PROBE_HANDLER, "backend": "torch", "device": "cpu"})
    assert envelope["environment"]["device_kind"] == "cpu"
    assert set(envelope["timing"]) == {"exec_start"}


def test_a_request_without_a_handler_is_a_run() -> None:
    spec = {"suite": "tiny-ce", "optimizer": "sgd", "backend": "torch", "steps": 2, "device": "cpu", "eval_every": 1}
    envelope = execute_request({"spec": spec})
    assert envelope["result"]["status"] == "budget_exhausted"  # 2 steps: the target is out of reach
    assert envelope["result"]["steps"] == 2
    assert envelope["timing"]["exec_end"] >= envelope["timing"]["exec_start"]
