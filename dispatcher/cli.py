"""The command line: parses, calls, prints."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from dispatcher import cli_output as output
from dispatcher.client import Client, ClientError, rfc3339
from dispatcher.receiver import Outcome, RawRequestError, check, check_secret, parse_request
from dispatcher.receiver import receiver_app as make_receiver_app

DEFAULT_URL = "http://127.0.0.1:8080"
DURATION = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


class Failure(Exception):
    """A one-line reason the command could not do what it was asked."""

    def __init__(self, reason: str, code: int = 1) -> None:
        super().__init__(reason)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, like every other failure; the usage is one --help away.
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _announce(key: str) -> None:
    print(f"Created the first admin API key (shown once, store it now): {key}", flush=True)


def serve(args: argparse.Namespace) -> int:
    # Imported here so the client commands start without loading the server.
    from pydantic import ValidationError

    from dispatcher import logs
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
    logs.configure(settings.log_format, settings.log_level)
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


# Talking to a running server


def remote(command: Command) -> Callable[[argparse.Namespace], int]:
    """Run `command` with a Client for the server at DISPATCHER_URL, as DISPATCHER_KEY."""

    def run(args: argparse.Namespace) -> int:
        # The CLI's own inputs, not server settings: only this module reads them.
        url = os.environ.get("DISPATCHER_URL") or DEFAULT_URL
        key = os.environ.get("DISPATCHER_KEY")
        if not url.startswith(("http://", "https://")):
            raise Failure("DISPATCHER_URL must be an http:// or https:// URL", 2)
        if not key:
            raise Failure("set DISPATCHER_KEY to an API key", 2)

        async def call() -> int:
            async with Client(url, key) as client:
                return await command(client, args)

        return asyncio.run(call())

    return run


@remote
async def keys_create(client: Client, args: argparse.Namespace) -> int:
    created = await client.create_key(args.tenant, admin=args.admin)
    print(created["key"])  # the one secret this CLI prints: it was asked for
    return 0


@remote
async def deliveries_list(client: Client, args: argparse.Namespace) -> int:
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
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if args.json:
        for item in items:
            print(json.dumps(item))
    elif items:
        print("\n".join(output.table(items)))
    else:
        print("no deliveries")
    if cursor and len(items) >= args.limit:
        print(f"(showing the newest {len(items)}; raise --limit to see more)", file=sys.stderr)
    return 0


@remote
async def deliveries_show(client: Client, args: argparse.Namespace) -> int:
    delivery = await client.show_delivery(args.id)
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
        print(f"{output.count(answer['matched'])} would be replayed (dry run: nothing changed)")
    else:
        print(f"replayed {output.count(answer['replayed'])}")
    return 0


# Tools for integration partners


def listen(args: argparse.Namespace) -> int:
    _check_secret(args.secret)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        # Listening before the banner: a sender who reads it is queued, never refused.
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise Failure(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    port = sock.getsockname()[1]

    def report(outcome: Outcome) -> None:
        print(f"{datetime.now():%H:%M:%S}  {outcome.line()}", flush=True)

    app = make_receiver_app(args.secret, report, tolerance=args.tolerance)
    where = (
        f"http://{args.host}:{port}/"
        if family == socket.AF_INET
        else f"http://[{args.host}]:{port}/"
    )
    print(f"listening for webhooks on {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)
    return 0


def verify(args: argparse.Namespace) -> int:
    _check_secret(args.secret)
    try:
        headers, body = parse_request(sys.stdin.buffer.read())
    except RawRequestError as exc:
        raise Failure(f"cannot read the request: {exc}") from exc
    outcome = check(args.secret, headers, body, tolerance=args.tolerance)
    if not outcome.verified:
        raise Failure(f"not verified: {outcome.reason}")
    print(f"verified: {outcome.webhook_id}  {outcome.type}")
    return 0


def _check_secret(secrets: list[str]) -> None:
    try:
        check_secret(secrets)
    except (TypeError, ValueError) as exc:
        raise Failure(f"invalid --secret: {exc}", 2) from exc


# Arguments


def moment(text: str) -> str:
    """`30m`, `2h`, `7d` (that long ago) or an RFC 3339 time, as RFC 3339 UTC."""
    found = DURATION.match(text)
    if found:
        ago = timedelta(**{UNITS[found[2]]: int(found[1])})
        return rfc3339(datetime.now(UTC) - ago)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration like 30m, 2h, 7d nor an RFC 3339 time with an offset"
        )
    return rfc3339(parsed)


def _add_server_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage API keys (admin key)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create an API key and print it")
    create.add_argument("--tenant", required=True)
    create.add_argument("--admin", action="store_true", help="an admin key")
    create.set_defaults(func=keys_create)

    deliveries = commands.add_parser("deliveries", help="find, read and replay deliveries")
    sub = deliveries.add_subparsers(dest="deliveries_command", required=True)
    listing = sub.add_parser("list", help="list deliveries, newest first")
    listing.add_argument("--status", choices=("pending", "succeeded", "failed"))
    _add_window(listing)
    listing.add_argument("--job", help="only this job's deliveries")
    listing.add_argument("--endpoint", help="only this endpoint's deliveries")
    listing.add_argument("--limit", type=_positive, default=50, help="at most this many")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=deliveries_list)

    show = sub.add_parser("show", help="show a delivery and every attempt")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=deliveries_show)

    replay = sub.add_parser("replay", help="replay deliveries by id, or all that match")
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


def _add_partner_commands(commands: Any) -> None:
    tolerance = {
        "type": float,
        "default": 300,
        "help": "seconds webhook-timestamp may be off (default 300)",
    }
    secret = {
        "required": True,
        "action": "append",
        "help": "whsec_… or whpk_…; give it twice to accept either of two",
    }
    listen_parser = commands.add_parser("listen", help="a local receiver that verifies webhooks")
    listen_parser.add_argument("--port", type=_port, required=True, help="0 picks a free one")
    listen_parser.add_argument("--host", default="127.0.0.1")
    listen_parser.add_argument("--secret", **secret)
    listen_parser.add_argument("--tolerance", **tolerance)
    listen_parser.set_defaults(func=listen)

    verify_parser = commands.add_parser("verify", help="verify a raw HTTP request read on stdin")
    verify_parser.add_argument("--secret", **secret)
    verify_parser.add_argument("--tolerance", **tolerance)
    verify_parser.set_defaults(func=verify)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dispatcher", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the HTTP API and the worker pool")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--database-url")
    run.add_argument("--workers", type=int)
    run.set_defaults(func=serve)
    _add_server_commands(commands)
    _add_partner_commands(commands)
    return parser


def _fail(reason: str) -> None:
    print(f"dispatcher: {' '.join(reason.split())}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except Failure as exc:
        _fail(str(exc))
        return exc.code
    except ClientError as exc:
        _fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The boundary: a user gets one line, never a traceback.
        _fail(f"unexpected error: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
