"""The environment fingerprint stored with every run.

Device, driver and CUDA, framework versions, harness git commit and dirty flag, CPU, hostname,
thread and allocator settings. Environment variables are read only from
:data:`ENV_ALLOW_LIST`; nothing else from the environment (and never a secret) is stored.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

#: The only environment variables recorded: they change speed, memory or numerics.
ENV_ALLOW_LIST: tuple[str, ...] = (
    "CUDA_VISIBLE_DEVICES",
    "PYTORCH_CUDA_ALLOC_CONF",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "XLA_FLAGS",
    "JAX_PLATFORMS",
    "JAX_ENABLE_X64",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)

#: Fields that identify an environment (the rest is description).
IDENTITY_FIELDS: tuple[str, ...] = (
    "hostname",
    "device_kind",
    "device_name",
    "cpu",
    "python",
    "torch",
    "jax",
    "jaxlib",
    "cuda",
    "driver",
    "git_commit",
    "git_dirty",
    "env",
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def git_state(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout the harness runs from, or ``(None, None)``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def device_info(backend: str, device: str) -> dict[str, Any]:
    """Device kind and name for the device a run used (imports only that backend)."""
    info: dict[str, Any] = {"device_kind": "cpu", "device_name": _cpu_model(), "cuda": None, "driver": None}
    if backend == "torch":
        import torch  # only the backend the run used

        info["threads"] = torch.get_num_threads()
        if device.startswith("cuda") and torch.cuda.is_available():
            idx = torch.device(device).index or 0
            info.update(
                device_kind="cuda",
                device_name=torch.cuda.get_device_name(idx),
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                driver=_nvidia_driver(),
            )
    elif backend == "jax":
        import jax  # optional dependency (the "jax" extra)

        dev = jax.devices()[0]
        if dev.platform == "gpu":
            info.update(device_kind="cuda", device_name=dev.device_kind, driver=_nvidia_driver())
            info["cuda"] = _version("jax-cuda12-plugin") or _version("jax-cuda13-plugin")
    return info


def fingerprint(backend: str, device: str) -> dict[str, Any]:
    """The full environment record of a run on ``backend``/``device``."""
    commit, dirty = git_state()
    env = {k: os.environ[k] for k in ENV_ALLOW_LIST if k in os.environ}
    record: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "ngbench": _version("ngbench"),
        "git_commit": commit,
        "git_dirty": dirty,
        "env": env,
    }
    record.update(device_info(backend, device))
    record["fingerprint"] = environment_hash(record)
    return record


def environment_hash(record: dict[str, Any]) -> str:
    ident = {k: record.get(k) for k in IDENTITY_FIELDS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def framework_versions(backend: str) -> dict[str, str | None]:
    """Versions that change a run's numbers (part of a run's key)."""
    if backend == "jax":
        return {"jax": _version("jax"), "jaxlib": _version("jaxlib"), "optax": _version("optax")}
    return {"torch": _version("torch")}
