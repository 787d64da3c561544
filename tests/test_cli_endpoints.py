"""`dispatcher endpoints` (and `jobs submit --endpoint`): the installed script against a real
`dispatcher serve` process, with webhooks to real receivers on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher import webhooks
from tests.support.process import Http, Server
from tests.support.secrets import remember
from tests.test_cli import Result, labelled, one_line_failure, raw_request, run_cli

MISSING = "ep_" + "0" * 26
TABLE_HEADER = ["ID", "URL", "SIGNATURE", "DISABLED", "CIRCUIT", "CREATED", "DESCRIPTION"]


@pytest.fixture
async def server(serve: Any) -> Server:
    """A server that allows loopback callbacks (DISPATCHER_ALLOW_NETWORKS=127.0.0.0/8,::1/128)."""
    return await serve()


async def endpoints(server: Server, *args: str, key: str | None = None) -> Result:
    extra = {"key": key} if key is not None else {}
    return await run_cli("endpoints", *args, url=server.url, **extra)


async def created(server: Server, *args: str, key: str | None = None) -> dict[str, Any]:
    """`endpoints create ARGS --json`: the API's answer, secret included."""
    result = await endpoints(server, "create", *args, "--json", key=key)
    assert result.code == 0, result.err
    answer = json.loads(result.out)
    remember(answer)
    return answer


async def endpoint(http: Http, server: Server, endpoint_id: str) -> dict[str, Any]:
    status, body = await http.call(server, "GET", f"/v1/endpoints/{endpoint_id}")
    assert status == 200, body
    return body


async def delivered_job(server: Server, endpoint_id: str, receiver: Any, count: int = 1) -> Any:
    """Submit an echo job to the endpoint with `jobs submit --endpoint`: what the receiver got."""
    result = await run_cli("jobs", "submit", "echo", "--endpoint", endpoint_id, url=server.url)
    assert result.code == 0, result.err
    return (await receiver.wait_for_requests(count))[count - 1], result.out.strip()


async def new_key(http: Http, server: Server, tenant: str) -> str:
    status, body = await http.call(server, "POST", "/v1/keys", json={"tenant": tenant})
    assert status == 201, body
    return str(body["key"])


# create


async def test_create_prints_the_id_and_the_secret_its_webhooks_are_signed_with(
    server, http, make_receiver
):
    receiver = await make_receiver(200)

    result = await endpoints(
        server, "create", receiver.url, "--description", "orders team",
        "--header", "X-Partner-Token: t0k",
    )  # fmt: skip

    assert result.code == 0, result.err
    shown = labelled(result.out)
    remember(shown)
    assert shown["endpoint"].startswith("ep_")
    assert shown["secret"].startswith("whsec_")
    assert (shown["url"], shown["description"]) == (receiver.url, "orders team")
    assert shown["header"] == "X-Partner-Token: t0k"
    received, job_id = await delivered_job(server, shown["endpoint"], receiver)
    assert webhooks.verify(shown["secret"], received.headers, received.body)["data"]["id"] == job_id
    assert received.headers["X-Partner-Token"] == "t0k"


async def test_create_ed25519_prints_a_public_key_that_dispatcher_verify_accepts(
    server, make_receiver
):
    receiver = await make_receiver(200)

    made = await created(server, receiver.url, "--ed25519")

    assert made["signature"] == "ed25519"
    assert "secret" not in made and made["public_key"].startswith("whpk_")
    received, _ = await delivered_job(server, made["id"], receiver)
    signed = {k.lower(): v for k, v in received.headers.items() if k.lower().startswith("webhook-")}
    check = await run_cli(
        "verify", "--secret", made["public_key"],
        stdin=raw_request(signed, received.body.decode()),
    )  # fmt: skip
    assert check.code == 0, check.err
    assert check.out.startswith(f"verified: {signed['webhook-id']}  job.succeeded"), check.out


