"""The tuned track without workers: the sampler, the cards' search spaces, trial selection,
tuned-sweep validation, and scoring of studies on synthetic results (all-failed included)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import qmc

from backends.methods import BUILTIN_METHODS
from backends.spec import Choice, LogUniform, OneMinusLogUniform, Uniform, sample_distribution
from db.store import open_store
from harness import tuning
from harness.errors import ConfigError
from harness.runner import RunResult, RunSpec
from harness.sweep import load_config
from leaderboard import data as site_data
from leaderboard import views
from leaderboard.catalogue import SuiteInfo
from leaderboard.scoring import TrialResult, choose_trial, rank_trials, trial_tier, tunability_table


def card(name: str) -> Any:
    import importlib

    return importlib.import_module(f"backends.methods.{name}").CARD


# ---------------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("sampler", tuning.SAMPLERS)
def test_the_sampler_is_deterministic_per_seed_and_independent_across_studies(sampler: str) -> None:
    space = card("sgd").search_space
    a = tuning.sample_configs(space, 8, sampler=sampler, seed=7)
    assert a == tuning.sample_configs(space, 8, sampler=sampler, seed=7)
    assert a != tuning.sample_configs(space, 8, sampler=sampler, seed=8)
    # The study seed depends on the suite, the optimizer and the study seed, not on the backend.
    seeds = {tuning.derived_seed(s, o, k) for s in ("tiny-ce", "tiny-mse") for o in ("sgd", "adamw") for k in (0, 1)}
    assert len(seeds) == 8 and all(0 <= s < 2**63 for s in seeds)
    p = tuning.Protocol(trials=5, sampler=sampler)
    fixed = {"nesterov": True}
    searched = tuning.effective_space(space, fixed, {})  # a fixed hyperparameter leaves the search
    assert set(searched) == {"lr", "momentum"}
    points = tuning.study_points("tiny-ce", "sgd", searched, fixed, p)
    assert points == tuning.study_points("tiny-ce", "sgd", searched, fixed, p)
    assert len(points) == 5 and all(pt["nesterov"] is True for pt in points)
    # The order in which a card lists its space does not move the points.
    reordered = dict(reversed(list(space.items())))
    assert tuning.sample_configs(reordered, 8, sampler=sampler, seed=7) == a


@pytest.mark.parametrize("sampler", tuning.SAMPLERS)
def test_unit_samples_fill_the_cube_better_than_random_points(sampler: str) -> None:
    for d in (1, 2, 3, 4):
        u = tuning.unit_samples(64, d, sampler=sampler, seed=3)
        assert u.shape == (64, d) and np.all((u >= 0) & (u < 1))
        # Low discrepancy: below every one of 20 i.i.d. uniform point sets of the same size.
        rng = np.random.default_rng(0)
        random = [qmc.discrepancy(rng.random((64, d))) for _ in range(20)]
        assert qmc.discrepancy(u) < min(random)
        # One-dimensional projections are stratified: every 1/16 of each axis holds a point.
        for j in range(d):
            assert len(np.unique(np.floor(u[:, j] * 16))) == 16
    assert tuning.unit_samples(4, 0).shape == (4, 0)
    with pytest.raises(ValueError, match="unknown sampler"):
        tuning.unit_samples(4, 2, sampler="grid")


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_every_card_space_is_covered_and_its_samples_are_accepted(name: str) -> None:
    c = card(name)
    space = c.search_space
    assert space, f"{name} declares no search space"
    configs = tuning.sample_configs(space, 64, seed=11)
    for key, dist in space.items():
        values = [cfg[key] for cfg in configs]
        if isinstance(dist, Choice):
            # The default budget of 8 trials already tries every choice.
            first8 = {cfg[key] for cfg in tuning.sample_configs(space, 8, seed=tuning.derived_seed("s", name, 0))}
            assert first8 == set(dist.values)
            continue
        lo, hi = float(dist.low), float(dist.high)
        x = 1.0 - np.asarray(values) if isinstance(dist, OneMinusLogUniform) else np.asarray(values)
        assert np.all(x >= lo * (1 - 1e-12)) and np.all(x <= hi * (1 + 1e-12)), key
        if isinstance(dist, (LogUniform, OneMinusLogUniform)):
            # Log-uniform dimensions spread over the decades: each decade of the range is hit.
            decades = np.floor(np.log10(x / lo) + 1e-9).astype(int)
            n_decades = math.floor(math.log10(hi / lo) + 1e-9)
            assert set(range(n_decades)) <= set(decades.tolist()), (key, sorted(set(decades.tolist())))
        else:
            assert np.ptp(x) > 0.9 * (hi - lo)
    # Every sampled configuration, and both ends of every range, pass the adapter's validation.
    from backends.spec import resolve_hparams

    for cfg in configs:
        resolve_hparams(c.Hyperparams, cfg, owner=name)
    for key, dist in space.items():
        for u in (0.0, 1.0 - 1e-12):
            resolve_hparams(c.Hyperparams, {key: sample_distribution(dist, u)}, owner=name)


@pytest.mark.parametrize("name", BUILTIN_METHODS)
def test_the_defaults_are_a_point_of_the_search_space(name: str) -> None:
    """The untuned configuration lies inside the tuned search space, so the tuned track could in
    principle find it: a tuned score below the untuned one is the cost of searching, not of a
    space that excludes the defaults."""
    c = card(name)
    defaults = c.Hyperparams()
    for key, dist in c.search_space.items():
        v = getattr(defaults, key)
        if isinstance(dist, Choice):
            assert v in dist.values, key
        elif isinstance(dist, OneMinusLogUniform):
            assert dist.low - 1e-12 <= 1.0 - v <= dist.high + 1e-12, key
        else:
            assert dist.low - 1e-12 <= v <= dist.high + 1e-12, key


def test_distributions_from_sweep_files_and_from_worker_descriptions() -> None:
    from harness.external import describe_distribution

    assert tuning.distribution_from_toml({"log_uniform": [1e-4, 1.0]}) == LogUniform(1e-4, 1.0)
    assert tuning.distribution_from_toml({"uniform": [0, 2]}) == Uniform(0, 2)
    assert tuning.distribution_from_toml({"one_minus_log_uniform": [1e-3, 0.1]}) == OneMinusLogUniform(1e-3, 0.1)
    assert tuning.distribution_from_toml({"choice": [1, 2]}) == Choice((1, 2))
    for bad, message in (
        ({"log_uniform": [0.0, 1.0]}, "low > 0"),
        ({"uniform": [2, 1]}, "low < high"),
        ({"log_uniform": [1.0]}, r"takes \[low, high\]"),
        ({"choice": []}, "at least one value"),
        ({"normal": [0, 1]}, "unknown distribution 'normal'"),
        ({"uniform": [0, 1], "choice": [1]}, "one-entry table"),
        (0.1, "one-entry table"),
    ):
        with pytest.raises(ValueError, match=message):
            tuning.distribution_from_toml(bad)
    for name in BUILTIN_METHODS:
        for dist in card(name).search_space.values():
            back = tuning.distribution_from_description(describe_distribution(dist))
            assert type(back) is type(dist)
            if isinstance(dist, Choice):
                assert back == dist
            else:
                assert back.low == pytest.approx(dist.low, rel=1e-5) and back.high == pytest.approx(dist.high, rel=1e-5)
            assert tuning.distribution_from_toml(tuning.distribution_to_dict(dist)) == dist
    with pytest.raises(ValueError, match="cannot read"):
        tuning.distribution_from_description("gaussian(0, 1)")


def test_config_hash_depends_on_the_resolved_values_only() -> None:
    assert tuning.config_hash({"lr": 0.1, "momentum": 0.9}) == tuning.config_hash({"momentum": 0.9, "lr": 0.1})
    assert tuning.config_hash({"lr": 0.1}) != tuning.config_hash({"lr": 0.10000001})


# ---------------------------------------------------------------------------------- selection


def t(trial: int, status: str = "target_reached", ttt: float | None = None, metric: float | None = 0.9) -> TrialResult:
    reached = status == "target_reached" or (ttt is not None)
    return TrialResult(
        trial=trial,
        status=status,
        time_to_target_s=ttt,
        steps_to_target=(None if ttt is None else ttt * 100) if reached else None,
        best_val_metric=metric,
        config=f"c{trial}",
    )


def test_selection_prefers_reaching_the_target_fast_then_the_validation_metric() -> None:
    trials = [
        t(0, "budget_exhausted", metric=0.97),  # closest miss, but missed
        t(1, ttt=3.0, metric=0.91),
        t(2, ttt=1.0, metric=0.905),  # fastest to the target wins, whatever its final metric
        t(3, "budget_exhausted", metric=0.5),
    ]
    assert [r.trial for r in rank_trials(trials, "max")] == [2, 1, 0, 3]
    assert choose_trial(trials, "max").trial == 2  # type: ignore[union-attr]
    # Nobody reached the target: the best validation metric, in the suite's direction.
    misses = [t(0, "budget_exhausted", metric=0.4), t(1, "budget_exhausted", metric=0.2)]
    assert choose_trial(misses, "max").trial == 0  # type: ignore[union-attr]
    assert choose_trial(misses, "min").trial == 1  # type: ignore[union-attr]


def test_failed_trials_rank_last_even_when_they_looked_best() -> None:
    trials = [
        t(0, "diverged", ttt=0.1, metric=0.99),  # reached fast, then diverged: never chosen
        t(1, "oom", metric=0.99),
        t(2, "budget_exhausted", metric=0.3),
        t(3, "budget_exhausted", metric=float("nan")),  # no finite metric: like a failure
        t(4, "timeout", metric=0.98),
    ]
    assert [trial_tier(r) for r in trials] == [2, 2, 1, 2, 2]
    ranked = rank_trials(trials, "max")
    assert ranked[0].trial == 2 and [r.trial for r in ranked[1:]] == [0, 1, 3, 4]  # failures by index
    assert choose_trial(trials, "max").trial == 2  # type: ignore[union-attr]


def test_all_failed_trials_choose_nothing_and_ties_go_to_the_lower_index() -> None:
    assert choose_trial([t(0, "diverged"), t(1, "error", metric=None), t(2, "crashed")], "max") is None
    assert choose_trial([], "max") is None
    tie = [t(5, ttt=1.0, metric=0.95), t(3, ttt=1.0, metric=0.95), t(4, ttt=1.0, metric=0.96)]
    assert [r.trial for r in rank_trials(tie, "max")] == [4, 3, 5]  # equal time: metric, then index
    same = [t(2, "budget_exhausted", metric=0.5), t(1, "budget_exhausted", metric=0.5)]
    assert choose_trial(same, "max").trial == 1  # type: ignore[union-attr]


def study(trials: int = 3) -> tuning.Study:
    protocol = tuning.Protocol(trials=trials, rerun_seeds=(0, 1))
    template = RunSpec(suite="tiny-ce", optimizer="sgd")
    return tuning.plan_study(
        "tiny-ce",
        "sgd",
        "torch",
        protocol=protocol,
        space={"lr": LogUniform(1e-3, 1.0)},
        fixed={"momentum": 0.0},
        preset=None,
        template=template,
        resolve=lambda point, preset: {"lr": point["lr"], "momentum": point["momentum"]},
    )


def test_select_reads_stored_rows_and_waits_for_missing_trials() -> None:
    s = study(3)
    assert [tr.index for tr in s.trials] == [0, 1, 2]
    assert len({tr.config_hash for tr in s.trials}) == 3
    assert [s.trial_spec(tr).seed for tr in s.trials] == [tuning.DEFAULT_TRIAL_SEED] * 3
    rows: dict[int, Any] = {
        0: {"status": "target_reached", "time_to_target_s": 2.0, "steps_to_target": 40, "best_val_metric": 0.91},
        1: {"status": "target_reached", "time_to_target_s": 1.0, "steps_to_target": 20, "best_val_metric": 0.92},
        2: {"status": "interrupted"},
    }
    undecided = tuning.select(s, rows, "max")
    assert not undecided.decided and undecided.missing == (2,) and undecided.chosen is None
    rows[2] = {"status": "diverged", "time_to_target_s": None, "steps_to_target": None, "best_val_metric": 0.99}
    sel = tuning.select(s, rows, "max")
    assert sel.decided and sel.chosen is s.trials[1] and [r.trial for r in sel.ranking] == [1, 0, 2]
    reruns = s.rerun_specs(sel.chosen)
    assert [r.seed for r in reruns] == [0, 1] and all(r.hparams == s.trials[1].point for r in reruns)
    failed = {i: {"status": "diverged"} for i in range(3)}
    none = tuning.select(s, failed, "max")
    assert none.decided and none.chosen is None and "all 3 trials failed" in none.reason
    plan = tuning.rerun_plan(_FakePlan(), [sel, none])
    assert len(plan.specs) == 2 and {r.role for r in plan.roles} == {"rerun"}
    assert {r.config_hash for r in plan.roles} == {s.trials[1].config_hash} and {r.trial for r in plan.roles} == {1}


class _FakePlan:
    config = None
    skipped = ()
    source = "test"
    adapters = None
    studies = ()


def test_an_empty_search_space_gives_one_trial() -> None:
    s = tuning.plan_study(
        "tiny-ce",
        "x",
        "torch",
        protocol=tuning.Protocol(trials=8),
        space={},
        fixed={},
        preset=None,
        template=RunSpec(suite="tiny-ce", optimizer="x"),
        resolve=lambda point, preset: {"a": 1},
    )
    assert len(s.trials) == 1 and s.trials[0].point == {} and "no search space" in s.note


# ---------------------------------------------------------------------------------- sweep files

BASE = 'name = "t"\nsuites = ["tiny-ce"]\noptimizers = ["sgd"]\n'


def test_a_tuned_sweep_file_records_its_protocol(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        BASE + "trials = 5\nrerun_seeds = [3, 4]\ntrial_seed = 7\nsampler = 'sobol'\nstudy_seed = 2\n"
        "[hparams.sgd]\nnesterov = true\n[search.sgd]\nlr = { log_uniform = [1e-3, 0.1] }\n"
    )
    config = load_config(path)
    assert config.track == "tuned" and config.tuning == tuning.Protocol(5, (3, 4), 7, "sobol", 2)
    assert config.search == {"sgd": {"lr": LogUniform(1e-3, 0.1)}}
    spec = config.to_dict()["tuning"]
    assert spec["trials"] == 5 and spec["rerun_seeds"] == [3, 4] and spec["sampler_name"] == "sobol"
    assert spec["search"] == {"sgd": {"lr": {"log_uniform": [1e-3, 0.1]}}} and "scipy" in spec["sampler"]
    assert load_config({**_mapping(BASE), "trials": 2}).tuning == tuning.Protocol(trials=2)


def _mapping(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("trials = 3\nseeds = [0, 1]", "a tuned sweep runs every trial on trial_seed"),
        ("trials = 3\n[hparams.sgd]\nlr = [0.1, 0.2]", "hparams.sgd.lr: a tuned sweep has no grid axes"),
        ("trials = 3\ntrack = 'untuned'", 'set track = "tuned" or leave it out'),
        ("trials = 0", "trials must be positive"),
        ("trials = 3\nrerun_seeds = [0, 1000]", "trial_seed 1000 is also a re-run seed"),
        ("trials = 3\nrerun_seeds = 0", "rerun_seeds = 0"),
        ("trials = 3\nrerun_seeds = [1, 1]", "rerun_seeds lists a seed more than once"),
        ("trials = 3\nsampler = 'grid'", "sampler must be one of halton, sobol"),
        ("trials = 3\nstudy_seed = -1", "study_seed must be a non-negative integer"),
        ("rerun_seeds = 3", "rerun_seeds only applies to a tuned sweep: add trials"),
        ("trials = 3\n[search.sgd]\nlr = { log_uniform = [0, 1] }", "search.sgd.lr: log_uniform: a log-uniform"),
        ("trials = 3\n[search.adamw]\nlr = { uniform = [0, 1] }", "search.adamw: 'adamw' is not in optimizers"),
        ("trials = 3\n[hparams.sgd]\nlr = 0.1\n[search.sgd]\nlr = { uniform = [0.1, 1] }", "also fixed in hparams"),
    ],
)
def test_bad_tuned_sweep_files_get_one_clear_message(tmp_path: Path, extra: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(BASE + extra + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_search_overrides_are_checked_against_the_adapter(tmp_path: Path) -> None:
    from harness.plans import load

    path = tmp_path / "s.toml"
    path.write_text(BASE + "trials = 2\n[search.sgd]\nlrr = { uniform = [0.1, 1] }\n")
    with pytest.raises(ConfigError, match="'lrr' is not a hyperparameter of sgd; did you mean lr"):
        load(path)
    path.write_text(BASE + "trials = 2\n[search.sgd]\nmomentum = { uniform = [0.5, 1.5] }\n")
    with pytest.raises(ConfigError, match="reaches a value the adapter refuses: sgd: momentum must be < 1"):
        load(path)
    path.write_text(BASE + "trials = 3\nrerun_seeds = 2\n[hparams.sgd]\nnesterov = true\n")
    plan = load(path)
    assert plan.tuned and len(plan.studies) == 1 and len(plan.specs) == 3
    (s,) = plan.studies
    assert "nesterov" not in s.space and set(s.space) == {"lr", "momentum"}
    assert [r.role for r in plan.roles] == ["trial"] * 3 and [r.trial for r in plan.roles] == [0, 1, 2]
    assert all(spec.seed == 1000 and spec.hparams["nesterov"] is True for spec in plan.specs)
    assert plan.to_dict()["reruns_planned"] == 2 and plan.to_dict()["studies"][0]["fixed"] == {"nesterov": True}


# ---------------------------------------------------------------------------------- scoring


def test_tunability_pools_both_tracks_on_one_scale() -> None:
    inf = math.inf
    untuned = pd.DataFrame({"a": [2.0, 1.0, inf], "b": [4.0, inf, inf]}, index=["x", "y", "z"])
    tuned = pd.DataFrame({"a": [1.0, 1.0, inf], "b": [2.0, 2.0, inf], "c": [1.0, 1.0, 1.0]}, index=["x", "y", "z"])
    table = tunability_table(untuned, tuned)
    assert list(table.columns[:4]) == ["score_untuned", "score_tuned", "delta", "speedup"]
    # Common suites a, b; references: a -> 1 (x tuned, y both), b -> 2 (x and y tuned).
    x, y, z = table.loc["x"], table.loc["y"], table.loc["z"]
    assert x["score_untuned"] == pytest.approx(((4 - 2) / 3 + (4 - 2) / 3) / 2)
    assert x["score_tuned"] == pytest.approx(1.0) and y["score_tuned"] == pytest.approx(1.0)
    assert y["score_untuned"] == pytest.approx((1.0 + 0.0) / 2)
    assert z["score_untuned"] == 0 and z["score_tuned"] == 0 and math.isnan(z["speedup"])
    assert x["delta"] == pytest.approx(1.0 - 2 / 3)
    assert x["speedup"] == pytest.approx(math.sqrt(2.0 * 2.0)) and y["speedup"] == pytest.approx(1.0)
    assert (x["suites"], x["reached_untuned"], x["reached_tuned"], x["both_reached"]) == (2, 2, 2, 2)
    assert (y["reached_untuned"], y["reached_tuned"], y["both_reached"]) == (1, 2, 1)
    assert list(table.index) == ["y", "x", "z"]  # the largest gain first
    assert tunability_table(pd.DataFrame(), pd.DataFrame()).empty


ENV = {"fingerprint": "env-tune", "device_kind": "cpu", "device_name": "Test CPU", "torch": "2.13.0"}


def run_result(
    optimizer: str, seed: int, ttt: float | None, *, status: str | None = None, lr: float = 0.1, metric: float = 0.8
) -> RunResult:
    status = status or ("target_reached" if ttt is not None else "budget_exhausted")
    spec = RunSpec(suite="tiny-ce", optimizer=optimizer, seed=seed, hparams={"lr": lr})
    key = hashlib.sha1(f"{optimizer}/{seed}/{ttt}/{status}/{lr}".encode()).hexdigest()[:32]
    return RunResult(
        spec=spec,
        status=status,
        key=key,
        suite_version=None,
        adapter_version="v1",
        hparams={"lr": lr},
        device="cpu",
        steps=10,
        val_metric="val_accuracy",
        best_val_metric=metric,
        target="val_accuracy >= 0.9",
        steps_to_target=None if ttt is None else int(ttt * 10),
        time_to_target_s=ttt,
        step_time_median_s=0.1,
        environment=dict(ENV),
    )


SUITES = {"tiny-ce": SuiteInfo(name="tiny-ce", version=None, target_metric="val_accuracy", target_value=0.9)}


def test_studies_are_scored_on_reruns_and_an_all_failed_study_scores_inf(tmp_path: Path) -> None:
    store = open_store(tmp_path / "s.db")
    untuned = store.create_sweep("u")
    tuned = store.create_sweep("t", kind="tune", track="tuned", spec={"tuning": {"trials": 3, "rerun_seeds": [0, 1]}})
    for seed in (0, 1):
        store.save_run(run_result("sgd", seed, 2.0), sweep_id=untuned)
        store.save_run(run_result("adamw", seed, 1.0), sweep_id=untuned)
        store.save_run(run_result("kfac", seed, 4.0), sweep_id=untuned)
    # sgd: trial 1 wins its study; its re-runs score 1.0 and 3.0 -> median 2.0. A trial that
    # looked faster but diverged (trial 2) is listed, ranked last, never scored.
    for i, (ttt, status) in enumerate(((1.5, None), (0.8, None), (0.1, "diverged"))):
        r = run_result("sgd", 1000, ttt, status=status, lr=0.01 * (i + 1))
        store.save_run(r, sweep_id=tuned, track="tuned", role="trial", trial=i, config_hash=f"h{i}")
    for seed, ttt in ((0, 1.0), (1, 3.0)):
        store.save_run(
            run_result("sgd", seed, ttt, lr=0.02),
            sweep_id=tuned,
            track="tuned",
            role="rerun",
            trial=1,
            config_hash="h1",
        )
    # adamw: a normal study; its re-runs hit 0.5 twice.
    store.save_run(run_result("adamw", 1000, 0.4, lr=0.3), sweep_id=tuned, track="tuned", role="trial", trial=0)
    for seed in (0, 1):
        store.save_run(run_result("adamw", seed, 0.5, lr=0.3), sweep_id=tuned, track="tuned", role="rerun", trial=0)
    # kfac: every trial failed -> no configuration, no re-runs, inf on every seed.
    for i, status in enumerate(("diverged", "error", "oom")):
        r = run_result("kfac", 1000, None, status=status, lr=0.1 * (i + 1))
        store.save_run(r, sweep_id=tuned, track="tuned", role="trial", trial=i)

    data = site_data.load(store, suites=SUITES)
    studies = data.studies.set_index("optimizer")
    assert studies.loc["sgd", "ranking"] == [1, 0, 2] and studies.loc["sgd", "best_trial"] == 1
    assert studies.loc["sgd", "chosen_trial"] == 1 and studies.loc["sgd", "failed_trials"] == 1
    assert bool(studies.loc["kfac", "all_failed"]) and studies.loc["kfac", "best_trial"] is None
    assert not studies.loc["adamw", "all_failed"]

    boards = {b.track: b for b in data.boards}
    tuned_view = views.board_scores(data, boards["tuned"])
    time = tuned_view["time_table"]["tiny-ce"]
    assert time["sgd"] == 2.0 and time["adamw"] == 0.5 and math.isinf(time["kfac"])
    scores = tuned_view["scores"]["score_time"]
    assert scores["adamw"] == 1.0 and scores["sgd"] == 0.0 and scores["kfac"] == 0.0
    kfac_cell = next(r for r in tuned_view["rows"] if r["optimizer"] == "kfac")["cells"][0]
    assert "all 3 tuning trials failed" in kfac_cell["entry"].config_label and kfac_cell["css"] == "miss"

    (tv,) = views.tunability_views(data)
    table = tv["table"]
    # Pooled reference on tiny-ce: 0.5 (adamw tuned). sgd untuned 2.0 (r = 4) -> 0, tuned 2.0 -> 0;
    # adamw untuned 1.0 (r = 2) -> 2/3, tuned 1.0; kfac untuned 4.0 (r = 8) -> 0, tuned inf -> 0.
    assert table.loc["adamw", "score_untuned"] == pytest.approx(2 / 3)
    assert table.loc["adamw", "score_tuned"] == pytest.approx(1.0) and table.loc["adamw", "speedup"] == 2.0
    assert table.loc["sgd", "speedup"] == pytest.approx(1.0) and table.loc["sgd", "delta"] == 0.0
    assert table.loc["kfac", "reached_tuned"] == 0 and math.isnan(table.loc["kfac", "speedup"])
    assert views.tuning_protocols(data, boards["tuned"])[0]["tuning"]["trials"] == 3

    # A second study of sgd (a re-tuning) replaces the first one's choice on the board.
    newer = store.create_sweep("t2", kind="tune", track="tuned")
    for seed in (0, 1):
        store.save_run(
            run_result("sgd", seed, 9.0, lr=0.5), sweep_id=newer, track="tuned", role="rerun", trial=4, config_hash="h9"
        )
    data = site_data.load(store, suites=SUITES)
    board = {b.track: b for b in data.boards}["tuned"]
    assert views.board_scores(data, board)["time_table"].loc["sgd", "tiny-ce"] == 9.0
    store.dispose()
