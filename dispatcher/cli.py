"""The command line: parses, calls, prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web
from pydantic import ValidationError

from dispatcher import logs
from dispatcher.app import create_app
from dispatcher.settings import Settings


def _announce(key: str) -> None:
    print(f"Created the first admin API key (shown once, store it now): {key}", flush=True)


def serve(args: argparse.Namespace) -> int:
    overrides = {
        name: value
        for name, value in (
            ("host", args.host),
            ("port", args.port),
            ("database_url", args.database_url),
            ("workers", args.workers),
        )
        if value is not None
    }
    settings = Settings(**overrides)
    logs.configure(settings.log_format, settings.log_level)
    app = create_app(settings, announce=_announce)
    print(f"dispatcher listening on http://{settings.host}:{settings.port}", flush=True)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.shutdown_grace,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dispatcher", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the HTTP API and the worker pool")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--database-url")
    run.add_argument("--workers", type=int)
    run.set_defaults(func=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"dispatcher: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
