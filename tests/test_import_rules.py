"""The import rules of docs/architecture.md ("Import rules"), enforced by the test suite.

The contracts live in pyproject.toml (``[tool.importlinter]``) and are checked by import-linter,
which reads every import statement, function-level ones included: harness on top; backends and
leaderboard below it; suites and db at the bottom; the two backends independent; no cycles
inside harness; only the command line imports the commands. Function-level imports are kept
for optional or heavy frameworks only (PyTorch, JAX, Ray) and a few deliberate preloads.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is part of the test extra")

ROOT = Path(__file__).resolve().parents[1]

#: Modules a function may import lazily: frameworks that are optional or heavy, imported only
#: where a run, a check or an executor needs them, and the worker launcher's deliberate preloads.
LAZY_ALLOWED = ("torch", "jax", "ray", "resource")


def test_the_import_contracts_hold(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(ROOT)
    code = importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "0 broken" in report


def test_the_contracts_state_every_rule() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    contracts = config["contracts"]
    by_type: dict[str, list[dict[str, object]]] = {}
    for c in contracts:
        by_type.setdefault(str(c["type"]), []).append(c)
    assert set(config["root_packages"]) == {"harness", "backends", "leaderboard", "suites", "db"}
    assert [c["layers"] for c in by_type["layers"]] == [["harness", "backends | leaderboard", "suites | db"]]
    forbidden = {tuple(c["source_modules"]): set(c["forbidden_modules"]) for c in by_type["forbidden"]}  # type: ignore[arg-type]
    assert forbidden[("suites",)] == {"backends", "db", "leaderboard", "harness"}
    assert forbidden[("backends",)] == {"db", "leaderboard", "harness"}
    assert forbidden[("leaderboard", "db")] == {"backends", "harness"}
    assert [c["modules"] for c in by_type["independence"]] == [["backends.torch", "backends.jax"]]
    assert [c["ancestors"] for c in by_type["acyclic_siblings"]] == [["harness"]]
    assert [c["protected_modules"] for c in by_type["protected"]] == [["harness.commands", "harness.cli"]]


def _function_level_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    for alias in sub.names:
                        found[sub.lineno] = alias.name
                elif isinstance(sub, ast.ImportFrom):
                    found[sub.lineno] = "." * sub.level + (sub.module or "")
    return sorted(found.items())


def test_harness_imports_at_module_level_except_optional_frameworks() -> None:
    lazy = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / "harness").rglob("*.py"))
        for line, module in _function_level_imports(path)
        if module.split(".")[0] not in LAZY_ALLOWED
    ]
    assert not lazy, "function-level imports (move them to the top of the module):\n" + "\n".join(lazy)


def test_the_function_level_scan_sees_nested_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    def g():\n        from harness import sweep\n    import torch\n")
    assert _function_level_imports(source) == [(5, "harness"), (6, "torch")]
