"""The overview: one page per board (``boards/<slug>.html``), the first board also as
``index.html``, with its performance-profile plot, selectors and run counts."""

from __future__ import annotations

from typing import Any

from leaderboard import scoring
from leaderboard.pages.context import BuildContext
from leaderboard.ranking import Board
from leaderboard.views import board_environments, tuning_protocols


def write(ctx: BuildContext) -> None:
    data = ctx.data
    if not data.boards:
        ctx.render("overview.html", "index.html", board=None, view=None, selectors={}, environments=[])
        return
    for i, board in enumerate(data.boards):
        view = ctx.board_view(board)
        plot = None
        if view["profile_points"]:
            plot = ctx.plot(
                "profiles",
                f"plots/profile-{board.slug}.svg",
                view["profile_points"],
                ctx.style,
                tau_max=scoring.TAU_MAX,
            )
        ladder_plot = None
        if len(view["ladder"]) > 1:
            ladder_plot = ctx.plot(
                "ladder",
                f"plots/ladder-{board.slug}.svg",
                view["ladder"],
                ctx.style,
                optimizers=[r["optimizer"] for r in view["rows"] if not r["stale_only"]],
            )
        context: dict[str, Any] = {
            "board": board,
            "ladder_plot": ladder_plot,
            "view": view,
            "selectors": selectors(ctx, board),
            "environments": board_environments(data, board),
            "profile_plot": plot,
            "board_pages": ctx.board_pages,
            "counts": board_counts(ctx, board),
            "protocols": tuning_protocols(data, board),
            "tunability_page": tunability_page(ctx, board),
        }
        ctx.render("overview.html", ctx.board_pages[board.key], **context)
        if i == 0:
            ctx.render("overview.html", "index.html", **context)


def tunability_page(ctx: BuildContext, board: Board) -> str | None:
    """The tunability section of the board's (backend, hardware), if both tracks exist there."""
    for v in ctx.tunability():
        if (v["backend"], v["hardware"]) == (board.backend, board.hardware):
            return f"tunability.html#{v['slug']}"
    return None


def board_counts(ctx: BuildContext, board: Board) -> dict[str, int]:
    """How many of the board's runs are scored, stale, superseded, trials, off-protocol."""
    r = ctx.data.runs
    mine = r[(r["track"] == board.track) & (r["backend"] == board.backend) & (r["hardware"] == board.hardware)]
    return {
        "runs": len(mine),
        "scored": int(mine["scored"].sum()),
        "stale": int(mine["stale"].sum()),
        "superseded": int(mine["superseded"].sum()),
        "trials": int((mine["role"] == "trial").sum()),
        "nonstandard": int((mine["protocol_note"] != "").sum()),
        "unscored": int((~mine["scored"] & ~mine["stale"] & ~mine["superseded"]).sum()),
    }


def selectors(ctx: BuildContext, board: Board) -> dict[str, list[dict[str, Any]]]:
    """Track, backend and hardware links to the closest existing board of each choice."""
    boards = ctx.data.boards

    def pick(**want: str) -> Board:
        best = None
        for b in boards:
            score = sum(getattr(b, k) == v for k, v in want.items())
            if all(getattr(b, k) == v for k, v in list(want.items())[:1]) and (best is None or score > best[0]):
                best = (score, b)
        assert best is not None
        return best[1]

    out: dict[str, list[dict[str, Any]]] = {}
    for field_name in ("track", "backend", "hardware"):
        options = []
        for value in dict.fromkeys(getattr(b, field_name) for b in boards):
            others = {k: getattr(board, k) for k in ("track", "backend", "hardware") if k != field_name}
            target = pick(**{field_name: value}, **others)
            options.append(
                {
                    "label": value,
                    "href": ctx.board_pages[target.key],
                    "current": getattr(board, field_name) == value,
                }
            )
        out[field_name] = options
    return out
