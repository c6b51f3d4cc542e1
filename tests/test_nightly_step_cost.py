"""The nightly's step-cost table: the sweep file's ``[step_cost]``, the child that measures without
credentials, the parent that validates and stores, the site that shows it, and a failing child
that stores nothing and loses nothing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer.main

from benchmarks import step_cost, step_cost_table
from db.step_costs import latest_step_costs
from db.store import Store, open_store
from harness import nightly as nightly_mod
from harness import nightly_step_cost as nsc
from harness.cli import app, main
from harness.commands import sweep as sweep_cmd
from harness.errors import ConfigError
from harness.orchestrator import SweepSummary
from harness.site import build_site
from harness.sweep import load_config
from harness.sweep.schema import KEYS, STEP_COST_KEYS, STEP_COST_PROBLEMS, StepCostSettings, step_cost_settings
from tests.test_site_build import result

ENV = {
    "hostname": "bench-01",
    "cpu": "EPYC 9654",
    "cpu_count": 96,
    "torch": "2.13.0",
    "jax": "0.7.0",
    "git_commit": "f" * 40,
    "git_dirty": False,
}
SECRETS = {"NGBENCH_DB_URL": "postgresql://bench:hunter2@db/bench", "PGPASSWORD": "hunter2", "API_TOKEN": "t"}


def cost(adapter: str, median_s: float, floor_s: float, problem: str = "digits-mlp", **kw: Any) -> step_cost.Cost:
    return step_cost.Cost(
        "torch",
        problem,
        adapter,
        26122,
        median_s,
        median_s * 0.95,
        median_s * 1.05,
        0.1,
        median_s / 0.6e-3,
        {"forward": 1.0, "backward": 1.0, "jvp": 0.0, "vjp": 0.0, "per_sample": 0.0},
        floor_s=floor_s,
        efficiency=median_s / floor_s,
        **kw,
    )


TABLE = [cost("sgd", 0.6e-3, 0.5e-3), cost("kfac", 2.661e-3, 1.822e-3, algebra_s=0.55e-3, efficiency_algebra=1.12)]


class FakeChild:
    """Stands in for ``run_child``: records what it was given and writes ``table`` as the child's
    ``--json`` document (through the benchmark's own writer)."""

    def __init__(self, table: list[step_cost.Cost] | None = TABLE, code: int | None = 0, stderr: str = "") -> None:
        self.table, self.code, self.stderr = table, code, stderr
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> nsc.ChildExit:
        self.calls.append((argv, env))
        if self.table is not None:
            settings = {"backends": ["torch"], "threads": 1}
            step_cost.write_json(argv[argv.index("--json") + 1], step_cost.table_json(self.table, {}, settings))
        return nsc.ChildExit(self.code, self.stderr, 1.5)


def stored(store: Store) -> list[dict[str, Any]]:
    return latest_step_costs(store).to_dict("records")


# ---------------------------------------------------------------------------- the sweep file


def test_the_option_has_defaults_and_matches_the_benchmark() -> None:
    assert step_cost_settings(False) == (None, [])
    settings, problems = step_cost_settings(True)
    assert problems == [] and settings == StepCostSettings()
    assert settings.adapters is None and settings.backends is None  # the table's adapters, the sweep's backends
    assert (settings.rounds, settings.warmup, settings.threads) == (100, 10, 1)
    assert tuple(step_cost.PROBLEMS) == STEP_COST_PROBLEMS and settings.problems == STEP_COST_PROBLEMS
    assert nsc.JSON_FORMAT == step_cost_table.JSON_FORMAT
    table = {"adapters": ["sgd", "kfac:amortised"], "problems": ["digits-wide"], "rounds": 30, "timeout_s": 90}
    config = load_config({"name": "n", "suites": ["tiny-ce"], "optimizers": ["sgd"], "step_cost": table})
    assert config.step_cost == StepCostSettings(("sgd", "kfac:amortised"), ("digits-wide",), None, 30, 10, 1, 90.0)
    assert config.to_dict()["step_cost"]["adapters"] == ["sgd", "kfac:amortised"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "step_cost must be true, false or a table"),
        ({"rounds": 0}, "step_cost.rounds must be a positive integer, got 0"),
        ({"warmup": -1}, "step_cost.warmup must be a non-negative integer, got -1"),
        ({"threads": True}, "step_cost.threads must be a positive integer, got True"),
        ({"timeout_s": float("nan")}, "step_cost.timeout_s must be a positive number, got nan"),
        ({"adapters": []}, "step_cost.adapters must be a non-empty list of names"),
        ({"adapters": ["kfacc"]}, "step_cost.adapters: unknown adapter 'kfacc'"),
        ({"adapters": ["kfac:nope"]}, "step_cost.adapters: kfac: unknown preset 'nope'"),
        ({"problems": ["mnist"]}, "step_cost.problems: unknown problem 'mnist'"),
        ({"backends": ["tf"]}, "step_cost.backends: unknown backend 'tf'"),
        ({"round": 10}, "step_cost: unknown key 'round'"),
    ],
)
def test_bad_values_get_one_clear_message(value: Any, message: str) -> None:
    raw = {"name": "n", "suites": ["tiny-ce"], "optimizers": ["sgd"], "step_cost": value}
    with pytest.raises(ConfigError) as exc:
        load_config(raw)
    text = str(exc.value)
    assert text.startswith("invalid sweep file <mapping>: ") and message in text and "\n" not in text


