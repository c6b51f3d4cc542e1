"""benchmarks/pass_context.py: a pass repeated against after a different pass."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks import pass_context


def test_the_mixed_lane_never_asks_the_same_question_twice_in_a_row() -> None:
    rng = np.random.default_rng(0)
    questions = list(pass_context.QUESTIONS)
    previous = None
    drawn = []
    for _ in range(400):
        previous = pass_context._next_question(rng, questions, previous)
        drawn.append(previous)
    assert all(a != b for a, b in itertools.pairwise(drawn))
    assert set(drawn) == set(questions)  # and every question is drawn


def test_both_contexts_are_measured_for_every_question_and_priced_per_kind() -> None:
    context = pass_context.measure("torch", "digits-mlp", rounds=3, warmup=1, block=3)
    assert set(context.repeated) == set(context.after_another) == set(pass_context.QUESTIONS)
    assert all(v > 0 for v in (*context.repeated.values(), *context.after_another.values()))
    # A gradient is one forward and one backward: the least squares splits it.
    for kinds, medians in (
        (context.kinds_repeated, context.repeated),
        (context.kinds_after_another, context.after_another),
    ):
        assert set(kinds) == {"forward", "backward", "jvp", "vjp"}
        assert kinds["forward"] + kinds["backward"] == pytest.approx(medians["gradient"], rel=1e-6)
    rows = pass_context.format_rows("torch", "digits-mlp", context)
    assert len(rows) == 8 and rows[0].startswith("| torch | digits-mlp | question: forward |")
