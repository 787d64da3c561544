"""What the commands that talk to a running server share: the connection, pages, failures.

The server is at DISPATCHER_URL, spoken to as DISPATCHER_KEY, and each request
gives up after `--timeout` (or DISPATCHER_TIMEOUT) seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from yarl import URL

from dispatcher import cli_output as output
from dispatcher.cli_args import Failure, positive, seconds
from dispatcher.client import ApiError, Client, ClientError, Unreachable

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0
REFUSED_KEY = "the server refused the key: set DISPATCHER_KEY to a valid API key"
NOT_ADMIN = "this needs an admin key: set DISPATCHER_KEY to the key of an admin"

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]
Page = Callable[[int, str | None], Awaitable[Any]]


def remote(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run `command` with a Client for the server at DISPATCHER_URL, as DISPATCHER_KEY."""

    def run(args: argparse.Namespace) -> int:
        url, key, timeout = _connection(args)

        async def call() -> int:
            async with Client(url, key, timeout=timeout) as client:
                return await command(client, args)

        return asyncio.run(call())

    return run


def _connection(args: argparse.Namespace) -> tuple[str, str, float]:
    # The CLI's own inputs, not server settings: only the CLI reads them.
    url = os.environ.get("DISPATCHER_URL") or DEFAULT_URL
    key = (os.environ.get("DISPATCHER_KEY") or "").strip()
    if not url.startswith(("http://", "https://")):
        raise Failure("DISPATCHER_URL must be an http:// or https:// URL", 2)
    try:
        host = URL(url).host
    except ValueError as exc:
        raise Failure(f"DISPATCHER_URL is not a valid URL: {exc}", 2) from exc
    if not host:
        raise Failure("DISPATCHER_URL has no host", 2)
    if not key:
        raise Failure("set DISPATCHER_KEY to an API key", 2)
    if not key.isprintable():
        # Said here, without the key: an HTTP library's error would quote the header.
        raise Failure("DISPATCHER_KEY holds characters an HTTP header cannot carry", 2)
    return url, key, _timeout(args)


def _timeout(args: argparse.Namespace) -> float:
    if args.timeout is not None:
        return float(args.timeout)
    text = os.environ.get("DISPATCHER_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        return seconds(text)
    except argparse.ArgumentTypeError as exc:
        raise Failure(f"DISPATCHER_TIMEOUT: {exc}", 2) from exc


def explain(exc: ClientError) -> str:
    """A client failure in one line that names what to change, when that is the user's part."""
    if isinstance(exc, ApiError) and exc.status == 401:
        return REFUSED_KEY
    if isinstance(exc, ApiError) and exc.status == 403:
        return NOT_ADMIN
    if isinstance(exc, Unreachable):
        return f"{exc} (is the server running? set DISPATCHER_URL to its address)"
    return str(exc)


def expect(answer: Any, name: str, kind: type) -> Any:
    """`answer[name]` when the server's answer has it with the right type, else a Failure."""
    value = answer.get(name) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise Failure(f"unexpected answer from the server: no {kind.__name__} {name!r}")
    return value


def expect_object(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise Failure(f"unexpected answer from the server: not {what}")
    return answer


async def fetch(page: Page, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items, page after page (`page(size, cursor)`), and whether there were more."""
    items: list[dict[str, Any]] = []
    cursor = None
    while len(items) < limit:
        answer = await page(min(500, limit - len(items)), cursor)
        found = expect(answer, "items", list)
        if not all(isinstance(item, dict) for item in found):
            raise Failure("unexpected answer from the server: items that are not objects")
        items += found
        cursor = answer.get("next_cursor")
        if not cursor:
            break
    return items, bool(cursor)


def show_listing(
    items: list[dict[str, Any]], more: bool, args: argparse.Namespace, columns: output.Columns
) -> None:
    """A table (with a tenant column when the items carry one), or one JSON object a line."""
    if args.json:
        for item in items:
            print(json.dumps(item))
    elif items:
        print("\n".join(output.table(items, output.with_tenant(columns, items))))
    else:
        print(f"no {args.nothing}")
    if more and len(items) >= args.limit:
        print(f"(showing the newest {len(items)}; raise --limit to see more)", file=sys.stderr)


# Arguments


def sentence(help: str) -> str:
    """A command's help as its --help page's description."""
    return f"{help[:1].upper()}{help[1:]}."


def add_timeout(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=default,
        metavar="SECONDS",
        help=f"give up on a request after this long (DISPATCHER_TIMEOUT; "
        f"default {DEFAULT_TIMEOUT:g})",
    )


def command(commands: Any, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand that talks to the server: it also takes --timeout."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=sentence(help)
    )
    # Also after the command; SUPPRESS leaves the global --timeout's value alone.
    add_timeout(parser, default=argparse.SUPPRESS)
    return parser


def listing(commands: Any, name: str, help: str, nothing: str) -> argparse.ArgumentParser:
    """A `list` subcommand: --limit and --json; `nothing` names what an empty one lacks."""
    parser = command(commands, name, help)
    parser.add_argument("--limit", type=positive, default=50, help="at most this many (50)")
    add_json(parser, "one JSON object per line, as the API answers each")
    parser.set_defaults(nothing=nothing)
    return parser


def add_json(parser: argparse.ArgumentParser, help: str = "the API's JSON answer") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def group(commands: Any, name: str, help: str) -> Any:
    """A command whose subcommands come next (`keys`, `jobs`, `deliveries`)."""
    parser = commands.add_parser(name, help=help, description=sentence(help))
    return parser.add_subparsers(
        dest=f"{name}_command", required=True, metavar="COMMAND", title="commands"
    )
