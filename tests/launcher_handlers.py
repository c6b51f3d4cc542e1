"""Request handlers for the launcher supervision tests (``tests.launcher_handlers:<name>``).

Each leaves a marker file per execution in ``request["marker_dir"]``, so a test counts how often
a request really started.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any


def _mark(request: Mapping[str, Any]) -> None:
    with open(os.path.join(request["marker_dir"], f"exec-{os.getpid()}"), "w"):
        pass


def sleep_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Sleeps ``request["sleep"]`` seconds, then answers 42."""
    _mark(request)
    time.sleep(float(request.get("sleep", 0.0)))
    return {"answer": 42}


def kill_launcher_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Kills its own launcher (the parent of a forked child) with SIGKILL, every time."""
    _mark(request)
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(30)
    return {"answer": 0}
