"""Bad input to any route: a 4xx problem answer, nothing changed, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import CIMultiDictProxy

from tests.conftest import ADMIN_KEY, Api, wait_for

PROBLEM = "application/problem+json"
UNKNOWN_JOB = "job_00000000000000000000000000"
ECHO = {"type": "echo", "payload": {"n": 1}}
# "Use the Api's own key" for `send`; a test may pass another header value, or None.
OWN_KEY: Any = object()


async def send(
    api: Api, method: str, path: str, *, authorization: str | None = OWN_KEY, **kwargs: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """One raw request: status, headers and body bytes, with any (or no) Authorization."""
    headers = dict(kwargs.pop("headers", None) or {})
    if authorization is OWN_KEY:
        authorization = f"Bearer {api.key}"
    if authorization is not None:
        headers["Authorization"] = authorization
    async with api.client.request(method, path, headers=headers, **kwargs) as response:
        return response.status, response.headers, await response.read()


def check_problem(status: int, got: int, headers: CIMultiDictProxy[str], raw: bytes) -> dict:
    """Check an answer is an RFC 9457 problem with `status`; return its body."""
    assert got == status, raw
    assert headers["Content-Type"].split(";")[0] == PROBLEM
    problem = json.loads(raw)
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert problem["status"] == status
    assert isinstance(problem["detail"], str) and problem["detail"]
    return problem


async def expect_problem(api: Api, status: int, method: str, path: str, **kwargs: Any) -> dict:
    """Make the request and check it is an RFC 9457 problem with `status`; return its body."""
    return check_problem(status, *await send(api, method, path, **kwargs))


async def expect_invalid(api: Api, field: str, method: str, path: str, **kwargs: Any) -> dict:
    """A 422 problem whose `errors` list names `field` (or something inside it)."""
    problem = await expect_problem(api, 422, method, path, **kwargs)
    assert isinstance(problem["errors"], list) and problem["errors"], problem
    fields = [error["field"] for error in problem["errors"]]
    assert any(f == field or f.startswith(f"{field}.") for f in fields), fields
    return problem


async def job_ids(api: Api) -> list[str]:
    status, body = await api.call("GET", "/v1/jobs")
    assert status == 200, body
    return [job["id"] for job in body["items"]]


async def assert_serving_and_no_jobs(api: Api) -> None:
    status, _ = await api.call("GET", "/healthz")
    assert status == 200
    assert await job_ids(api) == []


async def key_list(api: Api) -> list[tuple[str, str, bool]]:
    """The stored keys, without last_used_at (which using a key changes)."""
    status, body = await api.call("GET", "/v1/keys")
    assert status == 200, body
    return [(key["prefix"], key["tenant"], key["admin"]) for key in body["items"]]


async def succeeded_delivery(api: Api, make_receiver: Any) -> dict:
    receiver = await make_receiver(200)
    job = await api.submit(**ECHO, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded"
    return delivery


# POST /v1/jobs: the body


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/jobs?type=%00", None),
        ("GET", "/v1/deliveries?job_id=a%00b", None),
        ("POST", "/v1/jobs", {"type": "echo\u0000", "payload": 1}),
        ("POST", "/v1/endpoints", {"url": "http://127.0.0.1:9/h", "description": "a\u0000"}),
    ],
    ids=["job-filter", "delivery-filter", "job-type", "endpoint-description"],
)
async def test_a_nul_character_in_a_field_is_422_and_stores_nothing(api, method, path, body):
    await expect_problem(api, 422, method, path, json=body)
    await assert_serving_and_no_jobs(api)


async def test_body_that_is_not_json_is_400_and_stores_nothing(api):
    await expect_problem(
        api,
        400,
        "POST",
        "/v1/jobs",
        data=b'{"type": "echo", "payload": ',
        headers={"Content-Type": "application/json"},
    )
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize(
    "payload",
    ["NaN", "Infinity", "1e400", "-1e400", '{"x": "\\ud800"}', '"\\udfff tail"'],
    ids=["nan", "infinity", "huge", "negative-huge", "lone-high-surrogate", "lone-low-surrogate"],
)
async def test_json_python_reads_but_json_cannot_carry_is_400_and_stores_nothing(api, payload):
    # Python's json module reads these; JSON (RFC 8259) and UTF-8 cannot carry them.
    await expect_problem(
        api,
        400,
        "POST",
        "/v1/jobs",
        data=f'{{"type": "echo", "payload": {payload}}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    await assert_serving_and_no_jobs(api)


async def test_deeply_nested_json_is_a_4xx_problem_and_stores_nothing(api):
    depth = 100_000
    status, headers, raw = await send(
        api,
        "POST",
        "/v1/jobs",
        data=b'{"type": "echo", "payload": ' + b"[" * depth + b"]" * depth + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert status in (400, 422), raw
    assert headers["Content-Type"].split(";")[0] == PROBLEM
    await assert_serving_and_no_jobs(api)


async def test_json_that_is_not_an_object_is_422_and_stores_nothing(api):
    problem = await expect_problem(api, 422, "POST", "/v1/jobs", json=[ECHO])
    assert isinstance(problem["errors"], list) and problem["errors"]
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_type_is_415_and_stores_nothing(api, content_type):
    await expect_problem(
        api,
        415,
        "POST",
        "/v1/jobs",
        data=json.dumps(ECHO).encode(),
        headers={"Content-Type": content_type},
    )
    await assert_serving_and_no_jobs(api)


async def test_body_over_max_body_bytes_is_413_and_stores_nothing(make_api):
    api = await make_api(max_body_bytes=2048)
    job = {"type": "echo", "payload": {"blob": "x" * 3000}}
    await expect_problem(api, 413, "POST", "/v1/jobs", json=job)
    await assert_serving_and_no_jobs(api)


async def test_chunked_body_over_max_body_bytes_is_413_and_stores_nothing(make_api):
    api = await make_api(max_body_bytes=2048)
    encoded = json.dumps({"type": "echo", "payload": {"blob": "x" * 3000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit must hold while reading, too.
        for start in range(0, len(encoded), 512):
            yield encoded[start : start + 512]

    await expect_problem(
        api,
        413,
        "POST",
        "/v1/jobs",
        data=chunks(),
        headers={"Content-Type": "application/json"},
    )
    await assert_serving_and_no_jobs(api)


async def test_body_just_under_max_body_bytes_is_accepted(make_api):
    api = await make_api(max_body_bytes=2048)
    job = {"type": "echo", "payload": {"blob": "x" * 1800}}
    assert len(json.dumps(job)) < 2048
    created = await api.submit(**job)
    assert await job_ids(api) == [created["id"]]


async def test_unknown_job_type_is_422_and_stores_nothing(api):
    problem = await expect_invalid(
        api, "type", "POST", "/v1/jobs", json={"type": "no-such-type", "payload": {}}
    )
    assert "no-such-type" in problem["errors"][0]["message"]
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/hook", "/relative/hook", "http:///no-host"],
)
async def test_callback_url_that_is_not_absolute_http_is_422_and_stores_nothing(api, url):
    await expect_invalid(
        api, "callback_url", "POST", "/v1/jobs", json={**ECHO, "callback_url": url}
    )
    await assert_serving_and_no_jobs(api)


async def test_callback_url_and_endpoint_id_together_are_422_and_store_nothing(api):
    job = {**ECHO, "callback_url": "http://127.0.0.1/hook", "endpoint_id": "ep_x"}
    problem = await expect_problem(api, 422, "POST", "/v1/jobs", json=job)
    fields = [error["field"] for error in problem["errors"]]
    assert {"callback_url", "endpoint_id"} & set(fields), problem["errors"]
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize("email", ["not-an-email", "user@"])
async def test_malformed_notify_email_is_422_and_stores_nothing(api, email):
    job = {**ECHO, "notify": {"email": email}}
    await expect_invalid(api, "notify.email", "POST", "/v1/jobs", json=job)
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize("phone", ["12345", "+12", "+1234567890123456", "+1 415 555"])
async def test_phone_not_e164_is_422_and_stores_nothing(api, phone):
    job = {**ECHO, "notify": {"sms": phone}}
    await expect_invalid(api, "notify.sms", "POST", "/v1/jobs", json=job)
    await assert_serving_and_no_jobs(api)


async def test_unknown_extra_field_is_422_and_stores_nothing(api):
    job = {**ECHO, "callback": "http://127.0.0.1/hook"}
    await expect_invalid(api, "callback", "POST", "/v1/jobs", json=job)
    await assert_serving_and_no_jobs(api)


async def test_unknown_field_inside_notify_is_422_and_stores_nothing(api):
    job = {**ECHO, "notify": {"emial": "ops@example.com"}}
    await expect_invalid(api, "notify.emial", "POST", "/v1/jobs", json=job)
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize("deadline", ["2030-01-01T00:00:00", "tomorrow"])
async def test_deadline_without_timezone_or_unparsable_is_422_and_stores_nothing(api, deadline):
    await expect_invalid(api, "deadline", "POST", "/v1/jobs", json={**ECHO, "deadline": deadline})
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
        ("http://[::1]/", "::1"),
    ],
)
async def test_callback_to_literal_disallowed_address_is_422_naming_it(make_api, url, address):
    api = await make_api(allow_networks="")
    problem = await expect_invalid(
        api, "callback_url", "POST", "/v1/jobs", json={**ECHO, "callback_url": url}
    )
    assert address in problem["detail"], problem
    await assert_serving_and_no_jobs(api)


# POST /v1/jobs: Idempotency-Key


async def test_same_idempotency_key_and_body_replays_the_first_job(api):
    headers = {"Idempotency-Key": "order-42"}
    first_status, first_headers, first = await send(
        api, "POST", "/v1/jobs", json=ECHO, headers=headers
    )
    assert first_status == 202, first
    assert "Idempotent-Replayed" not in first_headers
    second_status, second_headers, second = await send(
        api, "POST", "/v1/jobs", json=ECHO, headers=headers
    )
    assert second_status == 200, second
    assert second_headers["Idempotent-Replayed"] == "true"
    assert json.loads(second)["id"] == json.loads(first)["id"]
    assert second_headers["Location"] == first_headers["Location"]
    assert await job_ids(api) == [json.loads(first)["id"]]


async def test_same_idempotency_key_with_different_body_is_409_and_stores_nothing(api):
    headers = {"Idempotency-Key": "order-43"}
    first = await send(api, "POST", "/v1/jobs", json=ECHO, headers=headers)
    assert first[0] == 202, first[2]
    other = {"type": "echo", "payload": {"n": 2}}
    await expect_problem(api, 409, "POST", "/v1/jobs", json=other, headers=headers)
    assert await job_ids(api) == [json.loads(first[2])["id"]]


async def test_idempotency_keys_are_per_tenant(api):
    acme, _ = await api.new_tenant("acme")
    globex, _ = await api.new_tenant("globex")
    headers = {"Idempotency-Key": "shared-key"}
    status_a, _, body_a = await send(acme, "POST", "/v1/jobs", json=ECHO, headers=headers)
    status_g, headers_g, body_g = await send(globex, "POST", "/v1/jobs", json=ECHO, headers=headers)
    assert (status_a, status_g) == (202, 202), (body_a, body_g)
    assert "Idempotent-Replayed" not in headers_g
    assert json.loads(body_a)["id"] != json.loads(body_g)["id"]
    assert await job_ids(globex) == [json.loads(body_g)["id"]]


# POST /v1/jobs: back-pressure


async def test_full_queue_is_503_with_retry_after_and_stores_nothing(make_api):
    api = await make_api(max_queue=1, workers=1, shutdown_grace=0)
    running = await api.submit(type="sleep", payload={"seconds": 5})

    async def started() -> bool:
        return (await api.job(running["id"]))["status"] == "running"

    await wait_for(started)
    # The one worker is busy, so this one waits: it is the one queued job allowed.
    queued = await api.submit(**ECHO)
    assert (await api.job(queued["id"]))["status"] == "queued"

    answer = await send(api, "POST", "/v1/jobs", json=ECHO)
    check_problem(503, *answer)
    assert answer[1]["Retry-After"].isdigit(), answer[1]
    assert sorted(await job_ids(api)) == sorted([running["id"], queued["id"]])

    status, body = await api.call("POST", f"/v1/jobs/{queued['id']}/cancel")
    assert status == 200, body


async def test_cancelling_the_queued_job_makes_room_again(make_api):
    api = await make_api(max_queue=1, workers=1, shutdown_grace=0)
    running = await api.submit(type="sleep", payload={"seconds": 5})

    async def started() -> bool:
        return (await api.job(running["id"]))["status"] == "running"

    await wait_for(started)
    queued = await api.submit(**ECHO)
    await expect_problem(api, 503, "POST", "/v1/jobs", json=ECHO)
    status, _ = await api.call("POST", f"/v1/jobs/{queued['id']}/cancel")
    assert status == 200
    again = await api.submit(**ECHO)
    status, _ = await api.call("POST", f"/v1/jobs/{again['id']}/cancel")
    assert status == 200


# GET /v1/jobs and /v1/jobs/{id}


async def test_empty_query_values_mean_no_filter(api):
    job = await api.submit(type="echo", payload=1)
    status, body = await api.call("GET", "/v1/jobs?status=&type=&cursor=")
    assert status == 200
    assert [item["id"] for item in body["items"]] == [job["id"]]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("status=bogus", "status"),
        ("cursor=garbage!!", "cursor"),
    ],
)
async def test_bad_job_list_query_is_422(api, query, field):
    created = await api.submit(**ECHO)
    await expect_invalid(api, field, "GET", f"/v1/jobs?{query}")
    assert await job_ids(api) == [created["id"]]


@pytest.mark.parametrize("wait", ["61", "abc"])
async def test_bad_wait_is_422(api, wait):
    created = await api.submit(**ECHO)
    await expect_invalid(api, "wait", "GET", f"/v1/jobs/{created['id']}?wait={wait}")
    assert await job_ids(api) == [created["id"]]


@pytest.mark.parametrize("job_id", [UNKNOWN_JOB, "nonsense"])
async def test_job_that_never_existed_is_404(api, job_id):
    await expect_problem(api, 404, "GET", f"/v1/jobs/{job_id}")
    await assert_serving_and_no_jobs(api)


async def test_job_that_never_existed_is_404_even_with_wait(api):
    await expect_problem(api, 404, "GET", f"/v1/jobs/{UNKNOWN_JOB}?wait=5")
    await assert_serving_and_no_jobs(api)


async def test_job_list_pages_newest_first_and_visits_every_job_once(api):
    submitted = [(await api.submit(type="echo", payload={"n": n}))["id"] for n in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, body = await api.call("GET", path)
        assert status == 200, body
        assert len(body["items"]) <= 2
        seen += [job["id"] for job in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert len(body["items"]) == 2
    assert pages == 3
    assert seen == list(reversed(submitted))


# POST /v1/jobs/{id}/cancel


async def test_cancel_finished_job_is_409_and_changes_nothing(api):
    created = await api.submit(**ECHO)
    done = await api.job(created["id"], wait=10)
    assert done["status"] == "succeeded"
    await expect_problem(api, 409, "POST", f"/v1/jobs/{created['id']}/cancel")
    after = await api.job(created["id"])
    assert after["status"] == "succeeded"
    assert after["result"] == ECHO["payload"]


@pytest.mark.parametrize("job_id", [UNKNOWN_JOB, "nonsense"])
async def test_cancel_unknown_job_is_404(api, job_id):
    await expect_problem(api, 404, "POST", f"/v1/jobs/{job_id}/cancel")
    await assert_serving_and_no_jobs(api)


# Deliveries


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("since=yesterday", "since"),
        ("until=2030-01-01T00:00:00", "until"),
        ("cursor=garbage!!", "cursor"),
    ],
)
async def test_bad_delivery_list_query_is_422(api, query, field):
    await expect_invalid(api, field, "GET", f"/v1/deliveries?{query}")
    await assert_serving_and_no_jobs(api)


async def test_unknown_delivery_is_404(api):
    await expect_problem(api, 404, "GET", "/v1/deliveries/msg_00000000000000000000000000")
    await expect_problem(api, 404, "GET", "/v1/deliveries/nonsense")


@pytest.mark.parametrize(
    ("replay", "field"),
    [
        ({}, "status"),
        ({"status": "pending"}, "status"),
        ({"status": "succeeded", "dry_run": "maybe"}, "dry_run"),
        ({"status": "succeeded", "everything": True}, "everything"),
    ],
)
async def test_bad_bulk_replay_is_422_and_replays_nothing(api, make_receiver, replay, field):
    delivery = await succeeded_delivery(api, make_receiver)
    await expect_invalid(api, field, "POST", "/v1/deliveries/replay", json=replay)
    after = await api.delivery(delivery["id"])
    assert after["status"] == "succeeded"
    assert len(after["attempts"]) == 1


async def test_bulk_replay_body_that_is_not_json_is_400_and_replays_nothing(api, make_receiver):
    delivery = await succeeded_delivery(api, make_receiver)
    await expect_problem(
        api,
        400,
        "POST",
        "/v1/deliveries/replay",
        data=b'{"status": "succeeded"',
        headers={"Content-Type": "application/json"},
    )
    after = await api.delivery(delivery["id"])
    assert after["status"] == "succeeded"
    assert len(after["attempts"]) == 1


async def test_replay_of_unknown_delivery_is_404(api):
    await expect_problem(api, 404, "POST", "/v1/deliveries/msg_00000000000000000000000000/replay")
    await expect_problem(api, 404, "POST", "/v1/deliveries/nonsense/replay")


# Routes, methods, keys


@pytest.mark.parametrize("path", ["/nope", "/v1/nope"])
async def test_unknown_route_is_404_problem(api, path):
    await expect_problem(api, 404, "GET", path)
    await assert_serving_and_no_jobs(api)


async def test_wrong_method_is_405_problem_with_allow(api):
    answer = await send(api, "DELETE", "/v1/jobs")
    check_problem(405, *answer)
    allowed = {method.strip() for method in answer[1]["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("POST", f"/v1/jobs/{UNKNOWN_JOB}/cancel"),
        ("GET", "/v1/deliveries"),
        ("POST", "/v1/keys"),
        ("POST", "/v1/signing-secret/rotate"),
        ("GET", "/v1/nope"),
    ],
)
async def test_missing_key_is_401_problem(api, method, path):
    await expect_problem(api, 401, method, path, authorization=None, json=ECHO)
    await assert_serving_and_no_jobs(api)


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer ",
        f"Basic {ADMIN_KEY}",
        ADMIN_KEY,
        f"Bearer {ADMIN_KEY[:-1]}",
        "Bearer dk_not-a-key",
    ],
)
async def test_invalid_or_malformed_authorization_is_401_and_stores_nothing(api, authorization):
    await expect_problem(api, 401, "POST", "/v1/jobs", authorization=authorization, json=ECHO)
    await assert_serving_and_no_jobs(api)


async def test_key_in_query_string_is_not_accepted_on_plain_routes(api):
    await expect_problem(api, 401, "GET", f"/v1/jobs?token={ADMIN_KEY}", authorization=None)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_health_routes_need_no_key(api, path):
    status, _, raw = await send(api, "GET", path, authorization=None)
    assert status == 200, raw


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"admin": False}, "tenant"),
        ({"tenant": "acme corp"}, "tenant"),
        ({"tenant": "acme", "admin": "yes"}, "admin"),
        ({"tenant": "acme", "admin": 1}, "admin"),
        ({"tenant": "acme", "role": "owner"}, "role"),
    ],
)
async def test_bad_key_request_is_422_and_creates_no_key(api, request_body, field):
    await api.new_tenant("existing")
    before = await key_list(api)
    await expect_invalid(api, field, "POST", "/v1/keys", json=request_body)
    assert await key_list(api) == before


async def test_key_request_that_is_not_json_is_400_and_creates_no_key(api):
    await api.new_tenant("existing")
    before = await key_list(api)
    await expect_problem(
        api,
        400,
        "POST",
        "/v1/keys",
        data=b"tenant=acme",
        headers={"Content-Type": "application/json"},
    )
    assert await key_list(api) == before


@pytest.mark.parametrize("cursor", ["garbage!!", "wrI", "LTE"])
async def test_bad_key_list_cursor_is_422(api, cursor):
    # "wrI" and "LTE" decode to "²" and "-1": text that looks numeric to a lax check.
    await api.new_tenant("existing")
    await expect_invalid(api, "cursor", "GET", f"/v1/keys?cursor={cursor}")
    assert len(await key_list(api)) == 1
