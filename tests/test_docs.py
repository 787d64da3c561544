"""The README and docs/ stay true: every setting documented with its default, nothing
pointing outside the repository, and the README's recipes run as a user pastes them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher.cli import build_parser
from dispatcher.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.support.process import DISPATCHER, REPO_ROOT, Http, Server, free_port
from tests.test_own_handlers import MYJOBS

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
SETTINGS_PAGE = DOCS / "settings.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
# Read by the command line, not by `serve`: they are not Settings fields.
CLIENT_VARIABLES = {"DISPATCHER_URL", "DISPATCHER_KEY", "DISPATCHER_TIMEOUT"}
# Read by the tests and the benchmarks, as the README says.
DEVELOPMENT_VARIABLES = {
    "DISPATCHER_TEST_POSTGRES_URL",
    "DISPATCHER_TEST_POSTGRES_REQUIRED",
    "DISPATCHER_BENCH_POSTGRES_URL",
}
SERVER_VARIABLES = {"DISPATCHER_" + name.upper() for name in Settings.model_fields}
# A variable, or a family of them written `DISPATCHER_SMS_*`.
VARIABLE = re.compile(r"\bDISPATCHER_[A-Z0-9_]+\*?")
LINK = re.compile(r"\]\(([^)\s]+)\)")
CLI_PAGE = DOCS / "cli.md"
# Pages another change adds; a link to one is fine before it lands. Remove once it has.
PENDING: set[Path] = set()
WALKTHROUGH_SECONDS = 45


def recipe(page: Path, name: str) -> str:
    """The one fenced block that follows `<!-- recipe: NAME -->` on `page`."""
    marker = re.escape(f"<!-- recipe: {name} -->")
    found = re.findall(marker + r"\n```[a-z]*\n(.*?)^```", page.read_text(), re.S | re.M)
    assert len(found) == 1, f"{page.name} needs exactly one block marked 'recipe: {name}'"
    return found[0]


# Settings


def shown(value: Any) -> str | None:
    """A default as settings.md writes it; None for one that is unset or empty."""
    if value is None or value == ():
        return None
    if isinstance(value, tuple):
        return ",".join(str(shown(part)) for part in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def table_rows(page: Path) -> dict[str, list[str]]:
    """The cells of each table row whose first cell is a `DISPATCHER_*` variable."""
    rows: dict[str, list[str]] = {}
    for line in page.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        found = re.fullmatch(r"`(DISPATCHER_[A-Z0-9_]+)`", cells[0])
        if found:
            assert found[1] not in rows, f"{found[1]} has two rows in {page.name}"
            rows[found[1]] = cells
    return rows


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_documented_with_its_default(name: str):
    variable = "DISPATCHER_" + name.upper()
    rows = table_rows(SETTINGS_PAGE)
    assert variable in rows, f"{variable} has no row in docs/settings.md"
    _, default, meaning, example = rows[variable]
    expected = shown(Settings.model_fields[name].get_default(call_default_factory=True))
    if expected is None:
        assert default.startswith(("unset", "empty")), f"{variable}: {default}"
    else:
        assert default == f"`{expected}`", f"{variable}: documented {default}, is {expected}"
    assert meaning and example, f"{variable} needs a meaning and an example"


def test_the_command_line_variables_are_documented():
    rows = table_rows(SETTINGS_PAGE)
    missing = CLIENT_VARIABLES - set(rows)
    assert not missing, f"docs/settings.md lacks {missing}"


def test_every_serve_flag_is_documented_with_the_variable_it_overrides():
    subcommands = next(action for action in build_parser()._actions if action.dest == "command")
    serve = subcommands.choices["serve"]
    flags = [action for action in serve._actions if action.dest != "help"]
    assert flags
    text = SETTINGS_PAGE.read_text()
    for flag in flags:
        row = f"| `{flag.option_strings[0]}` | `DISPATCHER_{flag.dest.upper()}` |"
        assert row in text, f"docs/settings.md lacks the row {row}"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Each command of the parser (`("jobs", "submit")`), with its own parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


COMMANDS = list(commands(build_parser()))


@pytest.mark.parametrize(("path", "parser"), COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_every_command_and_its_flags_are_in_cli_md(path: tuple[str, ...], parser: Any):
    text = CLI_PAGE.read_text()
    command = " ".join(path)
    assert f"`dispatcher {command}" in text, f"docs/cli.md lacks dispatcher {command}"
    for action in parser._actions:
        for flag in action.option_strings:
            if flag not in ("-h", "--help"):
                found = re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
                assert found, f"docs/cli.md lacks {command} {flag}"


def test_cli_md_names_the_variables_and_exit_statuses():
    text = CLI_PAGE.read_text()
    for variable in sorted(CLIENT_VARIABLES):
        assert f"| `{variable}` |" in text, variable
    for status in (0, 1, 2, 3, 4):
        assert f"| `{status}` |" in text, status


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_only_variables_that_exist_are_named(page: Path):
    known = SERVER_VARIABLES | CLIENT_VARIABLES | DEVELOPMENT_VARIABLES
    for name in set(VARIABLE.findall(page.read_text())):
        if name.endswith("*"):
            assert any(v.startswith(name[:-1]) for v in known), f"{page.name}: {name}"
        else:
            assert name in known, f"{page.name} names {name}, which is no variable"


# Links


def test_nothing_points_outside_the_repository():
    files = [README, *(path for path in DOCS.rglob("*.md") if path.is_file())]
    assert len(files) > 1, "docs/ is missing"
    for path in files:
        text = path.read_text()
        for outside in ("../shared", "/work/shared", "SPEC.md"):
            assert outside not in text, f"{path.relative_to(REPO_ROOT)} mentions {outside}"


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_lead_somewhere(page: Path):
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if path in PENDING and not path.exists():
            continue
        assert path.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name} links to {target}: no such heading"


# The README's recipes


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to the process group (0: none, only look); whether any of it was there."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _run_recipe(name: str, tmp_path: Path, log_name: str, **variables: str) -> str:
    """Run a README recipe with bash as pasted, in a folder of its own; its stdout.

    It must exit 0 and leave nothing running. `variables` are set as a user
    would before pasting it (ports, a database).
    """
    script = tmp_path / f"{name}.sh"
    script.write_text(recipe(README, name))
    work = tmp_path / "work"
    work.mkdir()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env = {
        **inherited,
        # The installed console script (and this Python as python3), as after the README's install.
        "PATH": f"{Path(DISPATCHER).parent}{os.pathsep}{inherited.get('PATH', '')}",
        **variables,
    }
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        # A session of its own: whatever it starts can be found and killed, even on failure.
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", str(script)],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        code = process.wait(timeout=WALKTHROUGH_SECONDS)
        left_running = _signal_group(process.pid, 0)
    except subprocess.TimeoutExpired:
        code, left_running = None, True
    finally:
        _signal_group(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()
    output = out_file.read_text()
    logs = (
        "".join(f"{log.name}:\n{log.read_text()}\n" for log in sorted(work.glob("*.log")))
        or f"{log_name}: (none)"
    )
    said = f"stdout:\n{output}\nstderr:\n{err_file.read_text()}\n{logs}"
    assert code == 0, f"the {name} recipe exited with {code}\n{said}"
    assert not left_running, f"the {name} recipe left processes running\n{said}"
    return output


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walkthrough uses curl")
def test_the_readme_walkthrough_runs_as_pasted(tmp_path: Path):
    # The README uses these when set, so that busy ports 8080 and 9000 do not matter.
    output = _run_recipe(
        "walkthrough",
        tmp_path,
        "dispatcher.log",
        DISPATCHER_PORT=str(free_port()),
        HOOK_PORT=str(free_port()),
    )
    said = f"stdout:\n{output}"
    answers = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    [job] = [a for a in answers if str(a.get("id", "")).startswith("job_")]
    assert job["status"] == "succeeded", said
    assert job["result"] == {"hello": "world"}, said
    [delivery] = [a for a in answers if str(a.get("id", "")).startswith("msg_")]
    assert delivery["status"] == "succeeded", said
    assert delivery["attempts"][-1]["status_code"] == 200, said
    # The receiver verified the webhook and said so.
    assert re.search(rf"{delivery['id']}  job\.succeeded  verified", output), said
    assert {"matched": 0} in answers, said


@pytest.mark.skipif(shutil.which("curl") is None, reason="the recipe uses curl")
async def test_the_readme_two_instances_recipe_runs_as_pasted(tmp_path: Path):
    from tests.support.databases import fresh_postgres_url

    async with fresh_postgres_url() as url:
        output = await asyncio.to_thread(
            _run_recipe,
            "instances",
            tmp_path,
            "a.log",
            DATABASE_URL=url,
            PORT_A=str(free_port()),
            PORT_B=str(free_port()),
        )
    assert output.splitlines()[-1] == "succeeded", output


def test_the_systemd_unit_runs_serve_with_known_settings():
    unit = (REPO_ROOT / "examples" / "systemd" / "dispatcher@.service").read_text()
    assert "ExecStart=/opt/dispatcher/.venv/bin/dispatcher serve" in unit
    named = set(re.findall(r"^Environment=(DISPATCHER_[A-Z_]+)=", unit, re.MULTILINE))
    named |= set(re.findall(r"^#\s+(DISPATCHER_[A-Z_]+)=", unit, re.MULTILINE))
    assert named and named <= SERVER_VARIABLES, named - SERVER_VARIABLES
    # Its instance number makes its port: dispatcher@1 listens on 8081.
    assert "Environment=DISPATCHER_PORT=808%i" in unit


async def test_the_readme_handler_module_is_the_tested_one_and_runs(
    serve: Any, http: Http, tmp_path: Path
):
    module = recipe(README, "myjobs.py")
    assert _code(module) == _code(MYJOBS), "README's myjobs.py and test_own_handlers differ"
    (tmp_path / "myjobs.py").write_text(module)
    server: Server = await serve(cwd=tmp_path, DISPATCHER_HANDLERS="myjobs")
    job = await http.submit(server, type="thumbnail", payload={"name": "cat"})
    done = await http.wait(server, job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"url": "https://img.example/cat.png"}, done


def _code(source: str) -> list[str]:
    """The lines that are code: comments and blank lines aside."""
    lines = (line.rstrip() for line in source.splitlines())
    return [line for line in lines if line and not line.lstrip().startswith("#")]


async def test_the_readme_python_client_runs(serve: Any, tmp_path: Path):
    script = tmp_path / "client_example.py"
    script.write_text(recipe(README, "client.py"))
    server: Server = await serve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env |= {"DISPATCHER_URL": server.url, "DISPATCHER_KEY": ADMIN_KEY}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(script), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines()[-2:] == ["succeeded", "{'hello': 'world'}"], out.decode()