def test_the_flag_overrides_the_file() -> None:
    mine = StepCostSettings(rounds=7)
    assert nsc.settings_for(mine, None) is mine and nsc.settings_for(None, None) is None
    assert nsc.settings_for(mine, False) is None and nsc.settings_for(None, True) == StepCostSettings()
    assert nsc.checkout_problem() is None  # this checkout has benchmarks/
    assert "source checkout" in str(nsc.checkout_problem(Path("/nonexistent")))


# ---------------------------------------------------------------------------- measure and store


def test_the_child_gets_no_credentials_and_the_parent_stores_its_table(
    tmp_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    store = open_store(tmp_db)
    child = FakeChild()
    settings = StepCostSettings(adapters=("sgd", "kfac"), problems=("digits-mlp",), rounds=40, threads=1)
    section = nsc.measure_and_store(store, settings, ["torch"], ENV, runner=child)
    (argv, env), *_ = child.calls
    assert argv[:3] == [sys.executable, "-m", "benchmarks.step_cost"]
    assert argv[argv.index("--backend") + 1] == "torch" and argv[argv.index("--rounds") + 1] == "40"
    assert argv[argv.index("--adapter") + 1 : argv.index("--json")] == ["sgd", "kfac"]
    assert not set(SECRETS) & set(env) and "hunter2" not in json.dumps(env)
    assert (env["OMP_NUM_THREADS"], env["JAX_PLATFORMS"]) == ("1", "cpu")
    assert section["status"] == "stored" and section["tables"][0]["rows"] == 2
    rows = {r["adapter"]: r for r in stored(store)}
    kfac = rows["kfac"]
    assert kfac["median_step_s"] == pytest.approx(2.661e-3) and kfac["efficiency"] == pytest.approx(2.661 / 1.822)
    assert kfac["passes"]["algebra_s"] == pytest.approx(0.55e-3)
    assert kfac["machine"] == "bench-01: EPYC 9654 (96 cores), 1 thread(s); torch 2.13.0"
    assert (kfac["git_commit"], kfac["threads"], kfac["rounds"]) == ("f" * 40, 1, 40)
    store.dispose()


@pytest.mark.parametrize(
    ("child", "detail"),
    [
        (FakeChild(table=None, code=1, stderr="Traceback ...\nRuntimeError: boom"), "exit code 1; stderr: Trace"),
        (FakeChild(code=None), "timed out after 3600 s"),
        (FakeChild(table=None), "the child wrote no table"),
        (FakeChild(table=[cost("kfac", 2e-3, 1e-3)]), "lacks sgd on digits-mlp"),
        (FakeChild(table=[TABLE[0], cost("sgd", 1e-3, 1e-3, problem="mnist")]), "another backend or problem"),
        (lambda *a: nsc.run_child([str(Path("/nonexistent/python"))], {}, Path("/"), 5), "the child did not start"),
    ],
)
def test_a_failing_measurement_is_reported_and_stores_nothing(tmp_db: str, child: Any, detail: str) -> None:
    store = open_store(tmp_db)
    settings = StepCostSettings(problems=("digits-mlp",))
    section = nsc.measure_and_store(store, settings, ["torch"], ENV, runner=child)
    assert section["status"] == "failed" and detail in section["tables"][0]["detail"]
    assert stored(store) == []
    notes, warnings = nsc.lines(section)
    assert notes == [] and warnings == [f"step-cost table (torch) not stored: {section['tables'][0]['detail']}"]
    store.dispose()


def gone(pid: int, wait_s: float = 3.0) -> bool:
    """Whether process ``pid`` has ended (exited, or a zombie left to be reaped), within ``wait_s``."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if stat.read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
                time.sleep(0.05)
                continue
        return True
    return False


def test_a_timed_out_child_is_killed_with_its_own_children(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print(p.pid, file=sys.stderr, flush=True); time.sleep(60)"
    )
    child = nsc.run_child([sys.executable, "-c", code], nsc.child_environ(1), tmp_path, 1.0)
    assert child.timed_out and child.returncode is None and 1.0 <= child.wall_s < 10
    assert gone(int(child.stderr.split()[0]))  # killed with the child's process group
    done = nsc.run_child([sys.executable, "-c", "import sys; sys.exit('boom')"], nsc.child_environ(1), tmp_path, 30)
    assert (done.returncode, done.stderr, done.timed_out) == (1, "boom", False)


def test_an_efficiency_change_between_nightlies_is_flagged(tmp_db: str) -> None:
    store = open_store(tmp_db)
    settings = StepCostSettings(problems=("digits-mlp",))
    nsc.measure_and_store(store, settings, ["torch"], ENV, runner=FakeChild())
    slower = [TABLE[0], cost("kfac", 2.661e-3 * 1.3, 1.822e-3)]
    section = nsc.measure_and_store(store, settings, ["torch"], ENV, runner=FakeChild(slower))
    items = {i["adapter"]: i for i in section["items"]}
    assert items["kfac"]["flag"] == "slowdown" and items["kfac"]["ratio"] == pytest.approx(1.3)
    assert items["sgd"]["flag"] == "unchanged" and items["sgd"]["ratio"] == pytest.approx(1.0)
    assert items["kfac"]["threshold"] == pytest.approx(0.05)  # p10-p90 within ±5 %: 100 rounds are tight
    other = {**ENV, "hostname": "laptop"}  # another machine is no baseline
    assert nsc.measure_and_store(store, settings, ["torch"], other, runner=FakeChild())["items"] == []
    store.dispose()


# ---------------------------------------------------------------------------- the nightly command


def fake_run_plan(db: str):  # type: ignore[no-untyped-def]
    """``run_plan`` of a nightly whose one run is stored at once (no workers)."""

    def run(kind: str, plan: Any, *args: Any, **kwargs: Any) -> tuple[SweepSummary, Store]:
        store = open_store(db)
        sid = store.create_sweep(plan.config.name, kind=kind)
        store.set_sweep_environment(sid, {**ENV, "fingerprint": "fp"})
        store.save_run(result("tiny-ce", "kfac", 0, ttt=0.05), sweep_id=sid)
        store.finish_sweep(sid)
        return SweepSummary(sid, plan.config.name, kind, planned=1, stored=1), store

    return run


@pytest.mark.parametrize("fails", [False, True])
def test_the_nightly_measures_stores_and_shows_the_table(
    fails: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "nightly.toml"
    sweep.write_text(
        'name = "n"\nsuites = ["tiny-ce"]\noptimizers = ["kfac"]\n'
        '[step_cost]\nadapters = ["sgd", "kfac"]\nproblems = ["digits-mlp"]\n'
    )
    db = f"sqlite:///{tmp_path / 'n.db'}"
    plan = lambda path, *a: (SimpleNamespace(config=load_config(path), backends=("torch",)), None, None)  # noqa: E731
    monkeypatch.setattr(sweep_cmd, "_plan", plan)
    monkeypatch.setattr(sweep_cmd, "run_plan", fake_run_plan(db))
    child = FakeChild(table=None, code=2, stderr="ngbench: error: boom") if fails else FakeChild()
    monkeypatch.setattr(nsc, "run_child", child)
    quick = lambda url, out, tracks: build_site(url, out, tracks, jobs=1, registry=False)  # noqa: E731
    monkeypatch.setattr(nightly_mod, "build_site", quick)  # the site without the adapters' cards
    monkeypatch.setenv("NGBENCH_DB_URL", db)
    report = tmp_path / "report.json"
    args = ["nightly", str(sweep), "--report-json", str(report), "--site-dir", str(tmp_path / "site")]
    assert main(args) == 0  # a failed table is a warning, not a failed nightly
    assert "NGBENCH_DB_URL" not in child.calls[0][1]
    section = json.loads(report.read_text())["step_cost"]
    page = (tmp_path / "site" / "optimizers" / "kfac.html").read_text(encoding="utf-8")
    err = capsys.readouterr().err
    if fails:
        assert section["status"] == "failed" and "ngbench: error: boom" in section["tables"][0]["detail"]
        assert "ngbench: warning: step-cost table (torch) not stored: exit code 2" in err
        assert "Step cost: not measured" in page
    else:
        assert section["status"] == "stored" and section["settings"]["adapters"] == ["sgd", "kfac"]
        section_html = page[page.index('id="step-cost"') :]
        assert "2.66 ms" in section_html and "1.82 ms" in section_html and "1.46×" in section_html
        assert "bench-01" in section_html


def test_ctrl_c_during_the_table_stores_the_report_and_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "nightly.toml"
    sweep.write_text(
        'name = "n"\nsuites = ["tiny-ce"]\noptimizers = ["kfac"]\n[step_cost]\nbackends = ["torch", "jax"]\n'
    )
    db = f"sqlite:///{tmp_path / 'n.db'}"
    plan = lambda path, *a: (SimpleNamespace(config=load_config(path), backends=("torch",)), None, None)  # noqa: E731
    monkeypatch.setattr(sweep_cmd, "_plan", plan)
    monkeypatch.setattr(sweep_cmd, "run_plan", fake_run_plan(db))
    first = FakeChild(table=[TABLE[0], cost("sgd", 0.6e-3, 0.5e-3, problem="digits-wide")])

    def runner(argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> nsc.ChildExit:
        if "jax" in argv:
            raise KeyboardInterrupt
        return first(argv, env, cwd, timeout_s)

    monkeypatch.setattr(nsc, "run_child", runner)
    report = tmp_path / "report.json"
    site = tmp_path / "site"
    assert main(["nightly", str(sweep), "--db", db, "--report-json", str(report), "--site-dir", str(site)]) == 130
    section = json.loads(report.read_text())["step_cost"]
    assert section["status"] == "interrupted"
    assert [t["status"] for t in section["tables"]] == ["stored", "interrupted"]  # torch's table is kept
    assert not site.exists() and "report stored, site not rebuilt" in capsys.readouterr().err
    store = open_store(db)
    assert {r["backend"] for r in stored(store)} == {"torch"}
    store.dispose()


def test_no_step_cost_skips_it_and_a_checkout_without_benchmarks_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "nightly.toml"
    sweep.write_text('name = "n"\nsuites = ["tiny-ce"]\noptimizers = ["kfac"]\nstep_cost = true\n')
    db = f"sqlite:///{tmp_path / 'n.db'}"
    plan = lambda path, *a: (SimpleNamespace(config=load_config(path), backends=("torch",)), None, None)  # noqa: E731
    monkeypatch.setattr(sweep_cmd, "_plan", plan)
    monkeypatch.setattr(sweep_cmd, "run_plan", fake_run_plan(db))
    monkeypatch.setattr(nsc, "run_child", lambda *a: pytest.fail("measured with --no-step-cost"))
    assert main(["nightly", str(sweep), "--db", db, "--no-site", "--no-step-cost"]) == 0
    monkeypatch.setattr(nsc, "checkout_problem", lambda: "step_cost: no checkout")
    monkeypatch.setattr(sweep_cmd, "run_plan", lambda *a, **k: pytest.fail("ran before refusing"))
    assert main(["nightly", str(sweep), "--db", db, "--no-site"]) == 2
    assert capsys.readouterr().err.strip().endswith("ngbench: error: step_cost: no checkout")


@pytest.mark.slow
def test_the_real_child_measures_a_table_the_parent_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmarks.step_cost --json`` in a child without credentials, a few rounds."""
    monkeypatch.setenv("NGBENCH_DB_URL", "postgresql://bench:hunter2@db/bench")
    settings = StepCostSettings(adapters=("sgd", "adamw"), problems=("digits-mlp",), rounds=3, warmup=1)
    path = tmp_path / "table.json"
    env = nsc.child_environ(1)
    assert "NGBENCH_DB_URL" not in env and os.environ["NGBENCH_DB_URL"]
    child = nsc.run_child(nsc.command(settings, "torch", ["sgd", "adamw"], path), env, nsc.REPO_ROOT, 300)
    assert child.returncode == 0, child.stderr
    rows = nsc.read_table(path, "torch", settings.problems, settings.adapters)
    assert sorted(r["adapter"] for r in rows) == ["adamw", "sgd"]
    sgd = next(r for r in rows if r["adapter"] == "sgd")
    assert sgd["status"] == "ok" and sgd["ratio_to_sgd"] == 1.0 and sgd["median_s"] > 0
    assert sgd["passes"]["forward"] == 1.0 and sgd["passes"]["backward"] == 1.0


# ---------------------------------------------------------------------------- the docs


def test_the_docs_list_every_nightly_option_and_sweep_key() -> None:
    docs = Path(__file__).resolve().parents[1] / "docs"
    cli = (docs / "cli.md").read_text(encoding="utf-8")
    reference = cli[cli.index("## ngbench sweep") : cli.index("## ngbench tune")]  # nightly takes sweep's options
    nightly = typer.main.get_command(app).commands["nightly"]  # type: ignore[attr-defined]
    options = [o for p in nightly.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
    assert "--step-cost" in options and "--no-step-cost" in options
    assert [o for o in options if f"`{o}" not in reference and o != "--help"] == []
    sweeps = (docs / "sweeps.md").read_text(encoding="utf-8")
    table = sweeps[sweeps.index("## Sweep files") : sweeps.index("## What a sweep guarantees")]
    assert [k for k in KEYS if f"`{k}`" not in table and f"`[{k}" not in table] == []
    section = sweeps[sweeps.index("### The step-cost table of a nightly") :]
    assert [k for k in STEP_COST_KEYS if f"\n{k} = " not in section] == []
