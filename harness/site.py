"""The static leaderboard with what only the registry knows: method cards and adapter versions.

The leaderboard itself (:mod:`leaderboard.site`) reads only the database and never imports a
backend; :func:`build_site` adds the method cards (descriptions, papers, hyperparameters and
their defaults, search spaces) and the current adapter versions, which decide which stored runs
are stale. :func:`make_server` serves a built site over HTTP for local browsing.
"""

from __future__ import annotations

import functools
import http.server
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.spec import BACKENDS
from db.store import open_store
from harness import external, registry
from harness.errors import ConfigError
from harness.worker import LaneError
from leaderboard.catalogue import HyperparamInfo, MethodInfo
from leaderboard.site import build


def _method_info(info: external.AdapterInfo, versions: dict[str, str]) -> MethodInfo:
    return MethodInfo(
        name=info.name,
        paper=info.paper,
        description=info.description,
        hyperparams=tuple(
            HyperparamInfo(
                name=h.name,
                type=h.type,
                default=h.default,
                doc=h.doc,
                range=h.range,
                provenance=getattr(h, "provenance", ""),
                source=getattr(h, "source", ""),
            )
            for h in info.hyperparams
        ),
        search_space=dict(info.search_space),
        capabilities=dict(info.capabilities),
        versions=versions,
    )


def method_metadata(
    warn: Callable[[str], Any] | None = None,
) -> tuple[dict[str, MethodInfo], dict[tuple[str, str], str]]:
    """Method cards and current adapter versions of every installed backend's adapters.

    Every adapter is described by one scrubbed worker (``harness.external``): this process may
    hold the database URL and must not run third-party code, and it forks the site's workers,
    which JAX does not survive once imported. Adapters (or backends) that cannot be described
    are reported through ``warn``; their runs are then judged current by the newest stored
    version.
    """
    backends = [b for b in BACKENDS if registry.backend_available(b)]
    try:
        described, problems = external.describe_all(backends)
    except LaneError as exc:
        described, problems = {}, [f"could not describe the adapters: {exc}"]
    for problem in problems:
        if warn is not None:
            warn(f"{problem}; affected runs are judged current by the newest stored adapter version")
    infos: dict[str, Any] = {}
    versions: dict[tuple[str, str], str] = {}
    per_method: dict[str, dict[str, str]] = {}
    for backend, adapters in described.items():
        for info in adapters:
            versions[(info.name, backend)] = info.version
            per_method.setdefault(info.name, {})[backend] = info.version
            infos.setdefault(info.name, info)
    return {name: _method_info(info, per_method[name]) for name, info in infos.items()}, versions


def _warn(message: str) -> None:
    print(f"ngbench: warning: {message}", file=sys.stderr)


def build_site(
    db: str | None, out: Path, tracks: list[str] | None, jobs: int | None = None, registry: bool = True
) -> Any:
    """Build the site from the database ``db`` into ``out`` (with the registry's method cards and
    adapter versions unless ``registry`` is false); returns the leaderboard's build report."""
    store = open_store(db)
    try:
        methods, versions = method_metadata(_warn) if registry else ({}, {})
        return build(store, out, tracks=tracks or None, methods=methods, current_adapters=versions, jobs=jobs)
    finally:
        store.dispose()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} - {format % args}\n")


def make_server(directory: Path, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the site in ``directory`` (static files only, nothing else)."""
    if not (directory / "index.html").is_file():
        raise ConfigError(
            f"{directory} holds no site (no index.html); build one with `ngbench site build --out {directory}`"
        )
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
