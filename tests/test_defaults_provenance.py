"""Every default of every built-in method card says where it comes from (docs/defaults.md).

* Each hyperparameter carries ``provenance`` in ``paper``/``library``/``held-out`` and a source.
* A ``held-out`` default was chosen on held-out suites only (size ``heldout``, on no board), its
  stored evidence is consistent (the rule applied to the stored medians chooses the default),
  and the calibration command reproduces it: one cell of the evidence quickly, one whole
  calibration (EF's damping) in the slow half.
* The held-out suites are on no board (their data are pinned in tests/test_suites_ci.py).
* ``site/data/optimizers.json`` exports every default with its provenance and source.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from backends.spec import PROVENANCES, HeldOutEvidence, MethodCard, hparam, hparam_fields
from harness.defaults_calibration import calibrate_default, choose, median_best, ranks
from harness.errors import ConfigError
from harness.runner import RunSpec, execute
from suites import get_suite, list_suites
from suites.spec import SCORED_SIZES

METHODS = ("sgd", "adamw", "ef", "ief", "sf", "kfac", "fngd", "egn", "adamqlr")
HELDOUT = ("heldout-biomass-mlp", "heldout-shapes-cnn", "heldout-wine-mlp")


def card(method: str) -> MethodCard:
    return importlib.import_module(f"backends.methods.{method}").CARD


def held_out_defaults() -> list[tuple[str, str, HeldOutEvidence, object]]:
    out = []
    for method in METHODS:
        for name, f in hparam_fields(card(method).Hyperparams).items():
            if f.metadata["provenance"] == "held-out":
                out.append((method, name, f.metadata["evidence"], f.default))
    return out


def test_the_method_modules_are_all_covered() -> None:
    import backends.methods as pkg

    modules = {p.stem for p in Path(pkg.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert modules == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_every_default_has_a_provenance_and_a_source(method: str) -> None:
    for name, f in hparam_fields(card(method).Hyperparams).items():
        assert f.metadata.get("provenance") in PROVENANCES, f"{method}.{name} has no provenance"
        assert len(f.metadata.get("source") or "") > 10, f"{method}.{name} has no source"
        if f.metadata["provenance"] == "paper":
            assert any(ch.isdigit() for ch in f.metadata["source"]), f"{method}.{name}: cite the paper's year/section"


def test_hparam_rejects_unknown_or_unsupported_provenance() -> None:
    with pytest.raises(ValueError, match="provenance must be one of"):
        hparam(1.0, doc="x", provenance="folklore", source="x")
    with pytest.raises(ValueError, match="HeldOutEvidence"):
        hparam(1.0, doc="x", provenance="held-out", source="measured somewhere")


def test_the_re_derived_defaults_are_held_out() -> None:
    found = {(m, n) for m, n, _, _ in held_out_defaults()}
    assert {("ef", "damping"), ("sf", "damping"), ("fngd", "damping"), ("kfac", "min_damping")} <= found


@pytest.mark.parametrize(("method", "name", "evidence", "default"), held_out_defaults())
def test_held_out_evidence_is_on_held_out_suites_and_chooses_the_default(
    method: str, name: str, evidence: HeldOutEvidence, default: object
) -> None:
    assert evidence.method == method and evidence.hparam == name
    for suite in evidence.suites:
        size = get_suite(suite).size
        assert size == "heldout" and size not in SCORED_SIZES, f"{method}.{name} calibrated on {suite} ({size})"
    assert set(evidence.suites) == set(HELDOUT)
    assert evidence.chosen == default and default in evidence.grid
    assert len(evidence.medians) == len(evidence.suites)
    assert all(len(row) == len(evidence.grid) for row in evidence.medians)
    modes = ["min"] * len(evidence.suites)  # every held-out suite ranks on val_loss
    assert evidence.grid[choose(evidence.medians, modes)] == default
    assert evidence.seeds >= 2 and evidence.steps >= 100
    assert evidence.command().startswith(f"ngbench calibrate-defaults {method} --hparam {name} --grid ")


def test_the_rank_rule() -> None:
    assert ranks([0.3, 0.1, 0.2], "min") == [3.0, 1.0, 2.0]
    assert ranks([0.3, 0.1, 0.3], "min") == [2.5, 1.0, 2.5]
    assert ranks([0.3, 0.1, 0.2], "max") == [1.0, 3.0, 2.0]
    # value 1 wins two suites of three: best median rank although value 0 wins the third by far
    assert choose([[0.1, 0.2, 0.3], [0.9, 0.2, 0.3], [0.9, 0.2, 0.3]], ["min"] * 3) == 1
    # equal median ranks: the better mean rank wins
    assert choose([[1.0, 2.0], [2.0, 1.0], [1.0, 2.0]], ["min"] * 3) == 0
    # equal median and mean ranks: the first value of the grid
    assert choose([[1.0, 2.0], [2.0, 1.0]], ["min"] * 2) == 0


def test_a_failed_run_counts_as_the_worst() -> None:
    class R:
        def __init__(self, v: float | None, status: str = "done") -> None:
            self.best_val_metric, self.status = v, status

    assert median_best([R(None), R(float("nan")), R(0.5)], "min") == math.inf
    assert median_best([R(0.2), R(0.4), R(None)], "max") == 0.2
    assert median_best([R(0.1, "diverged"), R(0.3), R(0.2)], "min") == 0.3


def test_the_calibration_refuses_scored_suites() -> None:
    with pytest.raises(ConfigError, match="on a board"):
        calibrate_default("ef", "damping", [1e-3], suites=["digits-mlp"], seeds=1, steps=1)
    with pytest.raises(ConfigError, match="cannot also be fixed"):
        calibrate_default("ef", "damping", [1e-3], seeds=1, steps=1, fixed={"damping": 1.0})


def test_held_out_suites_are_on_no_board() -> None:
    heldout = {s.name for s in list_suites("heldout")}
    assert heldout == set(HELDOUT)
    for size in SCORED_SIZES:
        assert not heldout & {s.name for s in list_suites(size)}
    for name in heldout:
        suite = get_suite(name)
        assert suite.target is None and suite.calibration is None and suite.val_metric == "val_loss"


@pytest.mark.parametrize(("method", "name", "evidence", "default"), held_out_defaults())
def test_one_cell_of_the_stored_evidence_reproduces(
    method: str, name: str, evidence: HeldOutEvidence, default: object
) -> None:
    """Each held-out default on the biomass suite (the cheapest): the stored median, rerun."""
    suite = evidence.suites.index("heldout-biomass-mlp")
    stored = evidence.medians[suite][evidence.grid.index(default)]
    runs = [
        execute(
            RunSpec(
                suite="heldout-biomass-mlp",
                optimizer=method,
                seed=seed,
                steps=evidence.steps,
                hparams={name: default, **dict(evidence.fixed)},
                device="cpu",
                dtype=evidence.dtype,
                time_budget_s=1e18,
                stop_at_target=False,
            )
        )
        for seed in range(evidence.seeds)
    ]
    assert all(r.status in ("done", "diverged") for r in runs), [r.error for r in runs]
    assert median_best(runs, "min") == pytest.approx(stored, rel=2e-2)  # inf (diverged) matches inf


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_command_reproduces_a_held_out_default_from_its_evidence() -> None:
    """The whole EF damping calibration, rerun from the stored evidence: 36 runs of 200 steps
    (about a minute on an idle CPU, several on a shared one)."""
    _, _, evidence, default = next(e for e in held_out_defaults() if e[:2] == ("ef", "damping"))
    report = calibrate_default(
        evidence.method,
        evidence.hparam,
        evidence.grid,
        suites=evidence.suites,
        seeds=evidence.seeds,
        steps=evidence.steps,
        fixed=dict(evidence.fixed),
        backend=evidence.backend,
        dtype=evidence.dtype,
    )
    assert report.evidence.chosen == default
    for row, stored in zip(report.evidence.medians, evidence.medians, strict=True):
        np.testing.assert_allclose(row, stored, rtol=2e-2)


def test_the_cli_runs_the_calibration_and_prints_the_evidence(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    args = ["calibrate-defaults", "sgd", "--hparam", "lr", "--grid", "0.01,0.1", "--seeds", "1", "--steps", "5"]
    assert main([*args, "--suite", "heldout-biomass-mlp", "--set", "momentum=0.5"]) == 0
    out = capsys.readouterr().out
    assert "chosen lr = " in out and "HeldOutEvidence(" in out and "--set momentum=0.5" in out
    assert main(["calibrate-defaults", "sgd", "--hparam", "lr", "--grid", "0.1", "--suite", "digits-mlp"]) == 2
    assert "on a board" in capsys.readouterr().err
    assert main([*args, "--set", "momentum=2"]) == 2  # validated before any run
    assert "momentum" in capsys.readouterr().err


def test_the_site_exports_every_default_with_its_provenance(tmp_path: Path) -> None:
    """The cards as the site command describes them (through the worker's JSON form), exported."""
    from harness import registry
    from harness.external import AdapterInfo, describe_class
    from harness.site import _method_info
    from leaderboard.site import build
    from tests.test_site_build import make_results_db

    infos = {}
    for name in METHODS:
        info = AdapterInfo.from_dict(json.loads(json.dumps(describe_class(registry.get_adapter(name)).to_dict())))
        infos[name] = _method_info(info, {"torch": info.version})
    store, _ = make_results_db(tmp_path / "r.db")
    try:
        build(store, tmp_path / "site", methods=infos, jobs=1)
    finally:
        store.dispose()
    exported = json.loads((tmp_path / "site" / "data" / "optimizers.json").read_text())
    assert {"sgd", "adamw", "ief"} <= set(exported)
    for opt, params in exported.items():
        fields = hparam_fields(card(opt).Hyperparams)
        assert set(params) == set(fields)
        for name, entry in params.items():
            assert entry["provenance"] == fields[name].metadata["provenance"]
            assert entry["source"] == fields[name].metadata["source"]
            default = fields[name].default
            assert entry["default"] == (list(default) if isinstance(default, tuple) else default)
    page = (tmp_path / "site" / "optimizers" / "sgd.html").read_text()
    assert "Keras tf.keras.optimizers.SGD default learning_rate=0.01" in page


def test_evidence_is_a_frozen_record() -> None:
    evidence = held_out_defaults()[0][2]
    assert dataclasses.is_dataclass(evidence)
    with pytest.raises(dataclasses.FrozenInstanceError):
        evidence.chosen = 0.0  # type: ignore[misc]
