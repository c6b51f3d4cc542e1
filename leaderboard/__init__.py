"""The leaderboard: ranking rules, scoring (time-to-target, performance profiles) and the
static site.

The leaderboard reads the database and renders; it never imports a backend
(docs/architecture.md). Its caller (the ``ngbench site build`` command) passes in what only the
registry knows: method cards and the current adapter versions.

* :mod:`leaderboard.data` loads the database into :class:`leaderboard.data.SiteData`;
* :mod:`leaderboard.catalogue` describes suites and methods;
* :mod:`leaderboard.ranking` holds the ranking rules (staleness, boards, roles, entries,
  tuning studies), :mod:`leaderboard.scoring` the scores (AlgoPerf performance profiles);
* :mod:`leaderboard.views` computes what each page shows, :mod:`leaderboard.pages` writes the
  pages, and :mod:`leaderboard.site` runs the build.
"""

from leaderboard.catalogue import HyperparamInfo, MethodInfo, SuiteInfo
from leaderboard.site import BuildReport, SiteError, build

__all__ = ["BuildReport", "HyperparamInfo", "MethodInfo", "SiteError", "SuiteInfo", "build"]
