"""The score-vs-rung plot of the target ladder (leaderboard.plots.ladder) and its place on the board."""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from db.store import open_store
from leaderboard import plots
from suites import get_suite
from tests.test_site_build import result

EVIL = 'x"><svg onload=alert(1)>&'


def test_plot_has_one_line_per_optimizer_and_escapes_names(tmp_path: Path) -> None:
    rungs = [
        {"rung": "50%", "fraction": 0.5, "scores": {"sgd": (1.0, 1.0), EVIL: (0.5, 0.25)}},
        {"rung": "80%", "fraction": 0.8, "scores": {"sgd": (0.75, 1.0), EVIL: (math.nan, 0.0)}},
        {"rung": "100%", "fraction": 1.0, "scores": {"sgd": (0.0, 0.0), EVIL: (0.0, 0.0)}},
    ]
    path = tmp_path / "ladder.svg"
    plots.ladder(rungs, plots.styles(["sgd", EVIL]), optimizers=["sgd", EVIL, "never-ran"], path=path)
    text = path.read_text()
    ET.fromstring(text)  # well-formed: every name escaped
    assert "<svg onload" not in text and "&gt;&lt;svg onload=alert(1)&gt;&amp;</text>" in text
    assert "never-ran" not in text  # no scores on any rung: no line, no legend entry
    for label in ("50%", "80%", "100%", "by time-to-rung", "by steps-to-rung"):
        assert label in text


@pytest.mark.slow
def test_board_shows_the_ladder_plot(tmp_path: Path) -> None:
    from leaderboard.site import build

    store = open_store(tmp_path / "r.db")
    for seed in range(2):
        for opt, ttt in (("sgd", 0.2), ("adamw", 0.1)):
            run = result("digits-mlp", opt, seed, ttt=ttt, suite_version=get_suite("digits-mlp").version)
            store.save_run(dataclasses.replace(run, steps=int(ttt / 1e-3)))
    build(store, tmp_path / "site", jobs=1)
    store.dispose()
    page = (tmp_path / "site" / "index.html").read_text()
    svgs = list((tmp_path / "site" / "plots").glob("ladder-*.svg"))
    assert len(svgs) == 1 and f"plots/{svgs[0].name}" in page
    assert "sgd" in svgs[0].read_text() and "adamw" in svgs[0].read_text()
