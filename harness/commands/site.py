"""``ngbench site build`` and ``ngbench site serve``: the static leaderboard (:mod:`harness.site`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.site import build_site, make_server


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
