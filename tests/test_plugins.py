"""Third-party adapters: the example package found through its entry point, used like a
built-in (run, direction, sweep, site, CLI), broken entry points reported, file references,
and the trust boundary (workers hold no credentials; adapter text is escaped on the site).

How the example package is "installed": :func:`install_distribution` writes the
``<name>-<version>.dist-info`` directory that ``pip install`` would write (``METADATA`` and
``entry_points.txt``, both taken from ``tests/plugin_example/pyproject.toml``) into a
temporary directory put on ``sys.path`` next to the package's source. ``importlib.metadata``
discovers it exactly like an installed distribution, in this process and (through
``PYTHONPATH``) in the CLI and worker subprocesses, without touching the virtual environment
or needing a build backend. :func:`test_pip_builds_the_same_entry_points` checks, with a real
``pip install --target``, that pip writes the same entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.spec import ENTRY_POINT_GROUP
from harness import api, conformance, keys, registry
from harness.errors import UnknownOptimizerError

pytestmark = pytest.mark.slow  # plug-in installs and CLI end to end

REPO = Path(__file__).resolve().parent.parent
PLUGIN_ROOT = Path(__file__).resolve().parent / "plugin_example"
PLUGIN_PROJECT = tomllib.loads((PLUGIN_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
SECRET = "ngbench-plugin-secret"
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index")


def install_distribution(site: Path, name: str, version: str, entry_points: Mapping[str, str]) -> Path:
    """Write the ``*.dist-info`` of distribution ``name`` into ``site`` (what pip records)."""
    dist = site / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dist


def _forget_modules(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


@pytest.fixture
def on_path() -> Iterator[Any]:
    """``add(path)`` puts a directory first on ``sys.path``; all are removed afterwards."""
    added: list[str] = []

    def add(path: Path) -> None:
        sys.path.insert(0, str(path))
        added.append(str(path))
        registry.refresh()

    yield add
    for p in added:
        sys.path.remove(p)
    registry.refresh()


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package installed: its dist-info in a site directory, its source importable."""
    site = tmp_path_factory.mktemp("site-packages")
    eps = PLUGIN_PROJECT["entry-points"][ENTRY_POINT_GROUP]
    install_distribution(site, PLUGIN_PROJECT["name"], PLUGIN_PROJECT["version"], eps)
    paths = [str(site), str(PLUGIN_ROOT)]
    sys.path[:0] = paths
    registry.refresh()
    yield site
    for p in paths:
        sys.path.remove(p)
    _forget_modules("ngbench_lion")
    registry.refresh()


