"""The command line: the installed `dispatcher` script, run as a subprocess against a real
app on loopback: keys, deliveries, failures that name their fix, and verify."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import pytest

from dispatcher.webhooks import generate_secret, sign
from tests.conftest import ADMIN_KEY, wait_for
from tests.support.process import DISPATCHER
from tests.support.secrets import remember

BODY = json.dumps({"type": "job.succeeded", "timestamp": "2026-01-01T00:00:00Z", "data": {}})
NOWHERE = "http://127.0.0.1:9"  # for commands that never connect


@dataclass
class Result:
    code: int
    out: str
    err: str


async def run_cli(
    *args: str,
    url: str = NOWHERE,
    key: str = ADMIN_KEY,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
) -> Result:
    """Run the installed `dispatcher` script with DISPATCHER_URL and DISPATCHER_KEY set."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env = {**inherited, "DISPATCHER_URL": url, "DISPATCHER_KEY": key, **(env or {})}
    proc = await asyncio.create_subprocess_exec(
        DISPATCHER,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Result(proc.returncode or 0, out.decode(), err.decode())


def one_line_failure(result: Result) -> str:
    """The failure's one line (without `dispatcher: `), after checking it is only that."""
    assert result.code != 0, result
    assert "Traceback" not in result.err, result.err
    assert result.err.count("\n") == 1 and result.err.endswith("\n"), result.err
    return result.err.removeprefix("dispatcher: ").rstrip("\n")


def url_of(api: Any) -> str:
    return str(api.client.make_url(""))


def labelled(out: str) -> dict[str, str]:
    """`label   value` lines (as `keys create` and `jobs get` print them) as a dict."""
    pairs = (line.split("  ", 1) for line in out.splitlines() if "  " in line)
    return {label.strip(): value.strip() for label, value in pairs}


@pytest.fixture
async def failed(make_api: Any, make_receiver: Any) -> tuple[Any, dict[str, Any]]:
    """An app without retries and a webhook delivery that failed (500 "boom"; then 200)."""
    api = await make_api(retry_schedule="")
    receiver = await make_receiver((500, {}, "boom"), 200)
    job = await api.submit(type="echo", payload={}, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "failed", delivery
    return api, delivery


def raw_request(headers: dict[str, str], body: str) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST /hook HTTP/1.1\r\nhost: example.com\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body.encode())}\r\n{head}\r\n{body}"
    ).encode()


# keys


async def test_keys_create_prints_a_working_key_and_its_tenants_signing_secret(api):
    result = await run_cli("keys", "create", "--tenant", "acme", url=url_of(api))

    assert result.code == 0, result.err
    shown = labelled(result.out)
    remember(shown)
    assert shown["tenant"] == "acme"
    assert shown["admin"] == "no"
    status, secret = await api.as_key(shown["key"]).call("GET", "/v1/signing-secret")
    assert status == 200, secret
    assert shown["signing secret"] == secret["secret"]


async def test_keys_create_json_is_the_apis_answer(api):
    result = await run_cli(
        "keys", "create", "--tenant", "acme", "--admin", "--json", url=url_of(api)
    )

    assert result.code == 0, result.err
    created = json.loads(result.out)
    remember(created)
    assert set(created) == {"key", "tenant", "admin", "signing_secret"}
    assert created["admin"] is True


async def test_keys_list_shows_prefix_tenant_admin_and_times(api):
    await api.new_tenant("acme")

    table = await run_cli("keys", "list", url=url_of(api))
    lines = await run_cli("keys", "list", "--json", url=url_of(api))

    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["PREFIX", "TENANT", "ADMIN", "CREATED", "LAST", "USED"]
    [acme] = [json.loads(line) for line in lines.out.splitlines() if '"acme"' in line]
    [row] = [row for row in rows if row.startswith(acme["prefix"] + " ")]
    assert row.split() == [acme["prefix"], "acme", "no", acme["created_at"], "-"]


async def test_keys_revoke_refuses_the_key_from_then_on(api):
    acme, _ = await api.new_tenant("acme")
    _, page = await api.call("GET", "/v1/keys")
    [prefix] = [k["prefix"] for k in page["items"] if k["tenant"] == "acme"]

    result = await run_cli("keys", "revoke", prefix, url=url_of(api))

    assert result.code == 0, result.err
    assert result.out == f"revoked key {prefix}\n"
    assert (await acme.call("GET", "/v1/jobs"))[0] == 401


async def test_keys_revoke_of_an_unknown_prefix_fails_in_one_line(api):
    result = await run_cli("keys", "revoke", "dk_nosuchkey", url=url_of(api))

    assert one_line_failure(result) == "no key with prefix dk_nosuchkey [HTTP 404]"


# Failures that name the fix


async def test_a_refused_key_says_to_set_dispatcher_key(api):
    result = await run_cli("jobs", "list", url=url_of(api), key="dk_not-a-real-key-at-all")

    assert (
        one_line_failure(result)
        == "the server refused the key: set DISPATCHER_KEY to a valid API key"
    )


async def test_a_tenant_key_on_an_admin_command_says_an_admin_key_is_needed(api):
    acme, _ = await api.new_tenant("acme")

    result = await run_cli("keys", "list", url=url_of(api), key=acme.key)

    assert "needs an admin key: set DISPATCHER_KEY" in one_line_failure(result)


