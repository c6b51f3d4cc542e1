"""Page models: the numbers each page shows, computed from :class:`leaderboard.data.SiteData`.

Everything here returns plain dicts and frames of raw values (numbers, ``None``, ``inf``);
formatting and escaping happen in the templates. The exports write the same tables.

* :mod:`~leaderboard.views.common`: status words, ratio classes, display order;
* :mod:`~leaderboard.views.boards`: score table and matrix of a board, a suite's entries and
  convergence curves, an optimizer's results;
* :mod:`~leaderboard.views.approx`: approximation quality;
* :mod:`~leaderboard.views.history`: nightly trends;
* :mod:`~leaderboard.views.tuning`: tuning protocols, studies and tunability.
"""

from leaderboard.views.approx import approx_views
from leaderboard.views.boards import (
    board_environments,
    board_scores,
    convergence_curves,
    optimizer_results,
    suite_entries,
)
from leaderboard.views.common import (
    RATIO_BUCKETS,
    STATUS_WORDS,
    has_failure,
    optimizer_order,
    ratio_class,
    scorable_suites,
    status_text,
)
from leaderboard.views.history import HISTORY_METRICS, history_view
from leaderboard.views.tuning import study_rows, tunability_views, tuning_protocols

__all__ = [
    "HISTORY_METRICS",
    "RATIO_BUCKETS",
    "STATUS_WORDS",
    "approx_views",
    "board_environments",
    "board_scores",
    "convergence_curves",
    "has_failure",
    "history_view",
    "optimizer_order",
    "optimizer_results",
    "ratio_class",
    "scorable_suites",
    "status_text",
    "study_rows",
    "suite_entries",
    "tunability_views",
    "tuning_protocols",
]