async def test_create_sends_the_filter_and_the_limits(server, http):
    made = await created(
        server, "http://127.0.0.1:9/hook", "--event-type", "job.failed",
        "--event-type", "job.cancelled", "--rate-limit", "5", "--max-in-flight", "2",
    )  # fmt: skip

    stored = await endpoint(http, server, made["id"])
    assert stored["event_types"] == ["job.failed", "job.cancelled"]
    assert (stored["rate_limit"], stored["max_in_flight"]) == (5, 2)
    assert (stored["description"], stored["headers"], stored["signature"]) == (None, {}, "hmac")


# list and show


async def test_list_is_newest_first_as_json_and_as_a_table(server):
    first = await created(server, "http://127.0.0.1:9/first", "--description", "the first")
    second = await created(server, "http://127.0.0.1:9/second", "--ed25519")

    lines = await endpoints(server, "list", "--json")
    table = await endpoints(server, "list")
    newest = await endpoints(server, "list", "--limit", "1", "--json")

    assert lines.code == 0, lines.err
    listed = [json.loads(line)["id"] for line in lines.out.splitlines()]
    assert listed == [second["id"], first["id"]]
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == TABLE_HEADER
    assert [row.split() for row in rows] == [
        [second["id"], second["url"], "ed25519", "no", "closed", second["created_at"], "-"],
        [first["id"], first["url"], "hmac", "no", "closed", first["created_at"], "the", "first"],
    ]
    assert [json.loads(line)["id"] for line in newest.out.splitlines()] == [second["id"]]
    assert newest.err == "(showing the newest 1; raise --limit to see more)\n"


async def test_an_empty_list_says_so(server):
    result = await endpoints(server, "list")

    assert (result.code, result.out) == (0, "no endpoints\n")


async def test_show_prints_the_settings_state_and_circuit(server, http):
    made = await created(
        server, "http://127.0.0.1:9/hook", "--description", "orders", "--header", "X-A: 1",
        "--event-type", "job.failed", "--rate-limit", "20",
    )  # fmt: skip

    result = await endpoints(server, "show", made["id"])
    as_json = await endpoints(server, "show", made["id"], "--json")

    assert result.code == 0, result.err
    shown = labelled(result.out)
    assert "secret" not in shown  # shown only when it was made
    assert shown["endpoint"] == made["id"]
    assert (shown["url"], shown["description"]) == ("http://127.0.0.1:9/hook", "orders")
    assert (shown["signature"], shown["events"]) == ("hmac", "job.failed")
    assert shown["header"] == "X-A: 1"
    assert (shown["rate limit"], shown["max in flight"]) == ("20 a second", "-")
    assert (shown["state"], shown["circuit"]) == ("enabled", "closed")
    assert json.loads(as_json.out) == await endpoint(http, server, made["id"])


async def test_show_of_an_ed25519_endpoint_prints_its_public_key(server):
    made = await created(server, "http://127.0.0.1:9/hook", "--ed25519")

    result = await endpoints(server, "show", made["id"])

    assert result.code == 0, result.err
    assert labelled(result.out)["public key"] == made["public_key"]


# update


async def test_update_changes_only_what_is_given_and_none_clears(server, http):
    made = await created(
        server, "http://127.0.0.1:9/hook", "--description", "orders", "--header", "X-A: 1",
        "--event-type", "job.failed", "--rate-limit", "5", "--max-in-flight", "2",
    )  # fmt: skip

    cleared = await endpoints(
        server, "update", made["id"], "--rate-limit", "none", "--url", "http://127.0.0.1:9/new"
    )
    again = await endpoints(
        server, "update", made["id"], "--no-headers", "--all-events", "--max-in-flight", "7",
        "--description", "", "--json",
    )  # fmt: skip

    assert cleared.code == 0, cleared.err
    shown = labelled(cleared.out)
    assert (shown["url"], shown["rate limit"], shown["max in flight"]) == (
        "http://127.0.0.1:9/new", "-", "2",
    )  # fmt: skip
    assert (shown["description"], shown["header"], shown["events"]) == (
        "orders", "X-A: 1", "job.failed",
    )  # fmt: skip
    assert again.code == 0, again.err
    answer = json.loads(again.out)
    assert answer == await endpoint(http, server, made["id"])
    assert (answer["headers"], answer["event_types"], answer["description"]) == ({}, None, None)
    assert (answer["rate_limit"], answer["max_in_flight"]) == (None, 7)


