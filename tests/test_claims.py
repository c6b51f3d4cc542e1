"""Claims: decision rules on synthetic results (every verdict reachable), the registry's
integrity, and one small claim end to end (run, verdict, a second run that runs nothing)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
import pytest

from db.store import open_store
from harness.claims import run_claims, sweep_configs, verdicts
from leaderboard.claims import CLAIMS, Arm, Claim, Rule, RunExperiment, Verdict, get_claim
from leaderboard.claims.rules import RULES, approx_ordering, combine, cost_ratio, damping_robustness, faster, not_slower
from suites import get_suite


def runs(
    arms: dict[str, list[float]], *, suite: str = "s", value: str = "steps_to_target", step_time: dict | None = None
) -> pd.DataFrame:
    rows = []
    for arm, values in arms.items():
        for seed, v in enumerate(values):
            t = (step_time or {}).get(arm, [1.0] * len(values))[seed]
            rows.append(
                {"arm": arm, "suite": suite, "backend": "torch", "seed": seed, value: v, "step_time_median_s": t}
            )
    return pd.DataFrame(rows)


def test_faster_reaches_every_verdict() -> None:
    win = faster(runs({"a": [10, 11, 9, 12, 10], "b": [100, 110, 90, 120, 105]}), a="a", b="b")
    assert [c.verdict for c in win] == [Verdict.HOLDS]
    lose = faster(runs({"a": [100, 110, 90, 120, 105], "b": [10, 11, 9, 12, 10]}), a="a", b="b")
    assert [c.verdict for c in lose] == [Verdict.DOES_NOT_HOLD]
    two_seeds = faster(runs({"a": [10, 11], "b": [100, 110]}), a="a", b="b")
    assert [c.verdict for c in two_seeds] == [Verdict.INCONCLUSIVE]
    missing = faster(runs({"a": [10, 11, 9]}), a="a", b="b")
    assert [c.verdict for c in missing] == [Verdict.NOT_MEASURED]
    # Misses are +inf: an arm that always misses loses to one that always reaches.
    misses = faster(runs({"a": [10, 11, 9, 12], "b": [math.nan] * 4}), a="a", b="b")
    assert [c.verdict for c in misses] == [Verdict.HOLDS]


def test_not_slower_is_a_non_inferiority_rule() -> None:
    assert (
        not_slower(runs({"a": [11, 12, 10], "b": [10, 11, 9]}), a="a", b="b", margin=1.25)[0].verdict is Verdict.HOLDS
    )
    assert not_slower(runs({"a": [100, 110, 90, 120, 105], "b": [10, 11, 9, 12, 10]}), a="a", b="b")[0].verdict is (
        Verdict.DOES_NOT_HOLD
    )
    assert (
        not_slower(runs({"a": [math.nan, math.nan], "b": [10, 11]}), a="a", b="b")[0].verdict is Verdict.DOES_NOT_HOLD
    )
    assert not_slower(runs({"a": [12, 11], "b": [10, 11]}), a="a", b="b")[0].verdict is Verdict.INCONCLUSIVE
    assert not_slower(runs({"a": [20, 22, 21], "b": [10, 30, 9]}), a="a", b="b", margin=1.0)[0].verdict is (
        Verdict.INCONCLUSIVE
    )


def test_cost_ratio_uses_a_bootstrap_interval() -> None:
    steady = {"a": [2.0, 2.0, 2.0], "b": [1.0, 1.0, 1.0]}
    frame = runs({"a": [1, 1, 1], "b": [1, 1, 1]}, step_time=steady)
    assert cost_ratio(frame, a="a", b="b", low=1.5, high=2.5)[0].verdict is Verdict.HOLDS
    assert cost_ratio(frame, a="a", b="b", low=3.0, high=4.0)[0].verdict is Verdict.DOES_NOT_HOLD
    noisy = runs({"a": [1, 1, 1], "b": [1, 1, 1]}, step_time={"a": [1.0, 2.0, 4.0], "b": [1.0, 1.0, 1.0]})
    assert cost_ratio(noisy, a="a", b="b", low=1.5, high=2.5)[0].verdict is Verdict.INCONCLUSIVE


def approx(ratios: dict[str, dict[float, float]], checkpoints: int = 3, suite: str = "s") -> pd.DataFrame:
    rows = []
    for method, by_damping in ratios.items():
        for damping, ratio in by_damping.items():
            for k in range(checkpoints):
                for batch in range(2):
                    rows.append({"suite": suite, "method": method, "damping": damping, "checkpoint": k, "batch": batch,
                                 "gamma": ratio * 0.5, "gamma_ratio_sgd": ratio})  # fmt: skip
    return pd.DataFrame(rows)


def test_approximation_rules_reach_every_verdict() -> None:
    good = approx({"ief": {1e-6: 0.5}, "ef": {1e-6: 0.9}, "sf": {1e-6: 0.8}})
    assert approx_ordering(good, method="ief", baselines=("ef", "sf"), damping=1e-6)[0].verdict is Verdict.HOLDS
    bad = approx({"ief": {1e-6: 1.5}, "ef": {1e-6: 0.9}, "sf": {1e-6: 0.8}})
    assert approx_ordering(bad, method="ief", baselines=("ef", "sf"), damping=1e-6)[0].verdict is Verdict.DOES_NOT_HOLD
    other = approx_ordering(good, method="ief", baselines=("ef", "sf"), damping=1e-3)
    assert other[0].verdict is Verdict.NOT_MEASURED
    robust = approx({"ief": {1.0: 0.5, 1e-6: 0.6}, "ef": {1.0: 0.5, 1e-6: 5.0}, "sf": {1.0: 0.5, 1e-6: 3.0}})
    assert damping_robustness(robust, method="ief", baselines=("ef", "sf"))[0].verdict is Verdict.HOLDS
    fragile = approx({"ief": {1.0: 0.5, 1e-6: 5.0}, "ef": {1.0: 0.5, 1e-6: 5.0}, "sf": {1.0: 0.5, 1e-6: 3.0}})
    assert damping_robustness(fragile, method="ief", baselines=("ef", "sf"))[0].verdict is Verdict.DOES_NOT_HOLD
    all_fine = approx({"ief": {1.0: 0.5, 1e-6: 0.6}, "ef": {1.0: 0.5, 1e-6: 0.6}, "sf": {1.0: 0.5, 1e-6: 0.6}})
    assert damping_robustness(all_fine, method="ief", baselines=("ef", "sf"))[0].verdict is Verdict.INCONCLUSIVE


def test_combining_cells() -> None:
    from leaderboard.claims.rules import CellVerdict

    def cells(*verdicts: Verdict) -> list[CellVerdict]:
        return [CellVerdict(str(i), v, "", {}) for i, v in enumerate(verdicts)]

    assert combine(cells(Verdict.HOLDS, Verdict.INCONCLUSIVE)) is Verdict.HOLDS
    assert combine(cells(Verdict.HOLDS, Verdict.DOES_NOT_HOLD)) is Verdict.INCONCLUSIVE
    assert combine(cells(Verdict.DOES_NOT_HOLD, Verdict.DOES_NOT_HOLD, Verdict.INCONCLUSIVE)) is Verdict.DOES_NOT_HOLD
    assert combine(cells(Verdict.HOLDS, Verdict.NOT_MEASURED)) is Verdict.NOT_MEASURED
    assert combine([]) is Verdict.NOT_MEASURED


def test_the_registry_is_consistent() -> None:
    assert len({c.id for c in CLAIMS}) == len(CLAIMS) >= 8
    for claim in CLAIMS:
        inspect.signature(RULES[claim.rule.kind]).bind(None, **claim.rule.kwargs())
        assert claim.statement.endswith(".") and claim.place and claim.paper and claim.rule.text
        for suite in claim.experiment.suites:
            get_suite(suite)
        if isinstance(claim.experiment, RunExperiment):
            labels = {arm.label for arm in claim.experiment.arms}
            kwargs = claim.rule.kwargs()
            named = {kwargs["a"], *([kwargs["b"]] if isinstance(kwargs["b"], str) else kwargs["b"])}
            assert named <= labels, claim.id
            assert len(sweep_configs(claim)) == len(claim.experiment.suites) * len(claim.experiment.arms)
    with pytest.raises(KeyError, match="unknown claim"):
        get_claim("no-such-claim")


def test_calibrated_arms_use_each_suite_s_own_configuration() -> None:
    configs = sweep_configs(get_claim("adamqlr-untuned"))
    adamw = {c["suites"][0]: c["hparams"]["adamw"] for c in configs if c["optimizers"] == ["adamw"]}
    assert adamw["digits-mlp"] == dict(get_suite("digits-mlp").calibration.hparams)
    assert all(c["tag"] == "claim:adamqlr-untuned@v1" for c in configs)


SMALL = Claim(
    id="test-small",
    version=1,
    paper="a test",
    place="here",
    statement="AdamW reaches the target in fewer steps than SGD.",
    experiment=RunExperiment(
        suites=("breast-cancer-logreg",), arms=(Arm("AdamW", "adamw", calibrated=True), Arm("SGD", "sgd")), seeds=(0,)
    ),
    rule=Rule("faster", "test", (("a", "AdamW"), ("b", "SGD"), ("value", "steps_to_target"))),
)


@pytest.mark.slow
def test_a_small_claim_end_to_end(tmp_db: str) -> None:
    store = open_store(tmp_db)
    first = run_claims(store, [SMALL], workers=1)
    assert first[0].ran == 2 and first[0].skipped == 0
    [outcome] = verdicts(store, [SMALL])
    # One seed per arm: no permutation test can be significant, so the verdict is inconclusive.
    assert outcome.verdict is Verdict.INCONCLUSIVE, outcome.evidence
    assert "seeds per arm: 1-1" in outcome.summary and outcome.table[0]["seeds"] == 1
    again = run_claims(store, [SMALL], workers=1)
    assert again[0].ran == 0 and again[0].skipped == 2
    assert np.isfinite(outcome.table[0]["median_a"])


@pytest.mark.slow
def test_the_claims_page_shows_every_claim_and_the_command_where_unmeasured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from leaderboard.site import build

    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    run_claims(store, [SMALL], workers=1)
    build(store, tmp_path / "site", jobs=1)
    page = (tmp_path / "site" / "claims.html").read_text()
    for claim in CLAIMS:
        assert claim.statement.replace("'", "&#39;") in page, claim.id
    assert "ngbench claims run --only fngd-vs-kfac" in page  # not measured: the command is shown
    rows = {r["id"]: r for r in __import__("json").loads((tmp_path / "site" / "data" / "claims.json").read_text())}
    assert rows["fngd-vs-kfac"]["verdict"] == "not measured" and len(rows) == len(CLAIMS)


def test_a_run_shared_by_dedup_counts_for_every_arm_with_the_same_resolved_hyperparameters() -> None:
    """Run keys deduplicate identical runs: a default-AdamW run (overrides {}) is also the run of
    an arm spelling out lr = the default, and must count for it."""
    from leaderboard.claims.evidence import run_evidence

    runs = pd.DataFrame(
        [
            {
                "id": 1,
                "suite": "digits-mlp",
                "optimizer": "adamw",
                "backend": "torch",
                "seed": 0,
                "status": "target_reached",
                "role": "run",
                "hparams": {"lr": 0.001, "b1": 0.9},
                "steps_to_target": 100.0,
                "time_to_target_s": 1.0,
                "step_time_median_s": 0.01,
                "best_val_metric": 0.99,
                "device": "cpu",
                "finished_at": None,
            }
        ]
    )
    specs = {1: {"hparams": {}, "preset": None, "dtype": "float32", "steps": None}}
    experiment = RunExperiment(suites=("digits-mlp",), arms=(Arm("spelled", "adamw", (("lr", 0.001),)),), seeds=(0,))
    assert run_evidence(experiment, runs, specs).empty  # without the card's defaults: overrides must match
    found = run_evidence(experiment, runs, specs, {"adamw": {"lr": 0.001, "b1": 0.9}})
    assert list(found["run_id"]) == [1]
    other = RunExperiment(suites=("digits-mlp",), arms=(Arm("other", "adamw", (("lr", 0.01),)),), seeds=(0,))
    assert run_evidence(other, runs, specs, {"adamw": {"lr": 0.001, "b1": 0.9}}).empty
