"""``ngbench doctor``: what this host has for benchmarking, and what each suite still lacks.

It prints the GPUs and driver (``nvidia-smi``), the framework builds (torch and whether it is a
CUDA build, JAX and the platform a JAX run gets — asked of a fresh worker process, so JAX's
allocator never starts in this one), the data directory, whether the database is reachable,
and one line per suite: ``ready`` or what is missing (data files, Python packages, a GPU for
the GPU-size suites, a frozen target to score against). Exit status 1 when the database is
unreachable or a suite named with ``--suite`` is not ready. docs/gpu-host.md runs it first.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.text import Text

from db.store import open_store
from harness import devices
from harness.commands.runs import DbOption, make_console
from harness.commands.suites import DataDirOption, apply_data_dir
from harness.errors import USER_ERRORS
from harness.worker import PROBE_HANDLER, LaneError, request_in_worker
from suites import get_suite, list_suites
from suites.datadir import data_dir


@dataclass
class HostFacts:
    """What ``doctor`` found (gathered by :func:`gather`; tests build it directly)."""

    gpus: list[str] = field(default_factory=list)
    driver: str | None = None
    torch: str | None = None
    torch_cuda: str | None = None
    torch_gpus: int = 0
    jax: str | None = None
    jax_cuda_plugin: str | None = None
    jax_platform: str | None = None
    data_dir: str = ""
    database: str = ""
    database_ok: bool = False


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_smi() -> tuple[list[str], str | None]:
    """``(["0: NVIDIA H100 (81559 MiB)", ...], driver)`` from ``nvidia-smi``; ``([], None)`` without one."""
    query = "--query-gpu=index,name,memory.total,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return [], None
    gpus, driver = [], None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4:
            gpus.append(f"{parts[0]}: {parts[1]} ({parts[2]})")
            driver = parts[3]
    return gpus, driver


def jax_platform() -> str:
    """The device a JAX run gets here, asked of a fresh worker (``gpu: NVIDIA ...``, ``cpu``)."""
    try:
        request = {"op": "probe", "handler": PROBE_HANDLER, "backend": "jax", "device": "auto"}
        env = request_in_worker(request, timeout_s=180)["environment"]
    except (LaneError, KeyError) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        return f"JAX failed to start: {lines[-1][:200] if lines else type(exc).__name__}"
    kind = "gpu" if env.get("device_kind") == "cuda" else "cpu"
    return f"{kind}: {env.get('device_name')}" if kind == "gpu" else "cpu"


def gather(db: str | None) -> HostFacts:
    """Look at this host (nvidia-smi, torch, a JAX worker, the data directory, the database)."""
    facts = HostFacts()
    facts.gpus, facts.driver = nvidia_smi()
    facts.torch = _version("torch")
    if facts.torch is not None:
        import torch

        facts.torch_cuda = torch.version.cuda
        facts.torch_gpus = devices.torch_gpu_count()
    facts.jax = _version("jax")
    facts.jax_cuda_plugin = _version("jax-cuda12-plugin") or _version("jax-cuda13-plugin")
    if facts.jax is not None:
        facts.jax_platform = jax_platform()
    facts.data_dir = str(data_dir())
    try:
        store = open_store(db)
        facts.database, facts.database_ok = store.display_url, True
        store.dispose()
    except USER_ERRORS as exc:
        facts.database = str(exc)
    return facts


def suite_line(suite: Any, facts: HostFacts) -> tuple[str, bool]:
    """``("name (size): ready" | "name (size): missing ...", ready)`` for one suite."""
    missing = list(suite.missing(facts.data_dir))
    if suite.size == "gpu" and not (facts.torch_gpus or facts.gpus):
        missing.append("a GPU (GPU-size suite)")
    if suite.target is None and suite.size != "test":
        missing.append(f"a frozen target (runs are stored but not scored: ngbench calibrate {suite.name})")
    if not missing:
        return f"{suite.name} ({suite.size}): ready", True
    return f"{suite.name} ({suite.size}): missing {'; '.join(missing)}", False


def report(facts: HostFacts, suites: list[Any]) -> tuple[list[str], bool]:
    """The lines ``doctor`` prints and whether every listed suite is ready."""
    if facts.torch is None:
        torch_line = "torch: not installed"
    elif facts.torch_cuda:
        torch_line = f"torch {facts.torch}: CUDA {facts.torch_cuda} build, {facts.torch_gpus} GPU(s) usable"
    else:
        torch_line = f"torch {facts.torch}: CPU build (no CUDA)"
    if facts.jax is None:
        jax_line = "jax: not installed (pip install 'ngbench[jax]')"
    else:
        plugin = f", CUDA plugin {facts.jax_cuda_plugin}" if facts.jax_cuda_plugin else ", no CUDA plugin"
        jax_line = f"jax {facts.jax}{plugin}; a JAX run gets: {facts.jax_platform}"
    lines = [
        f"GPUs: {len(facts.gpus)}" + "".join(f"\n  {g}" for g in facts.gpus),
        f"driver: {facts.driver or 'none (nvidia-smi not found or failed)'}",
        torch_line,
        jax_line,
        f"data directory: {facts.data_dir}",
        f"database: {facts.database} ({'reachable' if facts.database_ok else 'UNREACHABLE'})",
        "suites:",
    ]
    ready = True
    for suite in suites:
        line, ok = suite_line(suite, facts)
        lines.append(f"  {line}")
        ready &= ok
    return lines, ready


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        db: DbOption = None,
        suite: Annotated[list[str] | None, typer.Option("--suite", help="Only these suites (default: all).")] = None,
        data_dir: DataDirOption = None,
    ) -> None:
        """What this host has (GPUs, driver, framework builds, JAX platform, data, database) and
        what each suite still lacks, one line each."""
        apply_data_dir(data_dir)
        suites = [get_suite(n) for n in suite] if suite else [s for s in list_suites() if s.size != "test"]
        facts = gather(db)
        lines, ready = report(facts, suites)
        out = make_console()
        for line in lines:
            out.print(Text(line))
        if not facts.database_ok or (suite and not ready):
            raise typer.Exit(1)