async def test_update_headers_replace_all_the_headers(server, http):
    made = await created(server, "http://127.0.0.1:9/hook", "--header", "X-Old: 1")

    result = await endpoints(
        server, "update", made["id"], "--header", "X-New: 2", "--header", "X-Also:  3 "
    )

    assert result.code == 0, result.err
    assert (await endpoint(http, server, made["id"]))["headers"] == {"X-New": "2", "X-Also": "3"}


async def test_a_change_the_api_refuses_is_one_line_with_its_field(server):
    made = await created(server, "http://127.0.0.1:9/hook")

    result = await endpoints(server, "update", made["id"], "--header", "Content-Type: text/plain")

    line = one_line_failure(result)
    assert result.code == 1
    assert "headers: Content-Type is set by the dispatcher" in line, line
    assert line.endswith("[HTTP 422]"), line


# rotate, enable, disable, delete


async def test_rotate_prints_a_new_secret_that_signs_the_next_webhook(server, make_receiver):
    receiver = await make_receiver(200)
    made = await created(server, receiver.url)

    result = await endpoints(server, "rotate", made["id"])

    assert result.code == 0, result.err
    shown = labelled(result.out)
    remember(shown)
    assert set(shown) == {"endpoint", "secret"} and shown["endpoint"] == made["id"]
    assert shown["secret"].startswith("whsec_") and shown["secret"] != made["secret"]
    received, job_id = await delivered_job(server, made["id"], receiver)
    assert webhooks.verify(shown["secret"], received.headers, received.body)["data"]["id"] == job_id


async def test_rotate_json_of_an_ed25519_endpoint_is_the_new_public_key(server, http):
    made = await created(server, "http://127.0.0.1:9/hook", "--ed25519")

    result = await endpoints(server, "rotate", made["id"], "--json")

    assert result.code == 0, result.err
    rotated = json.loads(result.out)
    assert set(rotated) == {"public_key"} and rotated["public_key"] != made["public_key"]
    status, key = await http.call(server, "GET", f"/v1/endpoints/{made['id']}/public-key")
    assert (status, key) == (200, rotated)


async def test_disable_then_enable(server, http):
    made = await created(server, "http://127.0.0.1:9/hook")

    off = await endpoints(server, "disable", made["id"])
    disabled = await endpoint(http, server, made["id"])
    state = labelled((await endpoints(server, "show", made["id"])).out)["state"]
    on = await endpoints(server, "enable", made["id"])
    enabled = await endpoint(http, server, made["id"])

    assert (off.code, off.out) == (0, f"disabled endpoint {made['id']}\n"), off.err
    assert disabled["disabled"] is True
    assert disabled["disabled_reason"].startswith("disabled by key dk_")
    assert state == f"disabled since {disabled['disabled_at']}: {disabled['disabled_reason']}"
    assert (on.code, on.out) == (0, f"enabled endpoint {made['id']}\n"), on.err
    assert (enabled["disabled"], enabled["disabled_reason"], enabled["disabled_at"]) == (
        False, None, None,
    )  # fmt: skip


async def test_delete_then_the_endpoint_is_gone(server, http):
    made = await created(server, "http://127.0.0.1:9/hook")

    result = await endpoints(server, "delete", made["id"])
    shown = await endpoints(server, "show", made["id"])
    submitted = await run_cli("jobs", "submit", "echo", "--endpoint", made["id"], url=server.url)

    assert (result.code, result.out) == (0, f"deleted endpoint {made['id']}\n"), result.err
    assert (await http.call(server, "GET", f"/v1/endpoints/{made['id']}"))[0] == 404
    assert one_line_failure(shown) == f"no endpoint {made['id']} [HTTP 404]"
    assert shown.code == 1
    line = one_line_failure(submitted)
    assert f"no endpoint '{made['id']}'" in line and line.endswith("[HTTP 422]"), line


