"""``ngbench site build`` and ``ngbench site serve``: the static leaderboard.

The leaderboard itself reads only the database and never imports a backend; this command sits
above it and adds what only the registry knows: the method cards (descriptions, papers,
hyperparameters and their defaults, search spaces) and the current adapter versions, which
decide which stored runs are stale.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import math
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.errors import ConfigError


def _describe_range(meta: dict[str, Any]) -> str:
    choices = meta.get("choices")
    if choices:
        return "one of " + ", ".join(map(repr, choices))
    low, high = meta.get("low"), meta.get("high")
    if low is None and high is None:
        return ""
    left = "[" if meta.get("low_inclusive", True) else "("
    right = "]" if meta.get("high_inclusive", True) else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    if low is not None and high is None:
        return f"{'≥' if left == '[' else '>'} {lo}"
    if high is not None and low is None:
        return f"{'≤' if right == ']' else '<'} {hi}"
    return f"{left}{lo}, {hi}{right}"


def _describe_distribution(dist: Any) -> str:
    from backends.spec import Choice, LogUniform, OneMinusLogUniform, Uniform

    if isinstance(dist, LogUniform):
        return f"log-uniform [{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, Uniform):
        return f"uniform [{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, OneMinusLogUniform):
        return f"1 − log-uniform [{dist.low:g}, {dist.high:g}]"
    if isinstance(dist, Choice):
        return "one of " + ", ".join(map(repr, dist.values))
    return repr(dist)


def _type_name(kind: Any) -> str:
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _method_info(cls: type, versions: dict[str, str]) -> Any:
    from backends.spec import hparam_fields
    from leaderboard.data import HyperparamInfo, MethodInfo

    hints = typing.get_type_hints(cls.Hyperparams)  # type: ignore[attr-defined]
    hyper = []
    for name, f in hparam_fields(cls.Hyperparams).items():  # type: ignore[attr-defined]
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, float) and not math.isfinite(default):
            default = str(default)
        hyper.append(
            HyperparamInfo(
                name=name,
                type=_type_name(hints.get(name, f.type)),
                default=default,
                doc=str(f.metadata.get("doc", "")),
                range=_describe_range(dict(f.metadata)),
            )
        )
    caps = dataclasses.asdict(cls.capabilities)  # type: ignore[attr-defined]
    return MethodInfo(
        name=cls.name,  # type: ignore[attr-defined]
        paper=cls.paper,  # type: ignore[attr-defined]
        description=cls.description,  # type: ignore[attr-defined]
        hyperparams=tuple(hyper),
        search_space={k: _describe_distribution(v) for k, v in cls.search_space.items()},  # type: ignore[attr-defined]
        capabilities={k: ", ".join(sorted(v)) if isinstance(v, (set, frozenset)) else str(v) for k, v in caps.items()},
        versions=versions,
    )


def method_metadata(warn: Any = None) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """Method cards and current adapter versions of every installed backend's adapters.

    A backend that is not installed, or whose adapters fail to import, is skipped (with a
    warning through ``warn``): its runs are then judged current by the newest stored version.
    """
    from backends.spec import BACKENDS
    from harness import keys, registry

    classes: dict[str, type] = {}
    versions: dict[tuple[str, str], str] = {}
    per_method: dict[str, dict[str, str]] = {}
    for backend in BACKENDS:
        if not registry.backend_available(backend):
            continue
        try:
            adapters = registry.adapters(backend)
        except Exception as exc:  # a broken adapter must not stop the site from building
            if warn is not None:
                warn(
                    f"skipping the {backend} adapters ({type(exc).__name__}: {exc}); "
                    "their runs are judged current by the newest stored adapter version"
                )
            continue
        for name, cls in adapters.items():
            version = keys.adapter_version(cls)
            versions[(name, backend)] = version
            per_method.setdefault(name, {})[backend] = version
            classes.setdefault(name, cls)
    infos = {name: _method_info(cls, per_method.get(name, {})) for name, cls in classes.items()}
    return infos, versions


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
