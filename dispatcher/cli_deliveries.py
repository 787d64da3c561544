"""`dispatcher deliveries`: find, read and replay deliveries."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dispatcher import cli_output as output
from dispatcher.cli_args import Failure, moment
from dispatcher.cli_remote import (
    add_json,
    command,
    expect,
    expect_object,
    fetch,
    group,
    listing,
    remote,
    show_listing,
)
from dispatcher.client import ApiError, Client

STATUSES = ("pending", "succeeded", "failed")


@remote
async def list_deliveries(client: Client, args: argparse.Namespace) -> int:
    def page(size: int, cursor: str | None) -> Any:
        return client.list_deliveries(
            status=args.status,
            since=args.since,
            until=args.until,
            job_id=args.job,
            endpoint_id=args.endpoint,
            channel=args.channel,
            limit=size,
            cursor=cursor,
        )

    items, more = await fetch(page, args.limit)
    show_listing(items, more, args, output.DELIVERY_COLUMNS)
    return 0


@remote
async def show(client: Client, args: argparse.Namespace) -> int:
    delivery = expect_object(await client.show_delivery(args.id), "a delivery")
    print(json.dumps(delivery, indent=2) if args.json else "\n".join(output.describe(delivery)))
    return 0


def replay(args: argparse.Namespace) -> int:
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
            answer = await client.replay(delivery_id)
        except ApiError as exc:
            if exc.status in (401, 403):
                raise  # the key, not the delivery: nothing else will work either
            failures.append(_failed(delivery_id, str(exc)))
            continue
        # A failed or succeeded delivery starts its schedule again; a pending one is tried
        # now: either way its next attempt is made at once.
        attempt = expect(answer, "attempt_count", int) + 1
        print(f"{output.cell(delivery_id)}: sending now (attempt {attempt})")
    if failures:
        raise Failure(f"could not replay {len(failures)} of {len(args.ids)}: {'; '.join(failures)}")
    return 0


def _failed(delivery_id: str, reason: str) -> str:
    # "no delivery msg_x [HTTP 404]" names it already.
    return reason if delivery_id in reason else f"{output.cell(delivery_id)}: {reason}"


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
        matched = expect(answer, "matched", int)
        print(f"{output.count(matched)} would be replayed (dry run: nothing changed)")
    else:
        print(f"replayed {output.count(expect(answer, 'replayed', int))}")
    return 0


def add_commands(commands: Any) -> None:
    deliveries = group(commands, "deliveries", "find, read and replay deliveries")

    found = listing(deliveries, "list", "list deliveries, newest first", "deliveries")
    found.add_argument("--status", choices=STATUSES, help="only deliveries in this status")
    _add_window(found)
    found.add_argument("--job", metavar="ID", help="only this job's deliveries")
    found.add_argument("--endpoint", metavar="ID", help="only this endpoint's deliveries")
    _add_channel(found)
    found.set_defaults(func=list_deliveries)

    one = command(deliveries, "show", "show a delivery and every attempt")
    one.add_argument("id", metavar="ID", help="the delivery's id (msg_…, its webhook-id)")
    add_json(one)
    one.set_defaults(func=show)

    again = command(
        deliveries,
        "replay",
        "send deliveries again now: by id (a pending one is tried at once), or all that match",
    )
    again.add_argument("ids", nargs="*", metavar="ID", help="the deliveries' ids (msg_…)")
    again.add_argument(
        "--status", choices=("failed", "succeeded"), help="replay every delivery in this status"
    )
    _add_window(again)
    again.add_argument("--endpoint", metavar="ID", help="only this endpoint's deliveries")
    _add_channel(again)
    again.add_argument("--dry-run", action="store_true", help="count them, change nothing")
    again.set_defaults(func=replay)


def _add_window(parser: argparse.ArgumentParser) -> None:
    window = "30m, 2h, 7d (that long ago) or an RFC 3339 time"
    parser.add_argument("--since", type=moment, help=f"created at or after: {window}")
    parser.add_argument("--until", type=moment, help=f"created before: {window}")


def _add_channel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel", choices=("webhook", "email", "sms"), help="only this channel's deliveries"
    )
