"""Registered endpoints: their own secret and headers, rotation, ed25519, filters, tenancy,
disabling and deletion, against a real app and real loopback receivers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from dispatcher import webhooks
from tests.conftest import Api, wait_for

ENDPOINT_FIELDS = {
    "id", "url", "description", "headers", "event_types", "signature", "rate_limit",
    "max_in_flight", "disabled", "disabled_reason", "disabled_at", "circuit", "circuit_since",
    "created_at", "updated_at",
}  # fmt: skip


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    status, body = await api.call("POST", "/v1/endpoints", json=fields)
    assert status == 201, body
    return body


async def endpoint(api: Api, endpoint_id: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/v1/endpoints/{endpoint_id}")
    assert status == 200, body
    return body


def verifies(secret: str, received: Any) -> bool:
    try:
        Webhook(secret).verify(received.body, received.headers)
    except WebhookVerificationError:
        return False
    return True


async def test_an_endpoint_signs_with_its_own_secret_and_sends_its_headers(api, make_receiver):
    acme, tenant_secret = await api.new_tenant("acme")
    receiver = await make_receiver(200)
    made = await create(
        acme, url=receiver.url, description="orders", headers={"X-Partner-Token": "t0k"}
    )
    assert made["id"].startswith("ep_") and made["secret"].startswith("whsec_")
    assert set(made) == ENDPOINT_FIELDS | {"secret"}
    job = await acme.submit(type="echo", payload={"n": 1}, endpoint_id=made["id"])

    [received] = await receiver.wait_for_requests(1)
    payload = Webhook(made["secret"]).verify(received.body, received.headers)
    assert payload["data"]["id"] == job["id"]
    assert payload["data"]["endpoint_id"] == made["id"]
    assert received.headers["X-Partner-Token"] == "t0k"
    assert not verifies(tenant_secret, received)
    delivery = await acme.settled_delivery(job["id"])
    assert (delivery["status"], delivery["endpoint_id"]) == ("succeeded", made["id"])
    assert delivery["target"] == receiver.url
    shown = await endpoint(acme, made["id"])
    assert set(shown) == ENDPOINT_FIELDS  # the secret is shown only when made
    assert shown["circuit"] == "closed" and shown["disabled"] is False


async def test_during_the_grace_both_secrets_sign_and_after_it_only_the_new(
    make_api, make_receiver
):
    api = await make_api(rotation_grace=1.5)
    receiver = await make_receiver(200)
    made = await create(api, url=receiver.url)
    status, rotated = await api.call("POST", f"/v1/endpoints/{made['id']}/rotate-secret")
    assert status == 200 and set(rotated) == {"secret"}
    grace_ends = time.time() + 1.5
    assert rotated["secret"] != made["secret"]

    await api.submit(type="echo", payload=1, endpoint_id=made["id"])
    [during] = await receiver.wait_for_requests(1)
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verifies(made["secret"], during) and verifies(rotated["secret"], during)

    await wait_for(lambda: time.time() > grace_ends + 0.1, timeout=5)
    await api.submit(type="echo", payload=2, endpoint_id=made["id"])
    after = (await receiver.wait_for_requests(2))[1]
    assert len(after.headers["webhook-signature"].split()) == 1
    assert verifies(rotated["secret"], after) and not verifies(made["secret"], after)


async def test_rotations_in_a_row_sign_with_at_most_ten_secrets(api, make_receiver):
    receiver = await make_receiver(200)
    made = await create(api, url=receiver.url)
    secrets = [made["secret"]]
    for _ in range(11):
        _, rotated = await api.call("POST", f"/v1/endpoints/{made['id']}/rotate-secret")
        secrets.append(rotated["secret"])
    await api.submit(type="echo", payload=1, endpoint_id=made["id"])
    [received] = await receiver.wait_for_requests(1)
    assert len(received.headers["webhook-signature"].split()) == 10
    # Newest first: the ten latest verify, the two oldest no longer do.
    assert [verifies(s, received) for s in secrets] == [False, False] + [True] * 10


async def test_an_ed25519_endpoint_is_verified_with_its_public_key_alone(api, make_receiver):
    receiver = await make_receiver(200)
    made = await create(api, url=receiver.url, signature="ed25519")
    assert "secret" not in made and made["public_key"].startswith("whpk_")
    status, key = await api.call("GET", f"/v1/endpoints/{made['id']}/public-key")
    assert status == 200 and key == {"public_key": made["public_key"]}

    job = await api.submit(type="echo", payload={"x": 1}, endpoint_id=made["id"])
    [received] = await receiver.wait_for_requests(1)
    signature = received.headers["webhook-signature"]
    assert signature.startswith("v1a,") and " " not in signature
    payload = webhooks.verify(made["public_key"], received.headers, received.body)
    assert payload["data"]["id"] == job["id"]

    _, rotated = await api.call("POST", f"/v1/endpoints/{made['id']}/rotate-secret")
    assert set(rotated) == {"public_key"} and rotated["public_key"] != made["public_key"]
    await api.submit(type="echo", payload=2, endpoint_id=made["id"])
    second = (await receiver.wait_for_requests(2))[1]
    for public_key in (made["public_key"], rotated["public_key"]):
        webhooks.verify(public_key, second.headers, second.body)


async def test_an_hmac_endpoint_has_no_public_key(api, make_receiver):
    made = await create(api, url=(await make_receiver()).url)
    status, problem = await api.call("GET", f"/v1/endpoints/{made['id']}/public-key")
    assert status == 409 and "HMAC" in problem["detail"]


async def test_a_job_whose_event_type_is_filtered_out_gets_no_webhook(api, make_receiver):
    receiver = await make_receiver(200)
    made = await create(api, url=receiver.url, event_types=["job.failed"])
    skipped = await api.submit(
        type="echo", payload=1, endpoint_id=made["id"], notify={"sms": "+15550001111"}
    )
    failed = await api.submit(type="fail", payload={"message": "no"}, endpoint_id=made["id"])

    [received] = await receiver.wait_for_requests(1)
    assert (
        Webhook(made["secret"]).verify(received.body, received.headers)["data"]["id"]
        == (failed["id"])
    )
    done = await api.job(skipped["id"], wait=10)
    assert done["status"] == "succeeded"
    # The webhook is skipped; the job's other channels still go.
    assert [d["channel"] for d in done["deliveries"]] == ["sms"]
    assert len(receiver.requests) == 1


async def test_another_tenants_endpoint_is_refused_and_reveals_nothing(api, make_receiver):
    acme, _ = await api.new_tenant("acme")
    other, _ = await api.new_tenant("other")
    made = await create(acme, url=(await make_receiver()).url)

    status, theirs = await other.call(
        "POST", "/v1/jobs", json={"type": "echo", "payload": 1, "endpoint_id": made["id"]}
    )
    _, unknown = await other.call(
        "POST", "/v1/jobs", json={"type": "echo", "payload": 1, "endpoint_id": "ep_" + "0" * 26}
    )
    assert status == 422
    # Told apart from an id that never existed only by the id itself.
    assert theirs["detail"].replace(made["id"], "ID") == unknown["detail"].replace(
        "ep_" + "0" * 26, "ID"
    )
    for method, path in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("GET", "/public-key"),
    ):
        status, _ = await other.call(method, f"/v1/endpoints/{made['id']}{path}", json={})
        assert status == 404, (method, path)
    status, listed = await other.call("GET", "/v1/endpoints")
    assert listed["items"] == []
    _, mine = await acme.call("GET", "/v1/endpoints")
    assert [e["id"] for e in mine["items"]] == [made["id"]]


async def test_endpoints_list_newest_first_with_a_cursor(api, make_receiver):
    url = (await make_receiver()).url
    made = [(await create(api, url=url, description=str(n)))["id"] for n in range(3)]
    status, first = await api.call("GET", "/v1/endpoints?limit=2")
    assert status == 200
    assert [e["id"] for e in first["items"]] == made[:0:-1]
    status, rest = await api.call("GET", f"/v1/endpoints?limit=2&cursor={first['next_cursor']}")
    assert [e["id"] for e in rest["items"]] == made[:1] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"headers": {"Content-Type": "text/plain"}},
        {"headers": {"webhook-signature": "v1,forged"}},
        {"headers": {"User-Agent": "me"}},
        {"headers": {"X-Bad": "line\r\nbreak"}},
        {"headers": {"bad name": "x"}},
        {"event_types": ["job.started"]},
        {"event_types": []},
        {"signature": "rsa"},
        {"rate_limit": 0},
        {"max_in_flight": -1},
        {"secret": "whsec_mine"},
        {"url": "ftp://example.com/x"},
    ],
)
async def test_an_endpoint_that_breaks_a_rule_is_refused_and_nothing_is_made(
    api, make_receiver, fields
):
    body = {"url": (await make_receiver()).url, **fields}
    status, problem = await api.call("POST", "/v1/endpoints", json=body)
    assert status == 422, problem
    assert problem["errors"]
    _, listed = await api.call("GET", "/v1/endpoints")
    assert listed["items"] == []


async def test_a_refused_literal_address_is_422(make_api):
    api = await make_api(allow_networks="")
    for url in ("http://127.0.0.1:9/h", "http://[::1]:9/h", "http://0x7f000001/h"):
        status, problem = await api.call("POST", "/v1/endpoints", json={"url": url})
        assert status == 422, (url, problem)
    made = await api.call("POST", "/v1/endpoints", json={"url": "https://example.com/hook"})
    assert made[0] == 201
    status, _ = await api.call(
        "PATCH", f"/v1/endpoints/{made[1]['id']}", json={"url": "http://127.1:9/h"}
    )
    assert status == 422
    assert (await endpoint(api, made[1]["id"]))["url"] == "https://example.com/hook"


async def test_a_patch_changes_only_what_it_names(api, make_receiver):
    first, second = await make_receiver(200), await make_receiver(200)
    made = await create(api, url=first.url, description="a", rate_limit=5)
    status, patched = await api.call(
        "PATCH", f"/v1/endpoints/{made['id']}", json={"url": second.url, "rate_limit": None}
    )
    assert status == 200, patched
    assert (patched["url"], patched["rate_limit"], patched["description"]) == (
        second.url,
        None,
        "a",
    )
    status, _ = await api.call(
        "PATCH", f"/v1/endpoints/{made['id']}", json={"signature": "ed25519"}
    )
    assert status == 422
    await api.submit(type="echo", payload=1, endpoint_id=made["id"])
    await second.wait_for_requests(1)
    assert first.requests == []


async def test_410_disables_the_endpoint_until_it_is_enabled_and_replayed(api, make_receiver):
    receiver = await make_receiver(410, 200)
    made = await create(api, url=receiver.url)
    job = await api.submit(type="echo", payload=1, endpoint_id=made["id"])
    gone = await api.settled_delivery(job["id"])
    assert (gone["status"], gone["last_status_code"]) == ("failed", 410)
    disabled = await endpoint(api, made["id"])
    assert disabled["disabled"] is True and "410" in disabled["disabled_reason"]
    assert disabled["disabled_at"] is not None

    later = await api.submit(type="echo", payload=2, endpoint_id=made["id"])
    stopped = await api.settled_delivery(later["id"])
    assert stopped["status"] == "failed"
    assert made["id"] in stopped["last_error"] and "disabled" in stopped["last_error"]
    assert len(receiver.requests) == 1
    status, problem = await api.call("POST", f"/v1/deliveries/{gone['id']}/replay")
    assert status == 409 and "disabled" in problem["detail"]

    status, enabled = await api.call(
        "PATCH", f"/v1/endpoints/{made['id']}", json={"disabled": False}
    )
    assert status == 200 and enabled["disabled"] is False and enabled["disabled_reason"] is None
    status, _ = await api.call("POST", f"/v1/deliveries/{gone['id']}/replay")
    assert status == 202

    async def succeeded() -> bool:
        return (await api.delivery(gone["id"]))["status"] == "succeeded"

    await wait_for(succeeded)
    assert len(receiver.requests) == 2


async def test_failing_past_disable_after_disables_the_endpoint(make_api, make_receiver):
    api = await make_api(disable_after=0.5, retry_schedule="0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2")
    receiver = await make_receiver(500)
    made = await create(api, url=receiver.url)
    job = await api.submit(type="echo", payload=1, endpoint_id=made["id"])
    failed = await api.settled_delivery(job["id"])
    assert failed["status"] == "failed"
    shown = await endpoint(api, made["id"])
    assert shown["disabled"] is True and "no attempt succeeded" in shown["disabled_reason"]
    # It stopped as the endpoint was disabled, not at the end of its schedule.
    assert failed["attempt_count"] < 9


async def test_deleting_an_endpoint_fails_what_waits_for_it(make_api, make_receiver):
    api = await make_api(retry_schedule="60")
    receiver = await make_receiver(500)
    made = await create(api, url=receiver.url)
    job = await api.submit(type="echo", payload=1, endpoint_id=made["id"])
    await receiver.wait_for_requests(1)

    async def waiting() -> dict[str, Any] | None:
        found = await api.delivery((await api.job(job["id"]))["deliveries"][0]["id"])
        return found if found["attempt_count"] == 1 else None

    pending = await wait_for(waiting)
    assert pending["status"] == "pending"
    status, _ = await api.call("DELETE", f"/v1/endpoints/{made['id']}")
    assert status == 204
    ended = await api.delivery(pending["id"])
    assert ended["status"] == "failed" and "was deleted" in ended["last_error"]
    status, _ = await api.call("GET", f"/v1/endpoints/{made['id']}")
    assert status == 404
    status, problem = await api.call(
        "POST", "/v1/jobs", json={"type": "echo", "payload": 1, "endpoint_id": made["id"]}
    )
    assert status == 422 and "no endpoint" in problem["detail"]


async def test_a_tenant_may_have_only_so_many_endpoints(make_api, make_receiver):
    api = await make_api(max_endpoints_per_tenant=2)
    acme, _ = await api.new_tenant("acme")
    url = (await make_receiver()).url
    first = await create(acme, url=url)
    await create(acme, url=url)
    status, problem = await acme.call("POST", "/v1/endpoints", json={"url": url})
    assert status == 409 and "delete one first" in problem["detail"]
    await create(api, url=url)  # another tenant is not held to acme's count
    assert (await acme.call("DELETE", f"/v1/endpoints/{first['id']}"))[0] == 204
    await create(acme, url=url)


async def test_an_admin_reads_another_tenants_endpoint_but_cannot_change_it(api, make_receiver):
    acme, _ = await api.new_tenant("acme")
    made = await create(acme, url=(await make_receiver()).url)
    assert (await endpoint(api, made["id"]))["id"] == made["id"]
    _, listed = await api.call("GET", "/v1/endpoints")
    assert made["id"] in [e["id"] for e in listed["items"]]
    for method, path, body in (
        ("PATCH", "", {"url": "https://example.com/elsewhere"}),
        ("DELETE", "", None),
        ("POST", "/rotate-secret", None),
    ):
        status, _ = await api.call(method, f"/v1/endpoints/{made['id']}{path}", json=body)
        assert status == 404, (method, path)
    assert (await endpoint(acme, made["id"]))["url"] == made["url"]


@pytest.mark.parametrize(
    "fields",
    [
        {"rate_limit": True},
        {"rate_limit": "5"},
        {"max_in_flight": 2.0},
        {"description": "nul\x00inside"},
        {"url": "https://exa mple.com/"},
        {"url": "http://-/"},
        {"url": "http://a..b/"},
        {"url": "http://user:pw@127.0.0.1:9/h", "headers": {"Authorization": "Bearer x"}},
    ],
)
async def test_loose_values_are_refused_too(api, fields):
    body = {"url": "http://127.0.0.1:9/h", **fields}
    status, problem = await api.call("POST", "/v1/endpoints", json=body)
    assert status == 422, (fields, problem)
