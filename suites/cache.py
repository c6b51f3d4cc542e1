"""A small on-disk cache for generated suite arrays (MNIST-1D, tokenized reviews).

Arrays that take seconds to produce are written once per machine as ``.npz`` files under
``$NGBENCH_CACHE_DIR`` (default ``~/.cache/ngbench``) and read back by every later process (each
run of a sweep is a fresh worker process). The file name carries a hash of everything the
arrays depend on (generator arguments, package versions, source files), so a change produces
a new entry instead of stale data; the suites' data hashes are pinned in the tests, so a
generator that behaves differently on another machine is caught there. Writes are atomic
(temporary file, then rename); an unreadable entry is regenerated; an unwritable cache
directory only costs the regeneration.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENV_VAR = "NGBENCH_CACHE_DIR"


def cache_dir() -> Path:
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else Path("~/.cache/ngbench").expanduser()


def _key_hash(key: object) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_arrays(name: str, key: object, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``build()``'s arrays, from the cache entry ``name``-``hash(key)`` when it exists."""
    path = cache_dir() / f"{name}-{_key_hash(key)}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, KeyError):
        pass
    arrays = build()
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types allow_pickle there
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)  # a read-only or full cache only costs the regeneration
    return arrays
