"""Device planning: which worker lanes a command gets on this machine or a Ray cluster.

One pure function, :func:`plan_devices`, turns the request (``--devices``, ``--workers``, the
command's own default worker count) and the inventory (GPUs visible, CPU cores) into a
:class:`DevicePlan`; ``sweep``, ``nightly``, ``tune`` and ``quickstart`` go through it (via the
executors), ``run``, ``calibrate`` and ``approx`` resolve their single device with
:func:`single_device`. The rules (docs/sweeps.md, "Executors"):

* **local, GPUs** (``--devices 0,2``, or every visible GPU when ``--devices`` is left out):
  one worker per GPU, ``CUDA_VISIBLE_DEVICES`` per worker (mapped through the parent's own
  ``CUDA_VISIBLE_DEVICES``), the cores shared out among them as threads. ``--workers N``
  uses the first ``N`` of them; more workers than GPUs is an error (two runs on one GPU
  distort each other's step times), and a command's *default* worker count (quickstart's one
  per core) does not apply to GPUs.
* **local, CPU** (``--devices cpu``, or no GPU): ``--workers`` lanes (else the command's
  default, else 1), each with ``cores // workers`` threads; JAX pinned to the CPU.
* **Ray**: ``--devices`` is ``cpu`` or left out (Ray places GPUs itself); one GPU per task
  when the cluster has GPUs, at most one task per GPU; else ``--workers`` tasks (default:
  CPUs / ``cpus_per_task``).

The inventory comes from :func:`visible_gpu_count` (torch's CUDA count, or ``nvidia-smi`` on
a host whose torch is a CPU build — JAX is never initialised in the parent, where its
allocator would claim GPU memory); tests pass it in.

A GPU that fails mid-sweep is found by :func:`device_healthy` (a fresh interpreter runs a
kernel on it) and its lane is retired by the local executor; see docs/gpu-host.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.errors import ConfigError
from harness.worker import worker_environ

EXECUTORS = ("local", "ray")
#: Environment of CPU lanes: no GPU for torch, JAX on the CPU.
CPU_ENV: Mapping[str, str] = {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}


@dataclass(frozen=True)
class LanePlan:
    """One worker lane: its name, the device string its runs get, its environment, threads.

    ``gpu`` is the lane's GPU index as the parent numbers it (``None`` for CPU lanes).
    """

    name: str
    device: str
    env: Mapping[str, str]
    threads: int
    gpu: str | None = None


@dataclass(frozen=True)
class DevicePlan:
    """Where a command's runs go: ``lanes`` (local) or Ray task shapes (``lanes`` empty)."""

    executor: str
    use_gpu: bool
    slots: int
    threads: int
    lanes: tuple[LanePlan, ...] = field(default=())

    def describe(self) -> str:
        if self.executor == "local":
            lanes = ", ".join(f"{lane.name} ({lane.threads} thr)" for lane in self.lanes)
            return f"local, {self.slots} worker{'s' if self.slots != 1 else ''}: {lanes}"
        kind = "1 GPU" if self.use_gpu else f"{self.threads} CPU"
        return f"ray, {self.slots} concurrent task{'s' if self.slots != 1 else ''} of {kind} each"


def torch_gpu_count() -> int:
    """GPUs torch's CUDA build sees (0 without torch, a CUDA build or a driver); no CUDA context."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def smi_gpu_count() -> int:
    """GPUs ``nvidia-smi -L`` lists, restricted by ``CUDA_VISIBLE_DEVICES`` (0 without a driver)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return n
    return min(n, len([v for v in visible.split(",") if v.strip()]))


def visible_gpu_count() -> int:
    """The GPUs this process may give to workers: torch's count, else ``nvidia-smi``'s."""
    return torch_gpu_count() or smi_gpu_count()


def _physical(index: str, parent_visible: str | None) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value that selects the parent's GPU ``index`` in a child."""
    if not parent_visible:
        return index
    ids = [v.strip() for v in parent_visible.split(",") if v.strip()]
    return ids[int(index)] if int(index) < len(ids) else index


