"""Small pieces of the site: names to file names, number formats, inline SVG, exports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leaderboard import export, svg
from leaderboard import format as fmt


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "a/b", "<script>", "CON", ".hidden", "", "ünïcode", "x" * 300, "Adam W", "sgd.", "-x"],
)
def test_slugs_are_safe_file_names(name: str) -> None:
    s = fmt.slug(name)
    assert s and len(s) <= 70
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789._-" for c in s)
    assert not s.startswith(".") and "/" not in s and ".." not in s.replace("-", "")[:2]


def test_slugs_keep_safe_names_and_never_collide() -> None:
    assert fmt.slug("tiny-ce") == "tiny-ce" and fmt.slug("adamw") == "adamw"
    names = ["A", "a", "a!", "a?", "a b", "a-b", "a_b"]
    assert len({fmt.slug(n) for n in names}) == len(names)


def test_number_formats() -> None:
    assert fmt.seconds(None) == fmt.DASH and fmt.seconds(math.nan) == fmt.DASH and fmt.seconds(math.inf) == "∞"
    assert fmt.seconds(2.5e-6) == "2.5 µs" and fmt.seconds(0.0123) == "12.3 ms" and fmt.seconds(4.56) == "4.56 s"
    assert fmt.seconds(600) == "10 min" and fmt.seconds(7200) == "2 h"
    assert fmt.bytes_(3 * 2**30) == "3 GiB" and fmt.bytes_(1536) == "1.5 KiB" and fmt.bytes_(None) == fmt.DASH
    assert fmt.ratio(1.0) == "1.00×" and fmt.ratio(math.inf) == "∞"
    assert fmt.integer(1234.4) == "1,234" and fmt.integer(math.inf) == "∞"
    assert fmt.sort_key(math.inf) == "Infinity" and fmt.sort_key(None) == "" and float(fmt.sort_key(0.1)) == 0.1
    assert fmt.value({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}' and fmt.value(True) == "true"
    assert fmt.passes({"forward": 1.0, "backward": 2.0, "jvp": 0.0}) == "fwd 1 · bwd 2"
    assert fmt.text(math.nan) == fmt.DASH and fmt.text(pd.NaT) == fmt.DASH and fmt.text("x") == "x"


def test_chart_escapes_text_and_draws_finite_points_only() -> None:
    s = svg.Series(np.array([0, 1, 2, 3]), np.array([1.0, np.nan, 2.0, 3.0]), "s1", "<b>x</b>")
    out = str(svg.chart([s], title="<script>alert(1)</script>", xlabel="step"))
    assert "<script>" not in out and "&lt;script&gt;" in out and "&lt;b&gt;x&lt;/b&gt;" in out
    assert out.count("<polyline") == 2  # the NaN splits the line in two
    assert "no data" in str(svg.chart([], title="t", xlabel="x"))
    logy = str(
        svg.chart([svg.Series(np.arange(3), np.array([0.0, 1.0, 10.0]), "s1", "")], title="t", xlabel="x", logy=True)
    )
    assert logy.count("<polyline") == 1  # the non-positive value is left out on a log axis


def test_sparkline_marks_flagged_nights_and_skips_misses() -> None:
    out = str(svg.sparkline([1.0, None, 2.0, math.inf, 3.0], [False, False, True, False, False]))
    assert out.count('class="flag"') == 1 and out.count('class="last"') == 1
    assert "inf" not in out.lower().replace("infinity", "")


def test_exports_write_inf_as_text_neutralise_formulas_and_keep_nested_values(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "tag": ["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)", "plain", None],
            "ttt": [1.5, math.inf, math.nan, 2.0, 3.0, 4.0],
            "hparams": [{"lr": 0.1}, {}, None, {"x": [1, 2]}, {"y": math.inf}, {}],
            "when": pd.to_datetime(["2025-01-01T00:00:00Z"] * 5 + [None], utc=True),
        }
    )
    export.write_table(frame, tmp_path / "t")
    records = json.loads((tmp_path / "t.json").read_text())
    assert records[0]["tag"] == "=cmd|' /C calc'!A0" and records[1]["ttt"] == "inf" and records[2]["ttt"] is None
    assert records[3]["hparams"] == {"x": [1, 2]} and records[4]["hparams"] == {"y": "inf"}
    assert records[0]["when"] == "2025-01-01T00:00:00Z" and records[5]["when"] is None
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "tag,ttt,hparams,when"
    assert lines[1].startswith("'=cmd|' /C calc'!A0,1.5,") and lines[2].startswith("'+1+1,inf")
    assert lines[3].startswith("-2,") and lines[4].startswith("'@SUM(A1)")
    export.write_table(None, tmp_path / "empty")
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_dates_render_in_utc_and_missing_ones_as_a_dash() -> None:
    from leaderboard.pages.templating import date_text

    assert date_text(pd.NaT) == fmt.DASH and date_text(None) == fmt.DASH
    assert date_text("2025-01-01T10:00:00+02:00") == "2025-01-01 08:00 UTC"
    assert date_text(pd.Timestamp("2025-01-01")) == "2025-01-01 00:00 UTC"
