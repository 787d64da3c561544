"""Commands for integration partners: a local receiver (`listen`) and `verify`."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from dispatcher import cli_sockets, logs
from dispatcher.cli_args import Failure, port, tolerance
from dispatcher.receiver import Outcome, RawRequestError, check, check_secret, parse_request
from dispatcher.receiver import receiver_app as make_receiver_app

# A webhook-id is anyone's text until verified: only this much of it names a file.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")


def listen(args: argparse.Namespace) -> int:
    _check_secret(args.secret)
    if args.save is not None:
        _prepare(args.save)
    sockets = cli_sockets.listening(
        args.host, args.port, host_hint="choose another --host", port_hint="choose another --port"
    )
    app = make_receiver_app(args.secret, _reporter(args), tolerance=args.tolerance)
    # A malformed request makes aiohttp log an error with a traceback: one line instead.
    logs.configure_brief(args.secret)
    where = cli_sockets.url(args.host, sockets[0]) + "/"
    print(f"listening for webhooks on {where} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    web.run_app(app, sock=sockets, print=None, access_log=None)
    return 0


def _reporter(args: argparse.Namespace) -> Any:
    # With --print-json, stdout carries only verified bodies (for jq); the lines go to stderr.
    lines = sys.stderr if args.print_json else sys.stdout

    def report(outcome: Outcome) -> None:
        line = f"{datetime.now():%H:%M:%S}  {outcome.line()}"
        if args.save is not None:
            line += f"  {_save(args.save, outcome)}"
        print(line, file=lines, flush=True)
        if args.print_json and outcome.verified:
            print(json.dumps(outcome.event), flush=True)

    return report


def _prepare(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Failure(f"cannot use --save {directory}: {exc.strerror or exc}", 2) from exc


def _save(directory: Path, outcome: Outcome) -> str:
    """Write the raw request to DIRECTORY/<webhook-id>.http (-2, -3… for repeats); say where."""
    stem = outcome.webhook_id if SAFE_NAME.fullmatch(outcome.webhook_id) else "request"
    names = itertools.chain([f"{stem}.http"], (f"{stem}-{n}.http" for n in itertools.count(2)))
    for name in names:
        path = directory / name
        try:
            # Only the user reads it: a webhook's body may be anyone's data.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(outcome.request)
        except FileExistsError:
            continue
        except OSError as exc:
            return f"not saved ({exc.strerror or exc})"
        return f"saved {path}"
    return "not saved"  # never reached: the names do not run out


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


def add_commands(commands: Any) -> None:
    tolerance_option = {
        "type": tolerance,
        "default": 300,
        "metavar": "SECONDS",
        "help": "how far webhook-timestamp may be from now (default 300)",
    }
    secret = {
        "required": True,
        "action": "append",
        "help": "the signing secret (whsec_…) or public key (whpk_…); twice to accept either",
    }
    heard = commands.add_parser(
        "listen",
        help="a local receiver that verifies webhooks and prints one line for each",
        description="Answer 2xx to each verified webhook and 401 to anything else, on any "
        "path, and print one line per request: its webhook-id, its type and whether it "
        "verified. What did not verify is never shown.",
    )
    heard.add_argument("--port", type=port, required=True, help="the port; 0 picks a free one")
    heard.add_argument("--host", default="127.0.0.1", help="the address (default 127.0.0.1)")
    heard.add_argument("--secret", **secret)
    heard.add_argument("--tolerance", **tolerance_option)
    heard.add_argument(
        "--print-json",
        action="store_true",
        help="print each verified body as one JSON line (the request lines go to stderr)",
    )
    heard.add_argument(
        "--save",
        type=Path,
        metavar="DIR",
        help="write each request, raw, to DIR/<webhook-id>.http, as `verify` reads it",
    )
    heard.set_defaults(func=listen)

    check_raw = commands.add_parser(
        "verify",
        help="verify a raw HTTP request read on stdin (exit 0 when it verifies)",
        description="Read one raw HTTP request on stdin (request line, headers, blank line, "
        "body; as `listen --save` writes) and verify its signature.",
    )
    check_raw.add_argument("--secret", **secret)
    check_raw.add_argument("--tolerance", **tolerance_option)
    check_raw.set_defaults(func=verify)
