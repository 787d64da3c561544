"""The examples stay true: their handlers run and their receiver verifies real webhooks."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from dispatcher.webhooks import generate_signing_key, sign
from examples.receiver import build
from tests.conftest import wait_for
from tests.support.process import REPO_ROOT, free_port


async def test_example_handlers_load_and_run(make_api):
    api = await make_api(handlers="examples.handlers")
    job = await api.submit(type="word_count", payload={"text": "a b a"})
    done = await api.job(job["id"], wait=5)
    assert done["result"] == {"words": 3, "top": [["a", 2], ["b", 1]]}
    digest = await api.submit(type="digest", payload={"data": "x"})
    assert (await api.job(digest["id"], wait=5))["result"]["sha256"].startswith("2d711642")


async def test_example_receiver_accepts_a_real_webhook(api, aiohttp_server, capsys):
    _, body = await api.call("GET", "/v1/signing-secret")
    server = await aiohttp_server(build(body["secret"]), host="127.0.0.1")
    job = await api.submit(type="echo", payload=7, callback_url=str(server.make_url("/hook")))

    delivery = await api.settled_delivery(job["id"])

    assert delivery["status"] == "succeeded"
    assert delivery["attempts"][0]["status_code"] == 204
    assert f"job.succeeded {job['id']} 7" in capsys.readouterr().out


async def test_example_receiver_refuses_a_webhook_signed_by_another_secret(api, aiohttp_server):
    server = await aiohttp_server(
        build("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="), host="127.0.0.1"
    )
    job = await api.submit(type="echo", payload=7, callback_url=str(server.make_url("/hook")))
    [delivery] = (await api.job(job["id"], wait=5))["deliveries"]
    settled = await api.settled_delivery(job["id"])
    assert settled["id"] == delivery["id"]
    assert settled["status"] == "failed"
    assert {a["status_code"] for a in settled["attempts"]} == {401}


async def test_the_partner_example_verifies_an_ed25519_endpoint_with_its_public_key(
    serve, http, tmp_path
):
    server = await serve()
    port = free_port()
    status, made = await http.call(
        server, "POST", "/v1/endpoints",
        json={"url": f"http://127.0.0.1:{port}/hook", "signature": "ed25519"},
    )  # fmt: skip
    assert status == 201, made
    output = tmp_path / "partner.out"
    with output.open("wb") as out:
        partner = await asyncio.create_subprocess_exec(
            sys.executable, "examples/partner.py", made["public_key"], str(port),
            cwd=REPO_ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        await wait_for(lambda: _answers(http, port), timeout=20, every=0.05)
        job = await http.submit(server, type="echo", payload=1, endpoint_id=made["id"])
        done = await http.wait(server, job["id"])
        delivery_id = done["deliveries"][0]["id"]

        async def succeeded() -> bool:
            return (await http.delivery(server, delivery_id))["status"] == "succeeded"

        await wait_for(succeeded)
        assert f"{delivery_id} job.succeeded {job['id']}" in output.read_text()
        # A replay is the same webhook-id: acknowledged, not acted on twice.
        status, _ = await http.call(server, "POST", f"/v1/deliveries/{delivery_id}/replay")
        assert status == 202
        await wait_for(lambda: f"{delivery_id} repeat" in output.read_text())
        # A forgery signed by another key is refused before the handler runs.
        forged = sign(generate_signing_key()[0], "msg_forged", int(time.time()), b"{}")
        async with http.session.post(
            f"http://127.0.0.1:{port}/hook", data=b"{}", headers=forged
        ) as response:
            assert response.status == 401
        assert "msg_forged" not in output.read_text()
    finally:
        partner.kill()
        await partner.wait()


async def _answers(http, port: int) -> bool:
    try:
        async with http.session.post(f"http://127.0.0.1:{port}/hook") as response:
            return response.status == 401
    except aiohttp.ClientConnectionError:
        return False
