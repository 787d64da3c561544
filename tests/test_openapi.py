"""`/openapi.json`: valid OpenAPI 3.1, every /v1 route in it, and a real server fuzzed
against it by schemathesis: no 5xx, and no answer that breaks its own schema."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dispatcher.api import schemas as res
from dispatcher.api.openapi import document
from tests.conftest import ADMIN_KEY
from tests.support.process import DISPATCHER, free_port

EXAMPLES = 25
# Where the fuzzed jobs and endpoints point: a name that resolves to loopback and,
# with DISPATCHER_ALLOW_NETWORKS unset, is refused at connect time. Nothing the
# fuzzer makes up ever reaches another host.
HARMLESS_URL = "http://localhost:9/fuzz"


async def test_the_document_is_valid_openapi_with_every_v1_route(api):
    async with api.client.get("/openapi.json") as response:  # no key needed
        assert response.status == 200
        spec = await response.json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = {
        (route.method, route.resource.canonical)
        for route in api.client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"
    }
    assert documented == served
    job = spec["paths"]["/v1/jobs"]["post"]
    assert job["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/JobRequest"
    )
    assert {"202", "401", "413", "415", "422", "503"} <= set(job["responses"])
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `dispatcher serve`, for the whole module: the fuzzer's target."""
    folder = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env |= {
        "DISPATCHER_PORT": str(port),
        "DISPATCHER_DATABASE_URL": f"sqlite:///{folder}/d.db",
        "DISPATCHER_ADMIN_KEY": ADMIN_KEY,
        "DISPATCHER_RETRY_SCHEDULE": "",
        "DISPATCHER_DELIVERY_TIMEOUT": "1",
    }
    log = (folder / "serve.err").open("wb")
    process = subprocess.Popen([DISPATCHER, "serve"], env=env, cwd=folder, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
        _no_unhandled_errors(folder / "serve.err")


def _wait_until_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "dispatcher serve exited"
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)  # not a wait for work: the port is not bound yet
    raise AssertionError("dispatcher serve did not start")


def _no_unhandled_errors(log: Path) -> None:
    text = log.read_text()
    assert "api.unhandled" not in text, text[-3000:]


def _harmless(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: HARMLESS_URL if k in ("callback_url", "url") else v for k, v in body.items()}
    return body


schema = schemathesis.openapi.from_dict(document()).exclude(
    # Streams hold their connection open; tests/test_streams.py covers them.
    path_regex=r"/(ws|events)$"
)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_answers_match_their_schema(case, server):
    case.body = _harmless(case.body)
    # Made-up headers (Expect: nonsense, a bad Transfer-Encoding) test aiohttp's own
    # HTTP parser, not the routes this document describes: none is sent.
    case.headers = {}
    case.call_and_validate(
        base_url=server,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        checks=[
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
            content_type_conformance,
        ],
        timeout=30,
    )


async def test_real_answers_match_the_answer_models(api, make_receiver):
    receiver = await make_receiver(500, 200)
    _, made = await api.call("POST", "/v1/endpoints", json={"url": receiver.url})
    res.NewEndpoint.model_validate(made)
    job = await api.submit(
        type="echo", payload={"a": [1]}, endpoint_id=made["id"], notify={"sms": "+15550001111"}
    )
    res.Job.model_validate(job)
    delivery = await api.settled_delivery(job["id"])
    res.Delivery.model_validate(delivery)
    for path, model in (
        (f"/v1/jobs/{job['id']}", res.Job),
        ("/v1/jobs", res.JobPage),
        ("/v1/deliveries", res.DeliveryPage),
        (f"/v1/endpoints/{made['id']}", res.Endpoint),
        ("/v1/endpoints", res.EndpointPage),
        ("/v1/keys", res.KeyPage),
        ("/v1/signing-secret", res.Secret),
    ):
        status, body = await api.call("GET", path)
        assert status == 200, (path, body)
        model.model_validate(body)
    _, rotated = await api.call("POST", f"/v1/endpoints/{made['id']}/rotate-secret")
    res.Credential.model_validate(rotated)
    status, problem = await api.call("GET", "/v1/jobs/job_nope")
    assert status == 404
    res.Problem.model_validate(problem)
