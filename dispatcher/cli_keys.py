"""`dispatcher keys`: create, list and revoke API keys (an admin key's commands)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from dispatcher import cli_output as output
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


@remote
async def create(client: Client, args: argparse.Namespace) -> int:
    created = expect_object(await client.create_key(args.tenant, admin=args.admin), "a key")
    expect(created, "key", str)
    expect(created, "signing_secret", str)
    # The secrets this CLI prints: they were asked for, and the key is shown only now.
    print(json.dumps(created) if args.json else "\n".join(output.describe_key(created)))
    return 0


@remote
async def list_keys(client: Client, args: argparse.Namespace) -> int:
    items, more = await fetch(lambda size, cursor: client.list_keys(size, cursor), args.limit)
    show_listing(items, more, args, output.KEY_COLUMNS)
    return 0


@remote
async def revoke(client: Client, args: argparse.Namespace) -> int:
    await client.revoke_key(args.prefix)
    print(f"revoked key {output.cell(args.prefix)}")
    return 0


def add_commands(commands: Any) -> None:
    keys = group(commands, "keys", "create, list and revoke API keys (needs an admin key)")

    made = command(keys, "create", "create an API key; print it and its tenant's signing secret")
    made.add_argument("--tenant", required=True, help="the tenant it speaks for (made if new)")
    made.add_argument("--admin", action="store_true", help="an admin key: sees every tenant")
    add_json(made)
    made.set_defaults(func=create)

    found = listing(keys, "list", "list API keys by prefix, newest first", "keys")
    found.set_defaults(func=list_keys)

    gone = command(keys, "revoke", "revoke an API key at once; its open streams close")
    gone.add_argument("prefix", metavar="PREFIX", help="the key's prefix, as keys list shows it")
    gone.set_defaults(func=revoke)
