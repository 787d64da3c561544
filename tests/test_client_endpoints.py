"""The Python client's endpoint methods against a real app on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from dispatcher import webhooks
from dispatcher.client import ApiError, Client, ClientError
from tests.conftest import ADMIN_KEY
from tests.support.secrets import remember
from tests.test_client import base_url

MISSING = "ep_" + "0" * 26
ENDPOINT_FIELDS = {
    "id", "url", "description", "headers", "event_types", "signature", "rate_limit",
    "max_in_flight", "disabled", "disabled_reason", "disabled_at", "circuit", "circuit_since",
    "created_at", "updated_at",
}  # fmt: skip


@pytest.fixture
async def client(api: Any) -> AsyncIterator[Client]:
    async with Client(base_url(api), ADMIN_KEY) as client:
        yield client


async def create(client: Client, url: str = "http://127.0.0.1:9/hook", **fields: Any) -> Any:
    made = await client.create_endpoint(url, **fields)
    remember(made)
    return made


async def test_create_answers_the_endpoint_and_its_secret(client):
    made = await create(client)

    assert set(made) == ENDPOINT_FIELDS | {"secret"}
    assert made["id"].startswith("ep_") and made["secret"].startswith("whsec_")
    assert (made["signature"], made["headers"], made["event_types"]) == ("hmac", {}, None)
    assert await client.get_endpoint(made["id"]) == {k: v for k, v in made.items() if k != "secret"}


async def test_create_sends_every_option(client):
    made = await create(
        client,
        description="orders",
        headers={"X-Partner-Token": "t0k"},
        event_types=("job.failed", "job.cancelled"),
        rate_limit=20,
        max_in_flight=4,
    )

    stored = await client.get_endpoint(made["id"])
    assert stored["description"] == "orders"
    assert stored["headers"] == {"X-Partner-Token": "t0k"}
    assert stored["event_types"] == ["job.failed", "job.cancelled"]
    assert (stored["rate_limit"], stored["max_in_flight"]) == (20, 4)


async def test_an_ed25519_endpoint_answers_its_public_key(client):
    made = await create(client, signature="ed25519")

    assert "secret" not in made and made["public_key"].startswith("whpk_")
    assert await client.endpoint_public_key(made["id"]) == made["public_key"]


async def test_an_hmac_endpoint_has_no_public_key(client):
    made = await create(client)

    with pytest.raises(ApiError) as caught:
        await client.endpoint_public_key(made["id"])

    assert caught.value.status == 409


async def test_list_is_newest_first_and_endpoints_iterates_every_page(client):
    first, second, third = [await create(client, f"http://127.0.0.1:9/{n}") for n in range(3)]

    page = await client.list_endpoints(limit=2)
    rest = await client.list_endpoints(limit=2, cursor=page["next_cursor"])
    every = [e["id"] async for e in client.endpoints(limit=1)]

    assert [e["id"] for e in page["items"]] == [third["id"], second["id"]]
    assert [e["id"] for e in rest["items"]] == [first["id"]]
    assert rest["next_cursor"] is None
    assert every == [third["id"], second["id"], first["id"]]


async def test_update_sends_exactly_the_fields_given_and_none_clears(client):
    made = await create(
        client, description="orders", headers={"X-A": "1"}, event_types=["job.failed"],
        rate_limit=5, max_in_flight=2,
    )  # fmt: skip

    cleared = await client.update_endpoint(made["id"], rate_limit=None, event_types=None)
    renamed = await client.update_endpoint(made["id"], url="http://127.0.0.1:9/new")

    assert (cleared["rate_limit"], cleared["event_types"]) == (None, None)
    assert (cleared["max_in_flight"], cleared["headers"], cleared["description"]) == (
        2, {"X-A": "1"}, "orders",
    )  # fmt: skip
    assert renamed["url"] == "http://127.0.0.1:9/new"
    assert renamed["max_in_flight"] == 2 and renamed["rate_limit"] is None


async def test_an_update_the_api_refuses_is_a_422_naming_the_field(client):
    made = await create(client)

    with pytest.raises(ApiError) as caught:
        await client.update_endpoint(made["id"], max_in_flight=0)

    assert caught.value.status == 422
    assert [e["field"] for e in caught.value.errors] == ["max_in_flight"]


async def test_disable_by_update_then_enable(client):
    made = await create(client)

    disabled = await client.update_endpoint(made["id"], disabled=True)
    enabled = await client.enable_endpoint(made["id"])

    assert disabled["disabled"] is True
    assert disabled["disabled_reason"].startswith("disabled by key dk_")
    assert disabled["disabled_at"] is not None
    assert (enabled["disabled"], enabled["disabled_reason"], enabled["disabled_at"]) == (
        False, None, None,
    )  # fmt: skip


async def test_rotate_answers_a_new_secret_that_signs(api, client, make_receiver):
    receiver = await make_receiver(200)
    made = await create(client, receiver.url)

    rotated = await client.rotate_endpoint_secret(made["id"])
    remember(rotated)
    job = await client.submit("echo", {"n": 1}, endpoint_id=made["id"])
    [received] = await receiver.wait_for_requests(1)

    assert set(rotated) == {"secret"} and rotated["secret"] != made["secret"]
    payload = webhooks.verify(rotated["secret"], received.headers, received.body)
    assert payload["data"]["id"] == job["id"]


async def test_rotating_an_ed25519_endpoint_answers_its_new_public_key(client):
    made = await create(client, signature="ed25519")

    rotated = await client.rotate_endpoint_secret(made["id"])

    assert set(rotated) == {"public_key"} and rotated["public_key"] != made["public_key"]
    assert await client.endpoint_public_key(made["id"]) == rotated["public_key"]


async def test_delete_then_it_is_404(client):
    made = await create(client)

    assert await client.delete_endpoint(made["id"]) is None
    with pytest.raises(ApiError) as caught:
        await client.get_endpoint(made["id"])
    with pytest.raises(ApiError) as again:
        await client.delete_endpoint(made["id"])

    assert caught.value.status == again.value.status == 404
    assert caught.value.detail == f"no endpoint {made['id']}"


async def test_a_job_submitted_to_an_endpoint_goes_to_its_url(api, client, make_receiver):
    receiver = await make_receiver(200)
    made = await create(client, receiver.url, headers={"X-Partner-Token": "t0k"})

    job = await client.submit("echo", {"n": 2}, endpoint_id=made["id"])
    finished = await client.wait(job["id"], timeout=10)
    [received] = await receiver.wait_for_requests(1)

    assert finished["endpoint_id"] == made["id"]
    assert [d["target"] for d in finished["deliveries"]] == [receiver.url]
    assert received.headers["X-Partner-Token"] == "t0k"
    payload = webhooks.verify(made["secret"], received.headers, received.body)
    assert payload["data"]["id"] == job["id"]


async def test_another_tenants_endpoint_is_404_on_every_method(api, client):
    acme_key, globex_key = [await client.create_key(t) for t in ("acme", "globex")]
    remember([acme_key, globex_key])
    async with (
        Client(base_url(api), acme_key["key"]) as acme,
        Client(base_url(api), globex_key["key"]) as globex,
    ):
        made = await create(acme)
        calls = (
            lambda: globex.get_endpoint(made["id"]),
            lambda: globex.update_endpoint(made["id"], rate_limit=1),
            lambda: globex.enable_endpoint(made["id"]),
            lambda: globex.rotate_endpoint_secret(made["id"]),
            lambda: globex.delete_endpoint(made["id"]),
        )
        statuses = []
        for call in calls:
            with pytest.raises(ApiError) as caught:
                await call()
            statuses.append(caught.value.status)
        listed = await globex.list_endpoints()
        still = await acme.get_endpoint(made["id"])

    assert statuses == [404] * 5
    assert listed == {"items": [], "next_cursor": None}
    assert still["updated_at"] == made["updated_at"]
    assert (await client.get_endpoint(made["id"]))["id"] == made["id"]  # an admin sees it


async def test_a_refused_address_is_a_422_on_url(make_api):
    api = await make_api(allow_networks="")  # loopback callbacks are refused
    async with Client(base_url(api), ADMIN_KEY) as client:
        with pytest.raises(ApiError) as caught:
            await client.create_endpoint("http://127.0.0.1:9/hook")

    assert caught.value.status == 422
    assert "blocked address 127.0.0.1" in caught.value.detail
    assert [e["field"] for e in caught.value.errors] == ["url"]


async def test_an_id_is_one_path_segment(client):
    with pytest.raises(ApiError) as caught:
        await client.get_endpoint("../keys")

    assert caught.value.status == 404
    assert caught.value.detail == "no endpoint ../keys"


async def test_a_public_key_answer_without_the_key_is_a_client_error(aiohttp_server):
    async def public_key(request: web.Request) -> web.Response:
        return web.json_response({"secret": "whsec_not-what-was-asked"})

    app = web.Application()
    app.router.add_get("/v1/endpoints/{id}/public-key", public_key)
    server = await aiohttp_server(app, host="127.0.0.1")

    async with Client(str(server.make_url("")), ADMIN_KEY) as client:
        with pytest.raises(ClientError) as caught:
            await client.endpoint_public_key("ep_x")

    assert not isinstance(caught.value, ApiError)
    assert str(caught.value) == "GET /v1/endpoints/ep_x/public-key: the answer has no public_key"