def subprocess_env(*paths: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NGBENCH_DB_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, paths)])
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def ngbench(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


# --------------------------------------------------------------------------- discovery


def test_entry_points_are_discovered_per_backend(plugin_site: Path) -> None:
    torch_cls = registry.get_adapter("lion", "torch")
    jax_cls = registry.get_adapter("lion", "jax")
    assert torch_cls.__module__ == "ngbench_lion.torch_adapter" and torch_cls.backend == "torch"
    assert jax_cls.__module__ == "ngbench_lion.jax_adapter" and jax_cls.backend == "jax"
    origin = registry.adapter_origin(torch_cls)
    assert "distribution ngbench-lion 0.1.0" in origin and "'lion.torch'" in origin
    assert registry.adapter_origin(registry.get_adapter("sgd")) == "built-in (backends.torch.optimizers.sgd)"
    assert ("lion", "torch") in registry.list_optimizers() and ("lion", "jax") in registry.list_optimizers()
    assert "lion" in api.list_optimizers("torch")
    # Built-ins come first and keep their names.
    assert list(registry.adapters("torch"))[:2] == ["sgd", "adamw"]
    assert registry.entry_point_errors() == []


def test_listing_one_backend_imports_only_its_entry_points(plugin_site: Path) -> None:
    _forget_modules("ngbench_lion")
    registry.refresh()
    assert "lion" in registry.adapters("torch")
    assert "ngbench_lion.torch_adapter" in sys.modules and "ngbench_lion.jax_adapter" not in sys.modules
    assert "lion" in registry.adapters("jax")
    assert "ngbench_lion.jax_adapter" in sys.modules


def test_plugin_passes_the_battery_with_parity(plugin_site: Path) -> None:
    for backend in ("torch", "jax"):
        report = conformance.assert_conforms("lion", backend)
        assert report["parity"].passed, report.format()
        assert report["direction_consistent"].passed and report["lowers_loss"].passed
        assert report.origin.startswith("entry point 'lion.") and "ngbench-lion 0.1.0" in report.origin


def test_plugin_runs_like_a_builtin(plugin_site: Path) -> None:
    r = api.run("tiny-ce", "lion", steps=40, device="cpu", stop_at_target=False)
    assert r.status == "budget_exhausted", r.error
    assert r.final_train_loss < r.initial_train_loss
    assert r.hparams == {"lr": 3e-4, "b1": 0.9, "b2": 0.99, "weight_decay": 0.0}
    assert r.passes_per_step["forward"] == 1.0 and r.passes_per_step["backward"] == 1.0
    j = api.run("tiny-ce", "lion", backend="jax", steps=5, device="cpu", dtype="float64", stop_at_target=False)
    t = api.run("tiny-ce", "lion", steps=5, device="cpu", dtype="float64", stop_at_target=False)
    assert j.status == t.status == "budget_exhausted"
    np.testing.assert_allclose(j.final_train_loss, t.final_train_loss, rtol=1e-9)
    # The approximation-quality track measures `direction`: Lion's is sign(g) from a fresh state.
    d = api.direction("tiny-mse", "lion", dtype="float64")
    g = api.direction("tiny-mse", "sgd", dtype="float64")
    np.testing.assert_array_equal(d, np.sign(g))


def test_cli_lists_runs_and_checks_the_plugin(plugin_site: Path, tmp_path: Path) -> None:
    env = subprocess_env(plugin_site, PLUGIN_ROOT)
    out = ngbench("list", "optimizers", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    rows = [line.split("│") for line in out.stdout.splitlines() if " lion " in line]
    cells = [[c.strip() for c in row] for row in rows]
    assert [c[1:3] for c in cells] == [["lion", "torch"], ["lion", "jax"]], out.stdout
    assert cells[0][3].startswith("entry point 'lion.torch'")  # where it comes from (wraps onto more lines)
    assert cells[0][4].startswith("Chen et al. (2023)")
    out = ngbench("run", "tiny-mse", "lion", "--steps", "5", "--json", "--device", "cpu", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert '"status": "budget_exhausted"' in out.stdout
    # The whole battery runs in test_plugin_passes_the_battery_with_parity; here, the CLI path.
    out = ngbench("check-adapter", "lion", "--check", "direction_consistent", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lion (torch) from entry point 'lion.torch'" in out.stdout
    assert "lion (jax) from entry point 'lion.jax'" in out.stdout  # a name is checked in every backend
    assert re.search(r"PASS\s+direction_consistent\s+first update = -lr \* direction", out.stdout)
    # direction_consistent and its prerequisites (the declarations, the state, the step outputs)
    assert out.stdout.count("5 checks: 5 passed, 0 failed, 0 skipped") == 2


def test_pip_builds_the_same_entry_points(tmp_path: Path) -> None:
    """The fixture's dist-info says what a real install says (a build of a copy of the package)."""
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    shutil.copytree(PLUGIN_ROOT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = tmp_path / "target"
    out = subprocess.run(
        [*PIP_INSTALL, "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (dist,) = importlib.metadata.distributions(path=[str(target)])
    assert dist.metadata["Name"] == PLUGIN_PROJECT["name"] and dist.version == PLUGIN_PROJECT["version"]
    found = {ep.name: ep.value for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP}
    assert found == PLUGIN_PROJECT["entry-points"][ENTRY_POINT_GROUP]
    assert (target / "ngbench_lion" / "torch_adapter.py").is_file()


# --------------------------------------------------------------------------- broken plugins


def test_broken_entry_points_are_reported_not_fatal(tmp_path: Path, on_path: Any) -> None:
    install_distribution(
        tmp_path,
        "ngbench-broken",
        "9.9",
        {
            "ghost.torch": "ngbench_missing_module:Ghost",
            "dumps.torch": "json:dumps",
            "sgd.torch": "backends.torch.optimizers.sgd:SGD",
            "wrong.jax": "backends.torch.optimizers.adamw:AdamW",
        },
    )
    on_path(tmp_path)
    names = registry.adapters("torch")
    assert "ghost" not in names and "dumps" not in names and names["sgd"].__module__ == "backends.torch.optimizers.sgd"
    errors = registry.entry_point_errors()
    assert len(errors) == 4 and all("of distribution ngbench-broken 9.9" in e for e in errors)
    text = "\n".join(errors)
    assert "'ghost.torch' = 'ngbench_missing_module:Ghost'" in text and "failed to load: ModuleNotFoundError" in text
    assert "'dumps.torch' = 'json:dumps' of distribution ngbench-broken 9.9 is not an adapter class" in text
    assert "reuses the built-in name 'sgd'; ignored" in text
    assert "registered for backend 'jax' but its class says 'torch'" in text
    with pytest.raises(UnknownOptimizerError, match=r"ngbench-broken 9\.9"):
        registry.get_adapter("ghost", "torch")
    env = subprocess_env(tmp_path)
    out = ngbench("list", "optimizers", "--backend", "torch", cwd=tmp_path, env=env)
    assert out.returncode == 0 and "adamw" in out.stdout and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- file references

FILE_ADAPTER = """
from typing import Any, NamedTuple

from backends.methods import sgd
from backends.spec import adapter_class


class State(NamedTuple):
    hparams: Any
    steps: int


class FileSGD(adapter_class(sgd.CARD, "torch")):
    name = "file-sgd"

    def init(self, problem, hparams):
        return State(hparams, 0)

    def direction(self, problem, params, state, batch):
        return problem.oracle(params, batch).grad()

    def step(self, problem, params, state, batch):
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - state.hparams.lr * g, State(state.hparams, state.steps + 1), {"loss": loss}
"""


def test_file_reference_is_importable_picklable_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "my adapter.py"
    path.write_text(FILE_ADAPTER, encoding="utf-8")
    ref = f"{path}:FileSGD"
    cls = registry.get_adapter(ref)
    assert registry.get_adapter(ref) is cls  # an unchanged file is imported once
    assert registry.adapter_origin(cls) == f"file {path}"
    report = conformance.check_adapter(ref, checks=["state_roundtrip", "step_outputs"])
    assert report.ok, report.format()  # its state class pickles: the module is in sys.modules
    version = keys.adapter_version(cls)
    assert version != keys.adapter_version(registry.get_adapter("sgd"))
    path.write_text(FILE_ADAPTER + "\n# an edit changes the adapter version\n", encoding="utf-8")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    edited = registry.get_adapter(ref)
    assert edited is not cls and keys.adapter_version(edited) != version
    r = api.run("tiny-ce", ref, steps=3, device="cpu")
    assert r.status == "budget_exhausted" and r.adapter_version == keys.adapter_version(edited)


def test_file_reference_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nraise RuntimeError('module-level bug')\n", encoding="utf-8")
    with pytest.raises(UnknownOptimizerError, match=r"RuntimeError: module-level bug \(.*bad\.py:2\)"):
        registry.get_adapter(f"{bad}:X")
    with pytest.raises(UnknownOptimizerError, match="no such file"):
        registry.get_adapter(f"{tmp_path / 'missing.py'}:X")
    # A failed import leaves nothing (other tests' files named bad_*.py may be loaded).
    assert not [m for m in sys.modules if re.fullmatch(r"ngbench_user_bad_[0-9a-f]+", m)]


# --------------------------------------------------------------------------- trust boundary

PROBE_ADAPTER = f"""
import os
from typing import Any, NamedTuple

from backends.methods import sgd
from backends.spec import adapter_class

SECRET = {SECRET!r}


class State(NamedTuple):
    hparams: Any


def leaks():
    found = [k for k, v in os.environ.items() if SECRET in v or k in ("NGBENCH_DB_URL", "DATABASE_URL")]
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/self/{{part}}", "rb") as f:
                if SECRET.encode() in f.read():
                    found.append(part)
        except OSError:
            pass
    return found


class Probe(adapter_class(sgd.CARD, "torch")):
    name = "env-probe"

    def init(self, problem, hparams):
        return State(hparams)

    def direction(self, problem, params, state, batch):
        return problem.oracle(params, batch).grad()

    def step(self, problem, params, state, batch):
        found = leaks()
        if found:
            raise RuntimeError("credential leak: " + ", ".join(found))
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - 0.01 * g, state, {{"loss": loss}}
"""


def test_plugins_in_a_sweep_run_in_workers_without_credentials(
    plugin_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from db.store import open_store
    from harness.executors.local import LocalExecutor
    from harness.orchestrator import run_sweep
    from harness.plans import expand
    from harness.sweep import load_config

    probe = tmp_path / "probe.py"
    probe.write_text(PROBE_ADAPTER, encoding="utf-8")
    url = f"sqlite:///{tmp_path / (SECRET + '.db')}"
    monkeypatch.setenv("NGBENCH_DB_URL", url)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://bench:{SECRET}@db.example:5432/bench")
    # The parent itself would fail the probe: the secret is in its environment.
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("probe_in_parent", probe)
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.leaks()
    config = load_config(
        {"name": "plugins", "suites": ["tiny-ce"], "optimizers": ["lion", f"{probe}:Probe"], "steps": 4}
    )
    store = open_store(url)
    summary = run_sweep(expand(config), store, LocalExecutor(("cpu",), 1))
    results = {o.job.spec.optimizer: o.result for o in summary.outcomes}
    assert results["lion"].status == "budget_exhausted", results["lion"].error
    assert results[f"{probe}:Probe"].status == "budget_exhausted", results[f"{probe}:Probe"].error
    assert summary.stored == 2
    store.dispose()


EVIL = {
    "name": "evil<script>alert(1)</script>",
    "description": '<img src=x onerror="window.__pwned=1">',
    "paper": "<b>bold</b> [bold]markup[/bold]",
    "doc": "<script>alert('doc')</script>",
    "stat": "<svg onload=alert(2)>",
}

EVIL_ADAPTER = f"""
from dataclasses import dataclass
from typing import Any, NamedTuple

from backends.spec import Capabilities, LogUniform, MethodCard, adapter_class, hparam


@dataclass(frozen=True)
class EvilHP:
    lr: float = hparam(0.05, doc={EVIL["doc"]!r}, low=0.0, low_inclusive=False)


CARD = MethodCard(
    name={EVIL["name"]!r},
    paper={EVIL["paper"]!r},
    description={EVIL["description"]!r},
    Hyperparams=EvilHP,
    search_space={{"lr": LogUniform(1e-3, 1.0)}},
    capabilities=Capabilities(),
)


class State(NamedTuple):
    hparams: Any


class Evil(adapter_class(CARD, "torch")):
    def init(self, problem, hparams):
        return State(hparams)

    def direction(self, problem, params, state, batch):
        return problem.oracle(params, batch).grad()

    def step(self, problem, params, state, batch):
        loss, g = problem.oracle(params, batch).loss_and_grad()
        return params - state.hparams.lr * g, state, {{"loss": loss, {EVIL["stat"]!r}: 1.0}}
"""


def test_adapter_text_is_escaped_on_the_site(tmp_path: Path, on_path: Any) -> None:
    from db.store import open_store
    from harness.site import method_metadata
    from leaderboard.site import build

    (tmp_path / "ngbench_evil.py").write_text(EVIL_ADAPTER, encoding="utf-8")
    install_distribution(tmp_path, "ngbench-evil", "1.0", {"evil.torch": "ngbench_evil:Evil"})
    on_path(tmp_path)
    try:
        url = f"sqlite:///{tmp_path / 'evil.db'}"
        r = api.run("tiny-ce", EVIL["name"], steps=3, device="cpu", db=url)
        assert r.status == "budget_exhausted", r.error
        assert any(name == "opt_" + EVIL["stat"] for _, _, name, _ in r.metrics)
        # The battery refuses such an adapter; the site must be safe even so.
        report = conformance.check_adapter(EVIL["name"], "torch", checks=["adapter"])
        assert "is not a lowercase slug" in report["adapter"].reason
        methods, versions = method_metadata()
        assert methods[EVIL["name"]].description == EVIL["description"]
        store = open_store(url)
        # One process: the registry imported JAX above, and JAX must not be forked.
        build(store, tmp_path / "site", methods=methods, current_adapters=versions, jobs=1)
        store.dispose()
    finally:
        _forget_modules("ngbench_evil")
    pages = [p for p in (tmp_path / "site").rglob("*") if p.suffix in (".html", ".svg")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    assert len(pages) > 3
    for raw in (EVIL["name"], EVIL["description"], "<b>bold</b>", EVIL["doc"], EVIL["stat"]):
        assert raw not in text, raw
    assert "&lt;img src=x onerror=" in text  # the description is shown, escaped
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;" in text  # and the name
