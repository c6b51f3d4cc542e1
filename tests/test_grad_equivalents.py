"""Gradient equivalents per step (leaderboard.cost): the weights, the built-in adapters' counts
weighed by them, and the figure on the site (runs.csv, run, optimizer and suite pages)."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest

from backends.torch.optimizers.egn import EGN
from backends.torch.optimizers.sf import SF
from backends.torch.optimizers.sgd import SGD
from db.store import open_store
from leaderboard.cost import PASS_WEIGHTS, grad_equivalents
from tests.second_order_dense import problem_and_batch
from tests.test_site_build import result


def test_weights_make_one_forward_and_backward_one_gradient() -> None:
    assert PASS_WEIGHTS["forward"] + PASS_WEIGHTS["backward"] == pytest.approx(1.0)
    assert grad_equivalents({"forward": 1.0, "backward": 1.0, "jvp": 0.0, "vjp": 0.0, "per_sample": 0.0}) == 1.0
    # K-FAC's ~1.2 F, 2 B, 2 JVP; a per-sample pass is one batched forward + backward.
    assert grad_equivalents({"forward": 1.2, "backward": 2.0, "jvp": 2.0}) == pytest.approx(0.4 + 4 / 3 + 4 / 3)
    assert grad_equivalents({"forward": 1.0, "per_sample": 1.0}) == pytest.approx(4 / 3)


def test_nothing_counted_is_not_zero() -> None:
    assert math.isnan(grad_equivalents({}))
    assert math.isnan(grad_equivalents(None))
    assert math.isnan(grad_equivalents({"forward": 1.0, "teleport": 1.0}))
    assert math.isnan(grad_equivalents({"forward": float("nan")}))
    assert grad_equivalents({"forward": 1.0, "teleport": 0.0}) == pytest.approx(1 / 3)


def _step_counts(adapter: object, hparams: dict[str, object]) -> dict[str, int]:
    p, b = problem_and_batch("tiny-ce")  # C = 3 outputs
    a = adapter  # type: ignore[assignment]
    state = a.init(p, type(a).resolve(hparams))  # type: ignore[attr-defined]
    before = p.counters.snapshot()
    a.step(p, p.params0, state, b)  # type: ignore[attr-defined]
    after = p.counters.snapshot()
    return {k: after[k] - before[k] for k in after}


def test_built_in_adapters_cost_their_extra_passes() -> None:
    """SGD is one gradient; SF (one sampled-label backward more) 1 + 2/3; EGN (C = 3 backward
    passes) 1/3 + 3 x 2/3; the dense EGN Gram the same plus the forward jacrev runs again."""
    sgd = grad_equivalents(_step_counts(SGD(), {}))
    sf = grad_equivalents(_step_counts(SF(), {}))
    egn_taps = grad_equivalents(_step_counts(EGN(), {"gram": "taps"}))
    egn_dense = grad_equivalents(_step_counts(EGN(), {"gram": "dense"}))
    assert sgd == pytest.approx(1.0)
    assert sf == pytest.approx(sgd + 2 / 3)
    assert egn_taps == pytest.approx(1 / 3 + 3 * 2 / 3)
    assert egn_dense == pytest.approx(egn_taps + 1 / 3)
    assert min(sf, egn_taps, egn_dense) > sgd


@pytest.mark.slow
def test_site_shows_and_exports_grad_equivalents(tmp_path: Path) -> None:
    from leaderboard.site import build

    store = open_store(tmp_path / "r.db")
    passes = {"sgd": {"forward": 1.0, "backward": 1.0}, "egn": {"forward": 1.0, "backward": 10.0}}
    for seed in range(2):
        for opt, counts in passes.items():
            store.save_run(dataclasses.replace(result("tiny-ce", opt, seed, ttt=1.0), passes_per_step=counts))
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    with (tmp_path / "site" / "data" / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_opt = {r["optimizer"]: float(r["grad_equivalents_per_step"]) for r in rows}
    assert by_opt["sgd"] == pytest.approx(1.0)
    assert by_opt["egn"] == pytest.approx(1 / 3 + 10 * 2 / 3)
    with (tmp_path / "site" / "data" / "entries.csv").open() as f:
        entries = {r["optimizer"]: float(r["grad_equivalents_per_step"]) for r in csv.DictReader(f)}
    assert entries == pytest.approx({"sgd": 1.0, "egn": 7.0})
    run_page = next((tmp_path / "site" / "runs").glob("*.html")).read_text()
    assert "gradient equivalents per step" in run_page
    opt_page = (tmp_path / "site" / "optimizers" / "egn.html").read_text()
    assert "grad. equiv. / step" in opt_page and ">7</td>" in opt_page
    method = (tmp_path / "site" / "data.html").read_text()
    assert 'id="cost"' in method and "forward 0.333, backward 0.667, VJP 0.667, JVP 0.667, per-sample pass 1." in method
    assert "1000 times" in method and "p ≤ 0.05" in method and "50 %, 80 %, 95 %, 100 %" in method
