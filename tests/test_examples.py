"""The examples stay true: their handlers run and their receiver verifies real webhooks."""

from __future__ import annotations

from examples.receiver import build


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
