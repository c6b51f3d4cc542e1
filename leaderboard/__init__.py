"""Scoring (time-to-target, performance profiles) and the static leaderboard site.

The leaderboard reads the database and renders; it never imports a backend (docs/architecture.md). The
CLI (``harness/commands/site.py``) passes in what only the registry knows: method cards and
the current adapter versions.
"""

from leaderboard.data import HyperparamInfo, MethodInfo, SuiteInfo
from leaderboard.site import BuildReport, SiteError, build

__all__ = ["BuildReport", "HyperparamInfo", "MethodInfo", "SiteError", "SuiteInfo", "build"]
