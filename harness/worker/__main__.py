"""``python -m harness.worker serve|run ...`` (started by lanes, not by users)."""

from __future__ import annotations

import argparse

from harness.worker.transport import run_once, serve

# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.worker serve|run ...`` (started by :class:`Lane`, not by users)."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.worker", description="ngbench worker processes (started by lanes, not by users)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="launcher: fork one child per request line on stdin")
    p_serve.add_argument("--parent", type=int, required=True)
    p_serve.add_argument("--preload", default="torch", help="backends to import up front (comma-separated)")
    p_serve.add_argument("--suites", default="", help="suites whose data to load up front (comma-separated)")
    p_run = sub.add_parser(
        "run", help="run one request (a RunSpec, or a request naming its handler, as JSON) in this process"
    )
    p_run.add_argument("--request", default="-", help="JSON file, or - for stdin")
    p_run.add_argument("--out", required=True, help="where to write the result envelope (JSON)")
    p_run.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.parent, [p for p in args.preload.split(",") if p], [s for s in args.suites.split(",") if s])
    return run_once(args.request, args.out, args.parent)


if __name__ == "__main__":
    raise SystemExit(main())
