"""`dispatcher endpoints`: register callback URLs, change them, rotate their secrets.

An endpoint's secret (hmac) is shown only when it is created or rotated, so
`create` and `rotate` print it; an ed25519 endpoint's public key can be read
again at any time (`show`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from dispatcher import cli_output as output
from dispatcher.cli_args import Failure, positive
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
from dispatcher.client import Client

EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled")
# What `update` can change, each only when its option is given (None clears).
CHANGEABLE = ("url", "description", "headers", "event_types", "rate_limit", "max_in_flight")


def header(text: str) -> tuple[str, str]:
    """`Name: value` (as curl -H takes it) as a (name, value) pair."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a header: give it as 'Name: value'")
    return name.strip(), value.strip()


def limit_or_none(text: str) -> int | None:
    """A positive number, or `none` (no limit)."""
    if text.strip().lower() == "none":
        return None
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        reason = f"{text!r} is neither a positive number nor none"
        raise argparse.ArgumentTypeError(reason) from None


def optional_text(text: str) -> str | None:
    """The text, or None for an empty one (which clears)."""
    return text or None


class _Headers(argparse.Action):
    """Each --header adds one; a name given twice (in any case) is refused, not overwritten."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        headers = dict(getattr(namespace, self.dest, None) or {})
        name, value = values
        if name.lower() in (given.lower() for given in headers):
            parser.error(f"argument {option_string}: {name} is given twice")
        headers[name] = value
        setattr(namespace, self.dest, headers)


def _event_types(given: Sequence[str] | None) -> list[str] | None:
    return list(dict.fromkeys(given)) if given is not None else None


def _print(
    endpoint: dict[str, Any], args: argparse.Namespace, public_key: str | None = None
) -> None:
    if args.json:
        print(json.dumps(endpoint, indent=2))
    else:
        print("\n".join(output.describe_endpoint(endpoint, public_key)))


@remote
async def list_endpoints(client: Client, args: argparse.Namespace) -> int:
    items, more = await fetch(lambda size, cursor: client.list_endpoints(size, cursor), args.limit)
    show_listing(items, more, args, output.ENDPOINT_COLUMNS)
    return 0


@remote
async def create(client: Client, args: argparse.Namespace) -> int:
    created = await client.create_endpoint(
        args.url,
        description=args.description,
        headers=args.headers,
        event_types=_event_types(args.event_types),
        signature="ed25519" if args.ed25519 else None,
        rate_limit=args.rate_limit,
        max_in_flight=args.max_in_flight,
    )
    created = expect_object(created, "an endpoint")
    expect(created, "id", str)
    if not output.credential(created):
        raise Failure("unexpected answer from the server: no secret or public_key")
    # The secret this CLI prints: it was asked for, and it is shown only now.
    print(json.dumps(created) if args.json else "\n".join(output.describe_endpoint(created)))
    return 0


@remote
async def show(client: Client, args: argparse.Namespace) -> int:
    endpoint = expect_object(await client.get_endpoint(args.id), "an endpoint")
    public_key = None
    if not args.json and endpoint.get("signature") == "ed25519":
        public_key = await client.endpoint_public_key(args.id)
    _print(endpoint, args, public_key)
    return 0


def update(args: argparse.Namespace) -> int:
    # An option not given leaves its field alone: argparse sets only those given.
    changes = {name: getattr(args, name) for name in CHANGEABLE if hasattr(args, name)}
    if not changes:
        raise Failure(
            "nothing to change: give --url, --description, --header, --no-headers, "
            "--event-type, --all-events, --rate-limit or --max-in-flight",
            2,
        )
    if "event_types" in changes:
        changes["event_types"] = _event_types(changes["event_types"])
    args.changes = changes
    return _update(args)


@remote
async def _update(client: Client, args: argparse.Namespace) -> int:
    updated = await client.update_endpoint(args.id, **args.changes)
    _print(expect_object(updated, "an endpoint"), args)
    return 0


@remote
async def rotate(client: Client, args: argparse.Namespace) -> int:
    answer = expect_object(await client.rotate_endpoint_secret(args.id), "a new secret")
    shown = output.credential(answer)
    if not shown:
        raise Failure("unexpected answer from the server: no secret or public_key")
    named = f"{'endpoint':<16}{output.cell(args.id)}"
    print(json.dumps(answer) if args.json else "\n".join([named, *shown]))
    return 0


@remote
async def delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete_endpoint(args.id)
    print(f"deleted endpoint {output.cell(args.id)}")
    return 0


@remote
async def enable(client: Client, args: argparse.Namespace) -> int:
    endpoint = await client.enable_endpoint(args.id)
    print(f"enabled endpoint {output.cell(expect(endpoint, 'id', str))}")
    return 0


@remote
async def disable(client: Client, args: argparse.Namespace) -> int:
    endpoint = await client.update_endpoint(args.id, disabled=True)
    print(f"disabled endpoint {output.cell(expect(endpoint, 'id', str))}")
    return 0


def add_commands(commands: Any) -> None:
    endpoints = group(
        commands, "endpoints", "register, change, rotate and delete webhook endpoints"
    )

    found = listing(endpoints, "list", "list endpoints, newest first", "endpoints")
    found.set_defaults(func=list_endpoints)

    made = command(endpoints, "create", "register an endpoint; print its id and secret")
    made.add_argument("url", metavar="URL", help="where its webhooks go (http or https)")
    _add_settings(made, new=True)
    made.add_argument(
        "--ed25519",
        action="store_true",
        help="sign with an ed25519 key pair: print the public key (whpk_…), not a secret",
    )
    add_json(made, "print the API's answer (with the secret) as JSON")
    made.set_defaults(func=create)

    one = command(endpoints, "show", "show an endpoint: its settings, state and circuit")
    _add_id(one)
    add_json(one)
    one.set_defaults(func=show)

    changed = command(endpoints, "update", "change an endpoint: only what is given changes")
    _add_id(changed)
    changed.add_argument(
        "--url", default=argparse.SUPPRESS, help="a new URL; its unsent deliveries follow it"
    )
    _add_settings(changed, new=False)
    add_json(changed, "print the updated endpoint as the API's JSON")
    changed.set_defaults(func=update)

    again = command(endpoints, "rotate", "give an endpoint a new secret (or key pair); print it")
    _add_id(again)
    add_json(again, "print the API's answer as JSON")
    again.set_defaults(func=rotate)

    gone = command(endpoints, "delete", "delete an endpoint; its pending deliveries fail")
    _add_id(gone)
    gone.set_defaults(func=delete)

    on = command(endpoints, "enable", "re-enable a disabled endpoint and close its circuit")
    _add_id(on)
    on.set_defaults(func=enable)

    off = command(endpoints, "disable", "disable an endpoint by hand; its deliveries fail")
    _add_id(off)
    off.set_defaults(func=disable)


def _add_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the endpoint's id (ep_…)")


def _add_settings(parser: argparse.ArgumentParser, new: bool) -> None:
    """The options `create` and `update` share; for `update`, only those given are sent."""
    unset = None if new else argparse.SUPPRESS
    clear = "" if new else "; '' clears it"
    parser.add_argument(
        "--description",
        type=optional_text,
        default=unset,
        metavar="TEXT",
        help=f"a note for people: what the endpoint is for{clear}",
    )
    headers = parser if new else parser.add_mutually_exclusive_group()
    headers.add_argument(
        "--header",
        dest="headers",
        type=header,
        action=_Headers,
        default=unset,
        metavar="'NAME: VALUE'",
        help="a header every webhook carries; repeat for more"
        + ("" if new else " (they replace all the headers it had)"),
    )
    if not new:
        headers.add_argument(
            "--no-headers",
            dest="headers",
            action="store_const",
            const=None,
            default=unset,
            help="send no headers of its own any more",
        )
    events = parser if new else parser.add_mutually_exclusive_group()
    events.add_argument(
        "--event-type",
        dest="event_types",
        action="append",
        choices=EVENT_TYPES,
        default=unset,
        metavar="EVENT",
        help="send only webhooks of this event (job.succeeded, job.failed, job.cancelled); "
        + ("repeat for more (default: all)" if new else "repeat for more; they replace its filter"),
    )
    if not new:
        events.add_argument(
            "--all-events",
            dest="event_types",
            action="store_const",
            const=None,
            default=unset,
            help="send webhooks of every event again",
        )
    number, metavar = (positive, "N") if new else (limit_or_none, "N|none")
    parser.add_argument(
        "--rate-limit",
        type=number,
        default=unset,
        metavar=metavar,
        help="at most N webhooks a second (1-10000)" + ("" if new else "; none: no limit"),
    )
    parser.add_argument(
        "--max-in-flight",
        type=number,
        default=unset,
        metavar=metavar,
        help="at most N attempts at once (1-1000)" + ("" if new else "; none: no limit"),
    )