# Failures


async def test_an_unknown_id_fails_in_one_line_with_exit_1(server):
    for command in ("show", "rotate", "delete", "enable", "disable"):
        result = await endpoints(server, command, MISSING)
        assert result.out == "", command
        assert one_line_failure(result) == f"no endpoint {MISSING} [HTTP 404]", command
        assert result.code == 1, command
    update = await endpoints(server, "update", MISSING, "--rate-limit", "3")
    assert (update.code, one_line_failure(update)) == (1, f"no endpoint {MISSING} [HTTP 404]")


async def test_another_tenants_endpoint_is_404_and_left_alone(server, http):
    acme, globex = await new_key(http, server, "acme"), await new_key(http, server, "globex")
    made = await created(server, "http://127.0.0.1:9/acme", key=acme)

    for args in (("show",), ("update", "--rate-limit", "1"), ("rotate",), ("delete",)):
        result = await endpoints(server, args[0], made["id"], *args[1:], key=globex)
        assert one_line_failure(result) == f"no endpoint {made['id']} [HTTP 404]", args
        assert result.code == 1, args
    theirs = await endpoints(server, "list", "--json", key=globex)
    ours = await endpoints(server, "list", "--json", key=acme)

    assert (theirs.code, theirs.out) == (0, "")
    assert [json.loads(line) for line in ours.out.splitlines()] == [
        await endpoint(http, server, made["id"])
    ]
    assert (await endpoint(http, server, made["id"]))["updated_at"] == made["updated_at"]


async def test_a_refused_address_is_one_line_422(serve):
    server = await serve(DISPATCHER_ALLOW_NETWORKS=None)  # loopback callbacks are refused

    result = await endpoints(server, "create", "http://127.0.0.1:9/hook")

    line = one_line_failure(result)
    assert result.code == 1
    assert line.startswith("blocked address 127.0.0.1"), line
    assert line.endswith("[HTTP 422]"), line


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("create", "http://h/", "--header", "nocolon"), "argument --header: 'nocolon' is not a"),
        (("create", "http://h/", "--header", ": v"), "argument --header: ': v' is not a header"),
        (("create", "http://h/", "--header", "X-A: 1", "--header", "x-a: 2"), "x-a is given twice"),
        (("create", "http://h/", "--event-type", "job.nope"), "argument --event-type: invalid"),
        (("create", "http://h/", "--rate-limit", "0"), "argument --rate-limit: '0' is not a"),
        (("create", "http://h/", "--max-in-flight", "none"), "argument --max-in-flight: 'none'"),
        (("update", MISSING, "--rate-limit", "lots"), "'lots' is neither a positive number"),
        (("update", MISSING, "--header", "A: 1", "--no-headers"), "not allowed with argument"),
        (("update", MISSING, "--all-events", "--event-type", "job.failed"), "not allowed with"),
        (("update", MISSING), "nothing to change: give --url"),
        (("create",), "the following arguments are required: URL"),
    ],
)
async def test_a_bad_argument_exits_2_in_one_line_and_sends_nothing(args, says):
    # No server: the default URL's port refuses connections, which would be exit status 1.
    result = await run_cli("endpoints", *args)

    assert result.code == 2, result
    assert says in one_line_failure(result), result.err
    assert result.out == ""


async def test_jobs_submit_takes_an_endpoint_or_a_callback_url_not_both():
    result = await run_cli(
        "jobs", "submit", "echo", "--endpoint", MISSING, "--callback-url", "http://127.0.0.1:9/"
    )

    assert result.code == 2, result
    assert "argument --callback-url: not allowed with argument --endpoint" in one_line_failure(
        result
    )
