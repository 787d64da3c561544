"""`dispatcher serve` as a user starts it: what it says, when, and how it fails; and the
help the command line gives."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from dispatcher import __version__
from dispatcher.cli import build_parser
from dispatcher.settings import Settings
from tests.support.process import ADMIN_KEY_LINE, BASE_ENV, DISPATCHER, free_port
from tests.test_cli import run_cli

Start = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Start `dispatcher serve` with stdout and stderr piped; killed after the test."""
    procs: list[asyncio.subprocess.Process] = []

    async def run(*args: str, **env: str | None) -> asyncio.subprocess.Process:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        environ |= {
            **BASE_ENV,
            "DISPATCHER_DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
            "DISPATCHER_PORT": str(free_port()),
        }
        for name, value in env.items():
            environ.pop(name, None)
            if value is not None:
                environ[name] = value
        proc = await asyncio.create_subprocess_exec(
            *(DISPATCHER, "serve", *args),
            cwd=tmp_path,
            env=environ,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def lines_until_listening(proc: asyncio.subprocess.Process) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("listening on "):
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line, f"serve ended its output after {lines}"
        lines.append(line.decode().rstrip("\n"))
    return lines


async def finished(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


# Start-up output


async def test_serve_says_what_it_runs_then_listening_once_it_answers(start, tmp_path):
    port = free_port()
    proc = await start("--port", str(port), DISPATCHER_ADMIN_KEY=None)

    lines = await lines_until_listening(proc)

    # Read the line, connect at once: no retry, no wait.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        assert response.status == 200
    version, database, types, *rest, key, listening = lines
    assert version == f"dispatcher {__version__}"
    assert database == f"database: {tmp_path}/d.db"
    assert types == "job types: echo, fail, sleep"
    assert any(line.startswith("settings: ") and "DISPATCHER_LEASE_SECONDS=1" in line
               for line in rest), lines  # fmt: skip
    assert len(ADMIN_KEY_LINE.findall(key)) == 1, lines
    assert listening == f"listening on http://127.0.0.1:{port}"


async def test_serve_on_a_busy_port_fails_in_one_line_before_opening_anything(
    start, busy_port, tmp_path
):
    proc = await start(DISPATCHER_PORT=str(busy_port), DISPATCHER_ADMIN_KEY=None)

    code, out, err = await finished(proc)

    assert code == 1
    assert out == ""
    assert err == (
        f"dispatcher: cannot listen on 127.0.0.1:{busy_port}: address already in use "
        "(set DISPATCHER_PORT or --port)\n"
    )
    assert not (tmp_path / "d.db").exists()


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "DISPATCHER_HANDLERS",
            "no_such_module",
            "dispatcher: DISPATCHER_HANDLERS: no module 'no_such_module' in ",
        ),
        (
            "DISPATCHER_DATABASE_URL",
            "mysql://app:pw-0123@127.0.0.1/db",
            "dispatcher: DISPATCHER_DATABASE_URL: unsupported scheme 'mysql'",
        ),
    ],
)
async def test_a_startup_error_is_its_own_message(start, variable, value, line):
    proc = await start(**{variable: value})

    code, out, err = await finished(proc)

    assert code == 1
    assert out == ""
    assert err.startswith(line), err
    assert err.count("\n") == 1, err


async def test_a_postgresql_database_that_does_not_answer_is_one_line_without_its_password(
    start,
):
    # Port 1 on loopback: nothing listens there.
    proc = await start(DISPATCHER_DATABASE_URL="postgresql://app:pw-0123@127.0.0.1:1/db")

    code, out, err = await finished(proc)

    assert code == 1
    assert err.startswith("dispatcher: the database 127.0.0.1:1/db cannot be reached: "), err
    assert err.count("\n") == 1, err
    assert "pw-0123" not in out + err


async def test_an_unknown_log_level_is_an_invalid_setting(start):
    proc = await start(DISPATCHER_LOG_LEVEL="verbose")

    code, out, err = await finished(proc)

    assert (code, out) == (2, "")
    assert err == (
        "dispatcher: invalid setting log_level: "
        "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'\n"
    )


# Help


def flat(text: str) -> str:
    return " ".join(text.split())


async def test_serve_help_gives_each_flags_variable_and_default():
    result = await run_cli("serve", "--help")

    assert result.code == 0, result.err
    text = flat(result.out)
    assert "--port PORT port the API listens on (DISPATCHER_PORT, default 8080)" in text
    for name in ("host", "port", "database_url", "workers"):
        field = Settings.model_fields[name]
        assert field.description
        variable = f"(DISPATCHER_{name.upper()}, default {field.default})"
        assert flat(f"{field.description.rstrip('.')[1:]} {variable}") in text, name


async def test_help_describes_the_program_and_its_variables():
    result = await run_cli("--help")

    assert result.code == 0, result.err
    text = flat(result.out)
    assert "returns each result as a signed webhook" in text
    for variable in ("DISPATCHER_URL", "DISPATCHER_KEY", "DISPATCHER_TIMEOUT"):
        assert variable in text
    for command in ("serve", "keys", "jobs", "deliveries", "listen", "verify"):
        assert f" {command} " in text


async def test_version_prints_the_version():
    result = await run_cli("--version")

    assert (result.code, result.out) == (0, f"dispatcher {__version__}\n")


def parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def test_every_command_and_flag_has_help():
    for prog, parser in parsers(build_parser()):
        assert parser.description, f"{prog} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    assert choice.help, f"{prog} {choice.dest} has no help"
            else:
                assert action.help, f"{prog} {action.option_strings or action.dest} has no help"
