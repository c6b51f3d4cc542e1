"""Where an outside submitter trips: messages and listings that say what they need to know."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from db.store import open_store
from harness import registry
from harness.cli import app
from harness.errors import UnknownOptimizerError
from harness.runner import RunSpec, execute


def test_unknown_optimizer_names_the_backend_where_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.adapters

    def fake(backend: str) -> dict:
        out = dict(real(backend))
        if backend == "jax":
            out["onlyjax"] = out["sgd"]
        return out

    monkeypatch.setattr(registry, "adapters", fake)
    with pytest.raises(UnknownOptimizerError) as err:
        registry.get_adapter("onlyjax", "torch")
    assert "unknown optimizer 'onlyjax' for backend 'torch'; it exists for --backend jax" in str(err.value)
    with pytest.raises(UnknownOptimizerError) as err:
        registry.get_adapter("nowhere", "torch")
    assert "exists for" not in str(err.value)


def test_list_optimizers_says_where_each_adapter_comes_from() -> None:
    result = CliRunner().invoke(app, ["list", "optimizers", "--backend", "torch"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "from" in result.output
    assert "built-in (backends.torch.optimizers.sgd)" in result.output


def test_runs_prints_an_empty_tag_as_empty(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    store = open_store(db)
    store.save_run(execute(RunSpec("tiny-ce", "sgd", steps=3, device="cpu")))
    store.dispose()
    table = CliRunner().invoke(app, ["runs", "--db", db], env={"COLUMNS": "300"})
    assert table.exit_code == 0
    assert "nan" not in table.output
