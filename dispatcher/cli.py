"""The command line: parses, calls, prints."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from aiohttp import web

from dispatcher import cli_partner, cli_remote, logs
from dispatcher.cli_args import Failure
from dispatcher.client import ClientError

if TYPE_CHECKING:
    from dispatcher.settings import Settings

__all__ = ["Failure", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, like every other failure; the usage is one --help away.
        self.exit(2, f"{self.prog}: {_one_line(message)} (see --help)\n")


def _announce(key: str) -> None:
    print(f"Created the first admin API key (shown once, store it now): {key}", flush=True)


def serve(args: argparse.Namespace) -> int:
    # Imported here so the client commands start without loading the server.
    from pydantic import ValidationError

    from dispatcher.app import create_app
    from dispatcher.settings import Settings

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
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Failure(f"invalid setting {where}: {first['msg']}", 2) from exc
    logs.configure(settings.log_format, settings.log_level, secrets=operator_secrets(settings))
    app = create_app(settings, announce=_announce)
    print(f"dispatcher listening on http://{settings.host}:{settings.port}", flush=True)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.shutdown_grace,
        access_log_class=logs.AccessLogger,
    )
    return 0


def operator_secrets(settings: Settings) -> Iterator[str]:
    """Every secret the operator configured, for the logs to mask: each SecretStr setting,
    the password inside it when it is a URL, and the database URL's password."""
    from pydantic import SecretStr

    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            yield value.get_secret_value()
            yield from _url_password(value.get_secret_value())
    yield from _url_password(settings.database_url)


def _url_password(text: str) -> Iterator[str]:
    try:
        password = urlsplit(text).password if "://" in text else None
    except ValueError:
        return
    if password:
        yield password
        yield unquote(password)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dispatcher", description=__doc__)
    cli_remote.add_timeout(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the HTTP API and the worker pool")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--database-url")
    run.add_argument("--workers", type=int)
    run.set_defaults(func=serve)
    cli_remote.add_commands(commands)
    cli_partner.add_commands(commands)
    return parser


def _one_line(text: str) -> str:
    # A server's error text ends up on a terminal: no escapes, no line breaks.
    printable = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(printable.split())


def _fail(reason: str) -> None:
    # `serve` fails after logging is set up, perhaps quoting a setting: mask what it masks.
    print(f"dispatcher: {logs.mask_secrets(_one_line(reason))}", file=sys.stderr)


def _quiet_stdout() -> None:
    # The reader went away (`dispatcher deliveries list | head -1`): the interpreter's
    # final flush would otherwise print a traceback of its own.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except Failure as exc:
        _fail(str(exc))
        return exc.code
    except ClientError as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # as a shell reports a process ended by SIGPIPE
    except Exception as exc:
        # The boundary: a user gets one line, never a traceback.
        _fail(f"unexpected error: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
