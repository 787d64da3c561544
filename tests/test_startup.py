"""What serve says at start: where the database is, what it runs, what was changed; no secret."""

from __future__ import annotations

import os

import pytest

from dispatcher.handlers import load_registry
from dispatcher.settings import Settings
from dispatcher.startup import summary
from tests.conftest import ADMIN_KEY
from tests.support.process import free_port, serve_until_it_stops


def test_the_summary_names_the_database_job_types_and_changed_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(
        admin_key="operator-chosen-admin-key",
        smtp_url="smtp://mailer:hunter2hunter2@127.0.0.1:2525",
        retry_schedule="1,2",
        workers=4,
    )
    text = "\n".join(line.text for line in summary(settings, load_registry(())))
    assert f"database: {tmp_path}/dispatcher.db" in text
    [types] = [line for line in text.splitlines() if line.startswith("job types: ")]
    # Earlier tests may have loaded more handler modules into this process.
    assert {"echo", "fail", "sleep"} <= set(types.removeprefix("job types: ").split(", "))
    assert "runs 4 jobs and 256 deliveries at once" in text
    assert "DISPATCHER_RETRY_SCHEDULE=1.0,2.0" in text
    assert "DISPATCHER_ADMIN_KEY=***" in text
    assert "DISPATCHER_SMTP_URL=***" in text
    assert "DISPATCHER_LEASE_SECONDS" not in text  # left at its default
    for secret in ("operator-chosen-admin-key", "hunter2"):
        assert secret not in text


def test_a_database_url_shows_no_password():
    settings = Settings(database_url="postgresql://app:s3cret-pw@127.0.0.1:5432/test")
    [database] = [
        line.text for line in summary(settings, load_registry(())) if "database" in line.text
    ]
    assert "s3cret-pw" not in database
    assert "127.0.0.1:5432/test" in database


@pytest.mark.parametrize("where", ["a-file/dispatcher.db", "a-file"])
async def test_a_database_that_cannot_be_opened_is_one_line_naming_it(tmp_path, where):
    (tmp_path / "a-file").write_text("not a database\n")
    path = tmp_path / where
    line = await _serve_fails(DISPATCHER_DATABASE_URL=f"sqlite:///{path}")
    assert line.startswith(f"dispatcher: the database {path} cannot be opened: "), line
    assert "unexpected" not in line


async def test_an_smtp_url_of_another_scheme_is_one_line_without_the_url(tmp_path):
    line = await _serve_fails(
        DISPATCHER_DATABASE_URL=f"sqlite:///{tmp_path}/d.db",
        DISPATCHER_SMTP_URL="http://mailer:hunter2hunter2@127.0.0.1:1",
    )
    assert line == "dispatcher: DISPATCHER_SMTP_URL must start with smtp:// or smtps://"


async def _serve_fails(**settings: str) -> str:
    """`dispatcher serve` with these settings: it must exit 1 with one line on stderr."""
    env = {
        **os.environ,
        "DISPATCHER_PORT": str(free_port()),
        "DISPATCHER_ADMIN_KEY": ADMIN_KEY,
        **settings,
    }
    code, _, stderr = await serve_until_it_stops(env)
    assert code == 1
    [line] = stderr.strip().splitlines()
    return line