def plan_devices(
    devices: Sequence[str] | None,
    workers: int | None,
    *,
    executor: str = "local",
    gpus: int | None = None,
    cores: int | None = None,
    default_workers: int | None = None,
    cpus_per_task: int = 1,
    parent_visible: str | None = None,
) -> DevicePlan:
    """The lanes for ``devices`` (``("cpu",)``, ``("cuda:0", ...)`` or ``None``: every GPU,
    else the CPU) and ``workers`` (what the user asked; ``None``: ``default_workers`` on the
    CPU, one per GPU) given ``gpus`` visible GPUs (the local machine's, or the Ray cluster's)
    and ``cores`` CPUs. Raises :class:`ConfigError` for requests the inventory cannot meet.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r} (known: {', '.join(EXECUTORS)})")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be positive, got {workers}")
    n_gpus = visible_gpu_count() if gpus is None else gpus
    n_cores = max(1, cores or os.cpu_count() or 1)
    if executor == "ray":
        return _plan_ray(devices, workers, n_gpus, n_cores, cpus_per_task)
    if parent_visible is None:
        parent_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = tuple(f"cuda:{i}" for i in range(n_gpus))
    devs = tuple(devices) if devices else (visible or ("cpu",))
    if devs == ("cpu",):
        n = workers or default_workers or 1
        threads = max(1, n_cores // n)
        lanes = tuple(LanePlan(f"cpu{i}", "cpu", dict(CPU_ENV), threads) for i in range(n))
        return DevicePlan("local", False, n, threads, lanes)
    missing = [d for d in devs if d not in visible]
    if missing:
        raise ConfigError(
            f"--devices {','.join(d.split(':', 1)[-1] for d in devs)}: GPU(s) {', '.join(missing)} not visible "
            f"(visible: {', '.join(visible) or 'none'}); use --devices cpu"
        )
    if workers is not None and workers > len(devs):
        raise ConfigError(
            f"--workers {workers} with {len(devs)} GPU(s): the local executor runs one worker per GPU "
            f"(two runs on one GPU distort each other's step times); use --workers {len(devs)} or fewer, "
            f"or --devices cpu for {workers} CPU workers"
        )
    devs = devs[: workers or len(devs)]
    threads = max(1, n_cores // len(devs))
    lanes = tuple(
        LanePlan(
            f"gpu{index}",
            "cuda",
            {"CUDA_VISIBLE_DEVICES": _physical(index, parent_visible)},
            threads,
            gpu=index,
        )
        for index in (d.split(":", 1)[1] for d in devs)
    )
    return DevicePlan("local", True, len(lanes), threads, lanes)


def _plan_ray(devices: Sequence[str] | None, workers: int | None, gpus: int, cpus: int, per_task: int) -> DevicePlan:
    if devices is not None and tuple(devices) != ("cpu",):
        raise ConfigError("--devices with the Ray executor: use 'cpu' or leave it out (Ray assigns GPUs itself)")
    if gpus > 0 and devices is None:
        if workers is not None and workers > gpus:
            raise ConfigError(
                f"--workers {workers} with {gpus} GPU(s) in the Ray cluster: one task per GPU; "
                f"use --workers {gpus} or fewer, or --devices cpu"
            )
        return DevicePlan("ray", True, workers or gpus, per_task)
    return DevicePlan("ray", False, workers or max(1, cpus // per_task), per_task)


def single_device(device: str, gpus: int | None = None) -> str:
    """The device of an in-process command (``run``, ``calibrate``, ``approx``): ``auto`` is
    ``cuda:0`` when a GPU is visible, else ``cpu``; ``cuda[:N]`` must name a visible GPU. Other
    device strings are the backend's to judge and come back unchanged."""
    text = device.strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("auto", "cuda", "gpu"):
        return text
    if index and not index.isdigit():
        raise ConfigError(f"unknown device {device!r} (known: auto, cpu, cuda, cuda:N)")
    n = visible_gpu_count() if gpus is None else gpus
    if kind == "auto":
        return "cuda:0" if n else "cpu"
    i = int(index or 0)
    if i >= n:
        raise ConfigError(f"--device {device}: {n} GPU(s) visible; use --device cpu")
    return f"cuda:{i}"


# --------------------------------------------------------------------------- GPU health

HEALTH_TIMEOUT_S = 120.0


def device_healthy(env: Mapping[str, str], timeout_s: float = HEALTH_TIMEOUT_S) -> tuple[bool, str]:
    """Run a small kernel on the GPU ``env`` selects, in a fresh interpreter: ``(ok, why)``.

    Called by the local executor after a run on a GPU lane failed; a GPU that does not answer
    (fell off the bus, Xid error, driver gone) retires its lane.
    """
    cmd = [sys.executable, "-m", "harness.devices", "check"]
    try:
        proc = subprocess.run(
            cmd, env=worker_environ(dict(env)), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"GPU health check did not answer within {timeout_s:g} s"
    if proc.returncode == 0:
        return True, proc.stdout.strip()
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return False, "GPU health check failed: " + " | ".join(tail)


def _check_here() -> int:
    """Body of ``python -m harness.devices check``: a kernel, a synchronise, a read back."""
    import torch

    if not torch.cuda.is_available():
        if smi_gpu_count() > 0 and torch.version.cuda is None:  # a CPU torch on a GPU host: nothing to test
            print("torch is a CPU build; nvidia-smi lists the GPU")
            return 0
        print("no CUDA device visible", file=sys.stderr)
        return 1
    n = 1 << 20
    total = int((torch.arange(n, device="cuda", dtype=torch.int64) * 2).sum().item())
    torch.cuda.synchronize()
    if total != n * (n - 1):
        print(f"wrong sum from the GPU: {total}", file=sys.stderr)
        return 1
    print(f"ok: {torch.cuda.get_device_name(0)}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through device_healthy
    if sys.argv[1:] != ["check"]:
        print("usage: python -m harness.devices check", file=sys.stderr)
        sys.exit(2)
    sys.exit(_check_here())