async def test_a_refused_connection_names_dispatcher_url():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result = await run_cli("deliveries", "list", url=url)

    line = one_line_failure(result)
    assert line.startswith(f"cannot connect to {url}: connection refused"), line
    assert "DISPATCHER_URL" in line


async def test_a_rule_broken_is_said_once(api):
    result = await run_cli("jobs", "submit", "no-such-type", url=url_of(api))

    line = one_line_failure(result)
    assert line.count("no-such-type") == 1, line
    assert line.endswith("[HTTP 422]"), line


# deliveries


async def test_deliveries_list_shows_the_failed_delivery(failed):
    api, delivery = failed

    result = await run_cli(
        "deliveries", "list", "--status", "failed", "--since", "1h", url=url_of(api)
    )

    assert result.code == 0, result.err
    [row] = [line for line in result.out.splitlines() if delivery["id"] in line]
    assert row.split() == [
        delivery["id"],
        "failed",
        "webhook",
        delivery["target"],
        "1",
        "500",
        delivery["created_at"],
    ]


async def test_deliveries_list_json_is_one_object_per_line(failed):
    api, delivery = failed

    result = await run_cli("deliveries", "list", "--json", "--channel", "webhook", url=url_of(api))

    assert result.code == 0, result.err
    [item] = [json.loads(line) for line in result.out.splitlines()]
    assert item["id"] == delivery["id"]
    assert item["status"] == "failed"


async def test_deliveries_show_prints_every_attempt(failed):
    api, delivery = failed

    result = await run_cli("deliveries", "show", delivery["id"], url=url_of(api))

    assert result.code == 0, result.err
    assert delivery["id"] in result.out
    assert any(
        line.startswith("attempt 1 ") and "scheduled  HTTP 500" in line
        for line in result.out.splitlines()
    ), result.out
    assert "response: boom" in result.out


async def test_deliveries_replay_by_id(failed):
    api, delivery = failed

    result = await run_cli("deliveries", "replay", delivery["id"], url=url_of(api))

    assert result.code == 0, result.err
    assert result.out == f"{delivery['id']}: sending now (attempt 2)\n"
    settled = await api.settled_delivery(delivery["job_id"])
    assert [a["trigger"] for a in settled["attempts"]] == ["scheduled", "manual"]


async def test_deliveries_replay_of_a_pending_delivery_tries_it_now(make_api, make_receiver):
    api = await make_api(retry_schedule="3600")  # the next scheduled try is an hour away
    receiver = await make_receiver(500, 200)
    job = await api.submit(type="echo", payload={}, callback_url=receiver.url)
    [delivery] = (await api.job(job["id"], wait=10))["deliveries"]

    async def first_attempt_recorded() -> bool:
        return (await api.delivery(delivery["id"]))["attempt_count"] == 1

    await wait_for(first_attempt_recorded)

    result = await run_cli("deliveries", "replay", delivery["id"], url=url_of(api))

    assert result.code == 0, result.err
    assert result.out == f"{delivery['id']}: sending now (attempt 2)\n"
    settled = await api.settled_delivery(job["id"])
    assert settled["status"] == "succeeded"
    assert [a["trigger"] for a in settled["attempts"]] == ["scheduled", "manual"]


async def test_deliveries_replay_by_status_since(failed):
    api, delivery = failed

    result = await run_cli(
        "deliveries", "replay", "--status", "failed", "--since", "1h", url=url_of(api)
    )

    assert result.code == 0, result.err
    assert result.out.strip() == "replayed 1 delivery"
    settled = await api.settled_delivery(delivery["job_id"])
    assert settled["attempt_count"] == 2


async def test_unknown_delivery_fails_with_one_line(api):
    missing = "msg_" + "0" * 26

    result = await run_cli("deliveries", "show", missing, url=url_of(api))

    assert result.out == ""
    assert f"no delivery {missing}" in one_line_failure(result)


async def test_replaying_an_unknown_delivery_names_it_once(failed):
    api, delivery = failed
    missing = "msg_" + "0" * 26

    result = await run_cli("deliveries", "replay", delivery["id"], missing, url=url_of(api))

    assert result.out == f"{delivery['id']}: sending now (attempt 2)\n"
    line = one_line_failure(result)
    assert line.startswith("could not replay 1 of 2: "), line
    assert line.count(missing) == 1, line


# verify


async def test_verify_accepts_a_signed_request():
    secret = generate_secret()
    headers = sign(secret, "msg_verify", int(time.time()), BODY)

    result = await run_cli("verify", "--secret", secret, stdin=raw_request(headers, BODY))

    assert result.code == 0, result.err
    assert result.out == "verified: msg_verify  job.succeeded\n"


async def test_verify_rejects_a_tampered_request():
    secret = generate_secret()
    headers = sign(secret, "msg_verify", int(time.time()), BODY)
    tampered = BODY.replace("succeeded", "cancelled")

    result = await run_cli("verify", "--secret", secret, stdin=raw_request(headers, tampered))

    assert result.out == ""
    assert one_line_failure(result).startswith("not verified")
