"""Commands for integration partners: a local receiver (`listen`) and `verify`."""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import datetime
from typing import Any

from aiohttp import web

from dispatcher import logs
from dispatcher.cli_args import Failure, port, tolerance
from dispatcher.receiver import Outcome, RawRequestError, check, check_secret, parse_request
from dispatcher.receiver import receiver_app as make_receiver_app


def listen(args: argparse.Namespace) -> int:
    _check_secret(args.secret)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        # Listening before the banner: a sender who reads it is queued, never refused.
        sock.listen(128)
    except (OSError, OverflowError, ValueError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or exc
        raise Failure(f"cannot listen on {args.host}:{args.port}: {reason}") from exc
    bound = sock.getsockname()[1]

    def report(outcome: Outcome) -> None:
        print(f"{datetime.now():%H:%M:%S}  {outcome.line()}", flush=True)

    app = make_receiver_app(args.secret, report, tolerance=args.tolerance)
    where = (
        f"http://{args.host}:{bound}/"
        if family == socket.AF_INET
        else f"http://[{args.host}]:{bound}/"
    )
    # A malformed request makes aiohttp log an error with a traceback: one line instead.
    logs.configure_brief(args.secret)
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


def add_commands(commands: Any) -> None:
    tolerance_option = {
        "type": tolerance,
        "default": 300,
        "help": "seconds webhook-timestamp may be off (default 300)",
    }
    secret = {
        "required": True,
        "action": "append",
        "help": "whsec_… or whpk_…; give it twice to accept either of two",
    }
    listen_parser = commands.add_parser("listen", help="a local receiver that verifies webhooks")
    listen_parser.add_argument("--port", type=port, required=True, help="0 picks a free one")
    listen_parser.add_argument("--host", default="127.0.0.1")
    listen_parser.add_argument("--secret", **secret)
    listen_parser.add_argument("--tolerance", **tolerance_option)
    listen_parser.set_defaults(func=listen)

    verify_parser = commands.add_parser("verify", help="verify a raw HTTP request read on stdin")
    verify_parser.add_argument("--secret", **secret)
    verify_parser.add_argument("--tolerance", **tolerance_option)
    verify_parser.set_defaults(func=verify)
