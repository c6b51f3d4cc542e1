"""``ngbench site build`` and ``ngbench site serve``: the static leaderboard.

The leaderboard itself reads only the database and never imports a backend; this command sits
above it and adds what only the registry knows: the method cards (descriptions, papers,
hyperparameters and their defaults, search spaces) and the current adapter versions, which
decide which stored runs are stale.
"""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.errors import ConfigError


def _method_info(info: Any, versions: dict[str, str]) -> Any:
    from leaderboard.data import HyperparamInfo, MethodInfo

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
                provenance=h.provenance,
                source=h.source,
            )
            for h in info.hyperparams
        ),
        search_space=dict(info.search_space),
        capabilities=dict(info.capabilities),
        versions=versions,
    )


def method_metadata(warn: Any = None) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """Method cards and current adapter versions of every installed backend's adapters.

    Every adapter is described by one scrubbed worker (``harness.external``): this process may
    hold the database URL and must not run third-party code, and it forks the site's workers,
    which JAX does not survive once imported. Adapters (or backends) that cannot be described
    are reported through ``warn``; their runs are then judged current by the newest stored
    version.
    """
    from backends.spec import BACKENDS
    from harness import external, registry
    from harness.worker import LaneError

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
    from db.store import open_store
    from leaderboard.site import build

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


def serve(directory: Path, host: str, port: int) -> None:
    """Serve ``directory`` over HTTP until Ctrl-C."""
    server = make_server(directory, host, port)
    url_host = f"[{host}]" if ":" in host else host
    print(f"serving {directory} at http://{url_host}:{server.server_address[1]}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL or SQLite file (default: NGBENCH_DB_URL or ./ngbench.db).")
]
OutOption = Annotated[
    Path, typer.Option("--out", "-o", help="Output directory (replaced only when the build succeeds).")
]
TrackOption = Annotated[
    list[str] | None, typer.Option("--track", help="Only this ranking track (repeatable): untuned, tuned.")
]
JobsOption = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Processes for plots and run pages (default: CPUs, max 4).")
]
RegistryOption = Annotated[
    bool,
    typer.Option(
        "--registry/--no-registry", help="Read method cards and current adapter versions from the installed adapters."
    ),
]
DirOption = Annotated[Path, typer.Option("--dir", "-d", help="Site directory to serve.")]
HostOption = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOption = Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port (0: any free port).")]
BuildOption = Annotated[bool, typer.Option("--build", help="Build the site from --db first.")]


def register(app: typer.Typer) -> None:
    site = typer.Typer(help="Build and browse the static leaderboard site.", no_args_is_help=True, add_completion=False)

    @site.command("build")
    def build_command(
        db: DbOption = None,
        out: OutOption = Path("site"),
        track: TrackOption = None,
        jobs: JobsOption = None,
        registry: RegistryOption = True,
    ) -> None:
        """Render the leaderboard from the database into a static site (works from file://)."""
        report = build_site(db, out, track, jobs=jobs, registry=registry)
        print(
            f"wrote {report.pages} pages and {report.plots} plots for {report.runs} runs to {report.out} "
            f"in {report.seconds:.1f} s; open {report.out / 'index.html'}"
        )

    @site.command("serve")
    def serve_command(
        directory: DirOption = Path("site"),
        host: HostOption = "127.0.0.1",
        port: PortOption = 8000,
        build: BuildOption = False,
        db: DbOption = None,
    ) -> None:
        """Serve a built site over HTTP for local browsing."""
        if build:
            report = build_site(db, directory, None)
            print(f"wrote {report.pages} pages to {report.out} in {report.seconds:.1f} s")
        serve(directory, host, port)

    app.add_typer(site, name="site")
