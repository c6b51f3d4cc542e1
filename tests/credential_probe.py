"""A third-party-style adapter that records, at import time, which process imported it and
whether that process could see a database URL (``tests/test_trust_boundary.py``)."""

from __future__ import annotations

import json
import os

from backends.torch.optimizers.sgd import SGD

_PROBE = os.environ.get("NGBENCH_TEST_PROBE_FILE")
if _PROBE:
    secrets = sorted(k for k, v in os.environ.items() if "DB_URL" in k or "postgresql" in v or "sqlite" in v)
    with open(_PROBE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), "secrets": secrets}) + "\n")


class ProbeSGD(SGD):
    name = "probe-sgd"
    description = "SGD that reports where it was imported"
