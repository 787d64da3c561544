"""`dispatcher serve`: the HTTP API and the worker pool in one process.

What it prints on stdout, in order: the start-up summary (version, database,
job types, changed settings) once its port is bound, the first admin key when
it mints one, and `listening on http://HOST:PORT` once it answers. Anything
that stops it before then is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from pydantic import SecretStr, ValidationError

from dispatcher import cli_sockets, logs
from dispatcher.cli_args import Failure, port, positive
from dispatcher.errors import StartupError
from dispatcher.settings import Settings, log_format_alone

# The settings `serve` also takes as flags, with the argument type that checks each.
FLAGS = {"host": str, "port": port, "database_url": str, "workers": positive}
HOST_HINT = "set DISPATCHER_HOST or --host"
PORT_HINT = "set DISPATCHER_PORT or --port"


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logs.configure(settings.log_format, settings.log_level, secrets=operator_secrets(settings))
    try:
        return _run(settings)
    except StartupError as exc:
        raise Failure(str(exc)) from exc


def _run(settings: Settings) -> int:
    # Imported here so the client commands start without loading the server.
    from dispatcher.app import create_app
    from dispatcher.handlers import load_registry
    from dispatcher.startup import summary

    app = create_app(settings, announce=_announce)
    # The registry create_app loaded: its modules are imported already, so this only reads it.
    registry = load_registry(settings.handlers, search=Path.cwd())
    sockets = cli_sockets.listening(
        settings.host, settings.port, host_hint=HOST_HINT, port_hint=PORT_HINT
    )
    try:
        for line in summary(settings, registry):
            logs.say(line.event, line.text, **line.fields)
        where = cli_sockets.url(settings.host, sockets[0])
        web.run_app(
            app,
            sock=sockets,
            # Called once the app has started and its sites serve.
            print=lambda _: logs.say("dispatcher.listening", f"listening on {where}", url=where),
            shutdown_timeout=settings.shutdown_grace,
            access_log_class=logs.AccessLogger,
            loop=_event_loop(),
        )
    finally:
        for sock in sockets:
            sock.close()
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is installed (the `speed` extra), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _announce(key: str) -> None:
    # Printed, not logged: the one line meant to show a secret, which the log would mask.
    text = f"Created the first admin API key (shown once, store it now): {key}"
    logs.say("admin_key.created", text, key=key)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in FLAGS if getattr(args, name) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # Said as the log would say it, if its own setting can be read.
        logs.configure(log_format_alone(), "INFO")
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Failure(f"invalid setting {where}: {first['msg']}", 2) from exc
    return settings


def operator_secrets(settings: Settings) -> Iterator[str]:
    """Every secret the operator configured, for the logs to mask: each SecretStr setting,
    the password inside it when it is a URL, and the database URL's password."""
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


def setting_help(name: str) -> str:
    """A flag's help: its setting's description, variable and default."""
    field = Settings.model_fields[name]
    text = (field.description or name).rstrip(".")
    default = field.get_default(call_default_factory=True)
    shown = "unset" if default is None else f"default {default}"
    help = f"{text[:1].lower()}{text[1:]} (DISPATCHER_{name.upper()}, {shown})"
    return help.replace("%", "%%")  # argparse formats help with %


def add_command(commands: Any) -> None:
    run = commands.add_parser(
        "serve",
        help="run the HTTP API and the worker pool",
        description="Run the HTTP API and the worker pool in one process. Each flag wins "
        "over its variable; every other setting is a DISPATCHER_* variable "
        "(docs/settings.md).",
    )
    for name, kind in FLAGS.items():
        run.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            metavar=name.upper(),
            help=setting_help(name),
        )
    run.set_defaults(func=serve)
