"""Commands that talk to a running server: keys and deliveries.

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
from dispatcher.cli_args import Failure, moment, positive, seconds
from dispatcher.client import Client, ClientError

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 30.0

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


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


def _expect(answer: Any, name: str, kind: type) -> Any:
    """`answer[name]` when the server's answer has it with the right type, else a Failure."""
    value = answer.get(name) if isinstance(answer, dict) else None
    if not isinstance(value, kind):
        raise Failure(f"unexpected answer from the server: no {kind.__name__} {name!r}")
    return value


# Keys


@remote
async def keys_create(client: Client, args: argparse.Namespace) -> int:
    created = await client.create_key(args.tenant, admin=args.admin)
    print(_expect(created, "key", str))  # the one secret this CLI prints: it was asked for
    return 0


# Deliveries


async def _fetch_deliveries(client: Client, args: argparse.Namespace) -> tuple[list[Any], bool]:
    """Up to `--limit` deliveries, and whether there were more."""
    items: list[dict[str, Any]] = []
    cursor = None
    while len(items) < args.limit:
        page = await client.list_deliveries(
            status=args.status,
            since=args.since,
            until=args.until,
            job_id=args.job,
            endpoint_id=args.endpoint,
            limit=min(500, args.limit - len(items)),
            cursor=cursor,
        )
        found = _expect(page, "items", list)
        if not all(isinstance(item, dict) for item in found):
            raise Failure("unexpected answer from the server: items that are not objects")
        items += found
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return items, bool(cursor)


@remote
async def deliveries_list(client: Client, args: argparse.Namespace) -> int:
    items, more = await _fetch_deliveries(client, args)
    if args.json:
        for item in items:
            print(json.dumps(item))
    elif items:
        print("\n".join(output.table(items)))
    else:
        print("no deliveries")
    if more and len(items) >= args.limit:
        print(f"(showing the newest {len(items)}; raise --limit to see more)", file=sys.stderr)
    return 0


@remote
async def deliveries_show(client: Client, args: argparse.Namespace) -> int:
    delivery = await client.show_delivery(args.id)
    if not isinstance(delivery, dict):
        raise Failure("unexpected answer from the server: not a delivery")
    print(json.dumps(delivery, indent=2) if args.json else "\n".join(output.describe(delivery)))
    return 0


def deliveries_replay(args: argparse.Namespace) -> int:
    if args.ids and args.status:
        raise Failure("give delivery ids or --status, not both", 2)
    if not args.ids and not args.status:
        raise Failure("give the ids of the deliveries to replay, or --status failed", 2)
    if args.ids and (args.since or args.until or args.endpoint or args.channel or args.dry_run):
        raise Failure("--since, --until, --endpoint, --channel and --dry-run need --status", 2)
    return _replay(args)


@remote
async def _replay(client: Client, args: argparse.Namespace) -> int:
    if args.status:
        return await _replay_matching(client, args)
    failures = []
    for delivery_id in args.ids:
        try:
            await client.replay(delivery_id)
        except ClientError as exc:
            failures.append(f"{delivery_id}: {exc}")
    replayed = len(args.ids) - len(failures)
    if replayed or not failures:
        print(f"replayed {output.count(replayed)}")
    if failures:
        raise Failure(f"could not replay {len(failures)} of {len(args.ids)}: {'; '.join(failures)}")
    return 0


async def _replay_matching(client: Client, args: argparse.Namespace) -> int:
    answer = await client.replay_matching(
        args.status,
        since=args.since,
        until=args.until,
        endpoint_id=args.endpoint,
        channel=args.channel,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        matched = _expect(answer, "matched", int)
        print(f"{output.count(matched)} would be replayed (dry run: nothing changed)")
    else:
        print(f"replayed {output.count(_expect(answer, 'replayed', int))}")
    return 0


# Arguments


def add_timeout(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=default,
        metavar="SECONDS",
        help=f"give up on a request after this long (DISPATCHER_TIMEOUT; "
        f"default {DEFAULT_TIMEOUT:g})",
    )


def _command(commands: Any, name: str, help: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help)
    # Also after the command; SUPPRESS leaves the global --timeout's value alone.
    add_timeout(parser, default=argparse.SUPPRESS)
    return parser


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys (admin key)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = _command(keys_commands, "create", "create an API key and print it")
    create.add_argument("--tenant", required=True)
    create.add_argument("--admin", action="store_true", help="an admin key")
    create.set_defaults(func=keys_create)

    deliveries = commands.add_parser("deliveries", help="find, read and replay deliveries")
    sub = deliveries.add_subparsers(dest="deliveries_command", required=True)
    listing = _command(sub, "list", "list deliveries, newest first")
    listing.add_argument("--status", choices=("pending", "succeeded", "failed"))
    _add_window(listing)
    listing.add_argument("--job", help="only this job's deliveries")
    listing.add_argument("--endpoint", help="only this endpoint's deliveries")
    listing.add_argument("--limit", type=positive, default=50, help="at most this many")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=deliveries_list)

    show = _command(sub, "show", "show a delivery and every attempt")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=deliveries_show)

    replay = _command(sub, "replay", "replay deliveries by id, or all that match")
    replay.add_argument("ids", nargs="*", metavar="ID")
    replay.add_argument("--status", choices=("failed", "succeeded"))
    _add_window(replay)
    replay.add_argument("--endpoint")
    replay.add_argument("--channel", choices=("webhook", "email", "sms"))
    replay.add_argument("--dry-run", action="store_true", help="count, change nothing")
    replay.set_defaults(func=deliveries_replay)


def _add_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=moment, help="30m, 2h, 7d or an RFC 3339 time")
    parser.add_argument("--until", type=moment, help="30m, 2h, 7d or an RFC 3339 time")
