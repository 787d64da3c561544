"""Webhook delivery: retries on a schedule, what stops them, replay, isolation of slow receivers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

from tests.conftest import wait_for


async def test_500_500_200_succeeds_with_three_attempts_and_one_webhook_id(api, make_receiver):
    receiver = await make_receiver(500, 500, 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)

    delivery = await api.settled_delivery(job["id"])

    assert delivery["status"] == "succeeded"
    assert delivery["attempt_count"] == 3
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3]
    assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery["id"]}
    assert len({r.body for r in receiver.requests}) == 1, "every attempt sends the same bytes"


async def test_every_attempt_is_signed_with_its_own_timestamp(make_api, make_receiver):
    api = await make_api(retry_schedule="1.1")  # the retry lands in a later second
    receiver = await make_receiver(500, 200)
    _, body = await api.call("GET", "/v1/signing-secret")
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    await api.settled_delivery(job["id"])
    first, second = receiver.requests
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    for request in receiver.requests:
        Webhook(body["secret"]).verify(request.body, request.headers)


async def test_retry_after_on_503_is_waited(api, make_receiver):
    receiver = await make_receiver((503, {"Retry-After": "3"}), 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)

    first = (await receiver.wait_for_requests(1))[0]
    started = time.monotonic()
    await receiver.wait_for_requests(2, timeout=15)
    waited = time.monotonic() - started

    assert waited >= 2.9, f"retried after {waited:.2f}s although the receiver asked for 3s"
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded"
    assert first.headers["webhook-id"] == delivery["id"]


async def test_retry_after_on_429_sets_next_attempt_at(api, make_receiver):
    receiver = await make_receiver((429, {"Retry-After": "120"}), 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    await receiver.wait_for_requests(1)
    done = await api.job(job["id"], wait=5)

    async def attempted() -> dict | None:
        delivery = await api.delivery(done["deliveries"][0]["id"])
        return delivery if delivery["attempt_count"] == 1 else None

    delivery = await wait_for(attempted)
    assert delivery["status"] == "pending"
    assert delivery["last_status_code"] == 429
    next_at = datetime.fromisoformat(delivery["next_attempt_at"])
    assert next_at - datetime.now(UTC) > timedelta(seconds=100)


async def test_410_gone_stops_retrying(api, make_receiver):
    receiver = await make_receiver(410, 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)

    delivery = await api.settled_delivery(job["id"])

    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 1
    assert delivery["last_status_code"] == 410
    assert len(receiver.requests) == 1


async def test_redirect_is_not_followed_and_counts_as_failure(api, make_receiver):
    target = await make_receiver(200)
    receiver = await make_receiver((302, {"Location": target.url}))
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)

    delivery = await api.settled_delivery(job["id"])

    assert delivery["status"] == "failed"
    assert [a["status_code"] for a in delivery["attempts"]] == [302, 302, 302]
    assert target.requests == []


async def test_exhausted_delivery_fails_then_replay_succeeds_continuing_numbers(api, make_receiver):
    receiver = await make_receiver(500, 500, 500, 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)

    failed = await api.settled_delivery(job["id"])
    assert failed["status"] == "failed"
    assert failed["attempt_count"] == 3  # the first try and two scheduled retries

    status, replayed = await api.call("POST", f"/v1/deliveries/{failed['id']}/replay")
    assert status == 202
    assert replayed["status"] == "pending"
    assert replayed["id"] == failed["id"]

    async def succeeded() -> dict | None:
        delivery = await api.delivery(failed["id"])
        return delivery if delivery["status"] == "succeeded" else None

    delivery = await wait_for(succeeded)
    assert [a["number"] for a in delivery["attempts"]] == [1, 2, 3, 4]
    manual = delivery["attempts"][3]
    assert manual["trigger"] == "manual"
    # The start of the key, but at most a third of DISPATCHER_ADMIN_KEY.
    assert api.key.startswith(manual["by"])
    assert 0 < len(manual["by"]) <= len(api.key) // 3
    assert [a["trigger"] for a in delivery["attempts"][:3]] == ["scheduled"] * 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {failed["id"]}
    assert len({r.body for r in receiver.requests}) == 1


async def test_manual_attempt_names_the_replaying_keys_prefix(api, make_receiver):
    receiver = await make_receiver(410, 200)
    acme, _ = await api.new_tenant("acme")
    job = await acme.submit(type="echo", payload=1, callback_url=receiver.url)
    failed = await acme.settled_delivery(job["id"])

    await acme.call("POST", f"/v1/deliveries/{failed['id']}/replay")

    async def replayed() -> dict | None:
        delivery = await acme.delivery(failed["id"])
        return delivery if delivery["status"] == "succeeded" else None

    manual = (await wait_for(replayed))["attempts"][-1]
    assert manual["by"] == acme.key[:12]
    _, keys = await api.call("GET", "/v1/keys")
    assert manual["by"] in {k["prefix"] for k in keys["items"]}


async def test_replay_gets_the_whole_schedule_again(api, make_receiver):
    receiver = await make_receiver(500, 500, 500, 500, 500, 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    failed = await api.settled_delivery(job["id"])
    assert failed["attempt_count"] == 3

    await api.call("POST", f"/v1/deliveries/{failed['id']}/replay")

    async def succeeded() -> dict | None:
        delivery = await api.delivery(failed["id"])
        return delivery if delivery["status"] == "succeeded" else None

    delivery = await wait_for(succeeded)
    assert delivery["attempt_count"] == 6
    assert [a["trigger"] for a in delivery["attempts"][3:]] == ["manual", "scheduled", "scheduled"]


async def test_replay_of_a_pending_delivery_tries_it_now(api, make_receiver):
    # The receiver asked for a minute; its owner fixed it and does not wait.
    receiver = await make_receiver((503, {"Retry-After": "60"}), 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    await receiver.wait_for_requests(1)
    done = await api.job(job["id"], wait=5)
    delivery_id = done["deliveries"][0]["id"]
    await wait_for(lambda: _attempts(api, delivery_id, 1))
    status, body = await api.call("POST", f"/v1/deliveries/{delivery_id}/replay")
    assert status == 202, body
    assert body["status"] == "pending"
    await receiver.wait_for_requests(2, timeout=5)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded"
    assert [a["trigger"] for a in delivery["attempts"]] == ["scheduled", "manual"]
    assert delivery["attempts"][1]["by"]
    assert [r.headers["webhook-id"] for r in receiver.requests] == [delivery_id] * 2


async def _attempts(api, delivery_id: str, count: int) -> bool:
    return (await api.delivery(delivery_id))["attempt_count"] >= count


async def test_bulk_replay_dry_run_counts_and_changes_nothing(api, make_receiver):
    failing = await make_receiver(500)
    jobs = [await api.submit(type="echo", payload=i, callback_url=failing.url) for i in range(3)]
    for job in jobs:
        assert (await api.settled_delivery(job["id"]))["status"] == "failed"
    requests_before = len(failing.requests)

    status, body = await api.call(
        "POST", "/v1/deliveries/replay", json={"status": "failed", "dry_run": True}
    )

    assert (status, body) == (200, {"matched": 3})
    _, listed = await api.call("GET", "/v1/deliveries?status=failed")
    assert len(listed["items"]) == 3
    assert len(failing.requests) == requests_before


async def test_bulk_replay_resends_failed_deliveries_in_the_window(api, make_receiver):
    receiver = await make_receiver(500, 500, 500, 200)
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    failed = await api.settled_delivery(job["id"])
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    future = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()

    _, none = await api.call(
        "POST", "/v1/deliveries/replay", json={"status": "failed", "since": future}
    )
    status, body = await api.call(
        "POST", "/v1/deliveries/replay", json={"status": "failed", "since": since}
    )

    assert none == {"replayed": 0}
    assert (status, body) == (202, {"replayed": 1})

    async def succeeded() -> dict | None:
        delivery = await api.delivery(failed["id"])
        return delivery if delivery["status"] == "succeeded" else None

    delivery = await wait_for(succeeded)
    assert delivery["attempts"][-1]["trigger"] == "manual"


async def test_response_body_is_cut_at_4096_bytes(api, make_receiver):
    receiver = await make_receiver((200, {}, "é" * 5000))
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    body = delivery["attempts"][0]["response_body"]
    assert len(body.encode()) <= 4096 + 3  # a cut mid-character becomes one U+FFFD
    assert body.startswith("é" * 2000)


async def test_a_nul_in_the_answer_is_recorded_as_a_replacement_character(api, make_receiver):
    # PostgreSQL's text cannot hold NUL: the attempt must still be recorded, once.
    receiver = await make_receiver((200, {}, "thanks\x00!"))
    job = await api.submit(type="echo", payload=1, callback_url=receiver.url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded", delivery
    assert delivery["attempts"][0]["response_body"] == "thanks\ufffd!"
    assert len(receiver.requests) == 1


async def test_hanging_receiver_does_not_delay_others(make_api, make_receiver):
    api = await make_api(delivery_timeout=3)
    slow = await make_receiver(200)
    slow.hang = asyncio.Event()
    fast = await make_receiver(200)
    try:
        for i in range(5):
            await api.submit(type="echo", payload=i, callback_url=slow.url)
        await slow.wait_for_requests(5)
        started = time.monotonic()
        job = await api.submit(type="echo", payload="fast", callback_url=fast.url)
        await fast.wait_for_requests(1, timeout=2)
        assert time.monotonic() - started < 2
        assert (await api.settled_delivery(job["id"]))["status"] == "succeeded"
    finally:
        slow.hang.set()


async def test_a_hanging_receivers_backlog_takes_only_its_share_of_slots(make_api, make_receiver):
    api = await make_api(delivery_concurrency=6, delivery_per_host=2, delivery_timeout=30)
    slow = await make_receiver(200)
    slow.hang = asyncio.Event()
    fast = await make_receiver(200)
    try:
        for i in range(10):
            await api.submit(type="echo", payload=i, callback_url=slow.url)
        await slow.wait_for_requests(2)
        job = await api.submit(type="echo", payload="fast", callback_url=fast.url)
        await fast.wait_for_requests(1, timeout=3)
        delivery = await api.settled_delivery(job["id"], timeout=3)
        assert delivery["status"] == "succeeded"
        assert len(slow.requests) == 2, "more than the host's share was sent at once"
    finally:
        slow.hang.set()
    await slow.wait_for_requests(10, timeout=10)


async def test_attempt_timeout_is_recorded_as_failure(make_api, make_receiver):
    api = await make_api(delivery_timeout=0.5, retry_schedule="")
    slow = await make_receiver(200)
    slow.hang = asyncio.Event()
    try:
        job = await api.submit(type="echo", payload=1, callback_url=slow.url)
        delivery = await api.settled_delivery(job["id"])
    finally:
        slow.hang.set()
    assert delivery["status"] == "failed"
    [attempt] = delivery["attempts"]
    assert attempt["status_code"] is None
    assert "timed out" in attempt["error"]


async def test_refused_connection_is_recorded_and_retried(api, unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}/hook"
    job = await api.submit(type="echo", payload=1, callback_url=url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 3
    assert all(a["status_code"] is None and a["error"] for a in delivery["attempts"])


async def test_loopback_is_refused_at_connect_time_without_allow_networks(make_api, make_receiver):
    api = await make_api(allow_networks="", retry_schedule="")
    receiver = await make_receiver(200)
    # A hostname is not a literal address: it is accepted, then refused after DNS.
    url = receiver.url.replace("127.0.0.1", "localhost")
    job = await api.submit(type="echo", payload=1, callback_url=url)
    delivery = await api.settled_delivery(job["id"])
    assert delivery["status"] == "failed"
    error = delivery["attempts"][0]["error"]
    assert "blocked address" in error
    assert "127.0.0.1" in error or "::1" in error
    assert receiver.requests == []


async def test_deliveries_list_filters_by_status_and_job(api, make_receiver):
    ok = await make_receiver(200)
    bad = await make_receiver(410)
    good_job = await api.submit(type="echo", payload=1, callback_url=ok.url)
    bad_job = await api.submit(type="echo", payload=2, callback_url=bad.url)
    good = await api.settled_delivery(good_job["id"])
    gone = await api.settled_delivery(bad_job["id"])

    _, failed = await api.call("GET", "/v1/deliveries?status=failed")
    _, by_job = await api.call("GET", f"/v1/deliveries?job_id={good_job['id']}")

    assert [d["id"] for d in failed["items"]] == [gone["id"]]
    assert [d["id"] for d in by_job["items"]] == [good["id"]]
    assert "attempts" not in failed["items"][0]
