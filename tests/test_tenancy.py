"""Tenants never see each other's objects; only admin keys manage keys."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.conftest import Api, Receiver, wait_for

PROBLEM = "application/problem+json"
ECHO = {"type": "echo", "payload": {"order": 7}}


@dataclass
class Tenants:
    admin: Api
    acme: Api
    acme_secret: str
    globex: Api
    globex_secret: str


@dataclass
class Delivered:
    """An acme job whose webhook has been delivered, and what the receiver got."""

    job: dict[str, Any]
    delivery: dict[str, Any]
    receiver: Receiver


@pytest.fixture
async def tenants(api: Api) -> Tenants:
    acme, acme_secret = await api.new_tenant("acme")
    globex, globex_secret = await api.new_tenant("globex")
    return Tenants(api, acme, acme_secret, globex, globex_secret)


@pytest.fixture
async def delivered(tenants: Tenants, make_receiver: Any) -> Delivered:
    receiver = await make_receiver(200)
    job = await tenants.acme.submit(**ECHO, callback_url=receiver.url)
    delivery = await tenants.acme.settled_delivery(job["id"])
    assert delivery["status"] == "succeeded"
    return Delivered(job, delivery, receiver)


async def expect_problem(api: Api, status: int, method: str, path: str, **kwargs: Any) -> dict:
    async with api.client.request(method, path, headers=api.headers(), **kwargs) as response:
        raw = await response.read()
        assert response.status == status, raw
        assert response.content_type == PROBLEM
    problem = json.loads(raw)
    assert problem["status"] == status
    assert problem["title"] and problem["detail"] and problem["type"]
    return problem


async def items(api: Api, path: str) -> list[dict]:
    status, body = await api.call("GET", path)
    assert status == 200, body
    return body["items"]


async def key_summaries(admin: Api) -> list[tuple[str, str, bool]]:
    """The stored keys, without last_used_at (which using a key changes)."""
    return [(k["prefix"], k["tenant"], k["admin"]) for k in await items(admin, "/v1/keys")]


async def ok(api: Api, method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
    status, body = await api.call(method, path, **kwargs)
    assert status == expected, body
    return body


# Creating tenants


async def test_admin_creates_a_tenant_key_with_the_tenants_signing_secret(api):
    body = await ok(api, "POST", "/v1/keys", 201, json={"tenant": "acme", "admin": False})
    assert body["key"].startswith("dk_")
    assert body["tenant"] == "acme"
    assert body["admin"] is False
    assert body["signing_secret"].startswith("whsec_")
    assert set(body) == {"key", "tenant", "admin", "signing_secret"}


async def test_new_key_works_and_reads_its_tenants_signing_secret(api):
    acme, secret = await api.new_tenant("acme")
    assert (await ok(acme, "GET", "/v1/signing-secret"))["secret"] == secret


async def test_each_tenant_has_its_own_signing_secret(tenants):
    assert tenants.acme_secret != tenants.globex_secret
    admin_secret = (await ok(tenants.admin, "GET", "/v1/signing-secret"))["secret"]
    assert admin_secret not in (tenants.acme_secret, tenants.globex_secret)


# Another tenant's objects are 404


async def test_other_tenant_cannot_read_a_job(tenants, delivered):
    await expect_problem(tenants.globex, 404, "GET", f"/v1/jobs/{delivered.job['id']}")


async def test_other_tenant_cannot_long_poll_a_job(tenants, delivered):
    await expect_problem(tenants.globex, 404, "GET", f"/v1/jobs/{delivered.job['id']}?wait=5")


async def test_other_tenant_job_list_is_empty(tenants, delivered):
    assert await items(tenants.globex, "/v1/jobs") == []
    assert [job["id"] for job in await items(tenants.acme, "/v1/jobs")] == [delivered.job["id"]]


async def test_other_tenant_cannot_cancel_a_queued_job(make_api):
    admin = await make_api(workers=1, shutdown_grace=0)
    acme, _ = await admin.new_tenant("acme")
    globex, _ = await admin.new_tenant("globex")
    blocker = await acme.submit(type="sleep", payload={"seconds": 5})

    async def started() -> bool:
        return (await acme.job(blocker["id"]))["status"] == "running"

    await wait_for(started)
    queued = await acme.submit(**ECHO)
    await expect_problem(globex, 404, "POST", f"/v1/jobs/{queued['id']}/cancel")
    assert (await acme.job(queued["id"]))["status"] == "queued"
    # The owner can: so the 404 above was about the tenant, not the job's state.
    assert (await ok(acme, "POST", f"/v1/jobs/{queued['id']}/cancel"))["status"] == "cancelled"


async def test_other_tenant_cannot_cancel_a_finished_job(tenants, delivered):
    await expect_problem(tenants.globex, 404, "POST", f"/v1/jobs/{delivered.job['id']}/cancel")


async def test_other_tenant_delivery_list_excludes_it(tenants, delivered):
    assert await items(tenants.globex, "/v1/deliveries") == []
    job_filter = f"/v1/deliveries?job_id={delivered.job['id']}"
    assert await items(tenants.globex, job_filter) == []
    assert [d["id"] for d in await items(tenants.acme, job_filter)] == [delivered.delivery["id"]]


async def test_other_tenant_cannot_read_a_delivery(tenants, delivered):
    await expect_problem(tenants.globex, 404, "GET", f"/v1/deliveries/{delivered.delivery['id']}")


async def test_other_tenant_cannot_replay_a_delivery(tenants, delivered):
    delivery_id = delivered.delivery["id"]
    await expect_problem(tenants.globex, 404, "POST", f"/v1/deliveries/{delivery_id}/replay")
    after = await tenants.acme.delivery(delivery_id)
    assert after["status"] == "succeeded"
    assert len(after["attempts"]) == 1


async def test_other_tenant_bulk_replay_touches_nothing(tenants, delivered):
    replay = {"status": "succeeded"}
    assert await ok(tenants.globex, "POST", "/v1/deliveries/replay", 202, json=replay) == {
        "replayed": 0
    }
    after = await tenants.acme.delivery(delivered.delivery["id"])
    assert after["status"] == "succeeded"
    assert len(after["attempts"]) == 1


async def test_other_tenant_bulk_replay_dry_run_matches_nothing(tenants, delivered):
    replay = {"status": "succeeded", "dry_run": True}
    assert await ok(tenants.globex, "POST", "/v1/deliveries/replay", json=replay) == {"matched": 0}
    assert await ok(tenants.acme, "POST", "/v1/deliveries/replay", json=replay) == {"matched": 1}


async def test_owner_bulk_replay_counts_only_its_own_deliveries(tenants, delivered, make_receiver):
    receiver = await make_receiver(200)
    other = await tenants.globex.submit(**ECHO, callback_url=receiver.url)
    await tenants.globex.settled_delivery(other["id"])
    replay = {"status": "succeeded", "dry_run": True}
    assert await ok(tenants.acme, "POST", "/v1/deliveries/replay", json=replay) == {"matched": 1}
    assert await ok(tenants.admin, "POST", "/v1/deliveries/replay", json=replay) == {"matched": 2}


# Admin keys see every tenant


async def test_admin_key_reads_any_tenants_job(tenants, delivered):
    job = await tenants.admin.job(delivered.job["id"])
    assert job["id"] == delivered.job["id"]
    assert job["result"] == ECHO["payload"]


async def test_admin_key_reads_any_tenants_delivery(tenants, delivered):
    delivery = await tenants.admin.delivery(delivered.delivery["id"])
    assert delivery["job_id"] == delivered.job["id"]
    assert len(delivery["attempts"]) == 1


async def test_admin_key_lists_every_tenants_jobs(tenants, delivered):
    other = await tenants.globex.submit(**ECHO)
    listed = {job["id"] for job in await items(tenants.admin, "/v1/jobs")}
    assert listed == {delivered.job["id"], other["id"]}


async def test_admin_key_replays_any_tenants_delivery(tenants, delivered):
    delivery_id = delivered.delivery["id"]
    await ok(tenants.admin, "POST", f"/v1/deliveries/{delivery_id}/replay", 202)
    requests = await delivered.receiver.wait_for_requests(2)
    assert requests[1].headers["webhook-id"] == delivery_id
    # The replayed webhook is still signed with the owning tenant's secret.
    Webhook(tenants.acme_secret).verify(requests[1].body, requests[1].headers)


async def test_jobs_an_admin_key_creates_belong_to_the_admin_tenant(tenants):
    created = await tenants.admin.submit(**ECHO)
    await expect_problem(tenants.acme, 404, "GET", f"/v1/jobs/{created['id']}")
    assert await items(tenants.acme, "/v1/jobs") == []


# Keys are admin-only


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/keys", {"tenant": "acme", "admin": True}),
        ("POST", "/v1/keys", {"tenant": "globex"}),
        ("GET", "/v1/keys", None),
    ],
)
async def test_tenant_key_cannot_manage_keys(tenants, method, path, body):
    before = await key_summaries(tenants.admin)
    await expect_problem(tenants.acme, 403, method, path, json=body)
    assert await key_summaries(tenants.admin) == before


async def test_tenant_key_cannot_revoke_keys(tenants):
    [globex_key] = [k for k in await items(tenants.admin, "/v1/keys") if k["tenant"] == "globex"]
    await expect_problem(tenants.acme, 403, "DELETE", f"/v1/keys/{globex_key['prefix']}")
    await ok(tenants.globex, "GET", "/v1/jobs")


async def test_key_list_shows_prefixes_never_whole_keys(tenants):
    status, body = await tenants.admin.call("GET", "/v1/keys")
    assert status == 200, body
    assert {k["tenant"] for k in body["items"]} == {"acme", "globex"}
    for item in body["items"]:
        assert set(item) == {"prefix", "tenant", "admin", "created_at", "last_used_at"}
        assert item["admin"] is False
        assert item["created_at"].endswith("Z")
    text = json.dumps(body)
    for key in (tenants.acme.key, tenants.globex.key):
        assert key not in text
        assert any(key.startswith(item["prefix"]) for item in body["items"])
    prefixes = [item["prefix"] for item in body["items"]]
    assert len(set(prefixes)) == len(prefixes)


async def test_key_list_sets_last_used_at_once_the_key_is_used(tenants):
    def acme_entry(keys: list[dict]) -> dict:
        [entry] = [k for k in keys if tenants.acme.key.startswith(k["prefix"])]
        return entry

    assert acme_entry(await items(tenants.admin, "/v1/keys"))["last_used_at"] is None
    await ok(tenants.acme, "GET", "/v1/jobs")
    used = acme_entry(await items(tenants.admin, "/v1/keys"))["last_used_at"]
    assert isinstance(used, str) and used.endswith("Z")
    assert used >= acme_entry(await items(tenants.admin, "/v1/keys"))["created_at"]


async def test_revoked_key_is_refused(tenants):
    [acme_key] = [k for k in await items(tenants.admin, "/v1/keys") if k["tenant"] == "acme"]
    await ok(tenants.acme, "GET", "/v1/jobs")
    status, _ = await tenants.admin.call("DELETE", f"/v1/keys/{acme_key['prefix']}")
    assert status == 204
    await expect_problem(tenants.acme, 401, "GET", "/v1/jobs")
    assert acme_key["prefix"] not in [k["prefix"] for k in await items(tenants.admin, "/v1/keys")]


@pytest.mark.parametrize("prefix", ["dk_nonexist0", "nonsense"])
async def test_revoking_an_unknown_prefix_is_404(tenants, prefix):
    before = await key_summaries(tenants.admin)
    await expect_problem(tenants.admin, 404, "DELETE", f"/v1/keys/{prefix}")
    assert await key_summaries(tenants.admin) == before


# Signing secrets


async def test_webhook_verifies_with_its_tenants_secret(tenants, delivered):
    [request] = delivered.receiver.requests
    event = Webhook(tenants.acme_secret).verify(request.body, request.headers)
    assert event["data"]["id"] == delivered.job["id"]


async def test_webhook_does_not_verify_with_another_tenants_secret(tenants, delivered):
    [request] = delivered.receiver.requests
    with pytest.raises(WebhookVerificationError):
        Webhook(tenants.globex_secret).verify(request.body, request.headers)


async def test_rotation_answers_a_new_secret_that_becomes_current(tenants):
    rotated = await ok(tenants.acme, "POST", "/v1/signing-secret/rotate")
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != tenants.acme_secret
    assert (await ok(tenants.acme, "GET", "/v1/signing-secret"))["secret"] == rotated["secret"]


async def test_rotation_leaves_other_tenants_secrets_alone(tenants):
    await ok(tenants.acme, "POST", "/v1/signing-secret/rotate")
    assert (await ok(tenants.globex, "GET", "/v1/signing-secret"))["secret"] == (
        tenants.globex_secret
    )


async def test_webhook_after_rotation_carries_two_signatures(tenants, make_receiver):
    new_secret = (await ok(tenants.acme, "POST", "/v1/signing-secret/rotate"))["secret"]
    receiver = await make_receiver(200)
    await tenants.acme.submit(**ECHO, callback_url=receiver.url)
    [request] = await receiver.wait_for_requests(1)
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    Webhook(tenants.acme_secret).verify(request.body, request.headers)
    Webhook(new_secret).verify(request.body, request.headers)


# A second key for the same tenant


async def test_second_key_for_a_tenant_returns_its_current_signing_secret(tenants):
    rotated = (await ok(tenants.acme, "POST", "/v1/signing-secret/rotate"))["secret"]
    second = await ok(tenants.admin, "POST", "/v1/keys", 201, json={"tenant": "acme"})
    assert second["tenant"] == "acme"
    assert second["key"] != tenants.acme.key
    assert second["signing_secret"] == rotated


async def test_second_key_for_a_tenant_sees_its_jobs(tenants, delivered):
    second = await ok(tenants.admin, "POST", "/v1/keys", 201, json={"tenant": "acme"})
    other_key = tenants.acme.as_key(second["key"])
    assert [job["id"] for job in await items(other_key, "/v1/jobs")] == [delivered.job["id"]]
    assert (await other_key.delivery(delivered.delivery["id"]))["status"] == "succeeded"


async def test_jobs_from_either_key_of_a_tenant_are_shared(tenants):
    second = await ok(tenants.admin, "POST", "/v1/keys", 201, json={"tenant": "acme"})
    created = await tenants.acme.as_key(second["key"]).submit(**ECHO)
    assert (await tenants.acme.job(created["id"]))["id"] == created["id"]
