"""The site's pages, one module per page (or family of pages), each with ``write(ctx)``.

* :mod:`~leaderboard.pages.context`: :class:`~leaderboard.pages.context.BuildContext`, the
  state one build shares (data, output, template environment, memoised views, deferred tasks);
* :mod:`~leaderboard.pages.templating`: the autoescaping Jinja environment and its filters;
* the pages: :mod:`~leaderboard.pages.runs` (``runs/<id>.html``, scheduled first so that the
  workers write them while the rest is rendered), :mod:`~leaderboard.pages.overview`
  (``index.html``, ``boards/``), :mod:`~leaderboard.pages.suites`,
  :mod:`~leaderboard.pages.optimizers`, :mod:`~leaderboard.pages.approx`,
  :mod:`~leaderboard.pages.history`, :mod:`~leaderboard.pages.tunability` and
  :mod:`~leaderboard.pages.exports` (``data.html`` and ``data/``).

The numbers a page shows come from :mod:`leaderboard.views`; :mod:`leaderboard.site` runs the
pages in order.
"""
