"""`GET /openapi.json`: OpenAPI 3.1 of every /v1 route, generated from the pydantic models.

Requests are described by the very models the routes validate with
(dispatcher.models), answers by those in dispatcher.api.schemas; JSON Schema
for both comes from pydantic. What is written here by hand is only which
route takes and answers which model; tests/test_openapi.py checks that every
/v1 route of the app is here, and schemathesis holds each answer to its schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dispatcher import __version__
from dispatcher import models as req
from dispatcher.api import schemas as res
from dispatcher.api.answers import json_answer

routes = web.RouteTableDef()

REF = "#/components/schemas/{model}"
PROBLEM = "application/problem+json"
PROBLEM_TEXT = {
    400: "Malformed JSON, a body that is not UTF-8, or a request HTTP cannot parse",
    401: "No valid API key",
    403: "Needs an admin key",
    404: "No such object (or another tenant's)",
    409: "Conflicts with the object's state",
    413: "The body is larger than DISPATCHER_MAX_BODY_BYTES",
    415: "The body is not JSON",
    422: "A value breaks a rule; `errors` says which",
    429: "The tenant has too many requests in progress (Retry-After)",
    503: "Too much queued work, or the database cannot be written now (Retry-After)",
}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    answers: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    problems: tuple[int, ...] = ()
    stream: str | None = None  # a stream route: its content type
    tags: list[str] = field(default_factory=list)


def _ops() -> list[Operation]:
    one, page, write = (404,), (), (400, 413, 415)
    return [
        Operation("post", "/v1/keys", "Create an API key (admin)", {201: res.NewKey},
                  body=req.KeyRequest, problems=(*write, 403)),
        Operation("get", "/v1/keys", "List API keys (admin)", {200: res.KeyPage},
                  query=req.ListQuery, problems=(403,)),
        Operation("delete", "/v1/keys/{prefix}", "Revoke an API key (admin)", {204: None},
                  problems=(403, *one)),
        Operation("get", "/v1/signing-secret", "The tenant's default signing secret",
                  {200: res.Secret}, problems=one),
        Operation("post", "/v1/signing-secret/rotate", "Rotate the tenant's signing secret",
                  {200: res.Secret}),
        Operation("post", "/v1/jobs", "Submit a job", {200: res.Job, 202: res.Job},
                  body=req.JobRequest, problems=(*write, 409, 503)),
        Operation("get", "/v1/jobs", "List jobs, newest first", {200: res.JobPage},
                  query=req.JobListQuery, problems=page),
        Operation("get", "/v1/jobs/{id}", "A job (with ?wait=N, once it finishes)",
                  {200: res.Job}, query=req.WaitQuery, problems=one),
        Operation("post", "/v1/jobs/{id}/cancel", "Cancel a queued job", {200: res.Job},
                  problems=(*one, 409)),
        Operation("get", "/v1/jobs/{id}/ws", "A job's changes over a WebSocket", {101: None},
                  problems=(400, *one), stream="websocket"),
        Operation("get", "/v1/jobs/{id}/events", "A job's changes as server-sent events",
                  {200: None}, problems=one, stream="text/event-stream"),
        Operation("get", "/v1/events/ws", "Every job event of the tenant over a WebSocket",
                  {101: None}, problems=(400,), stream="websocket"),
        Operation("post", "/v1/endpoints", "Register an endpoint", {201: res.NewEndpoint},
                  body=req.EndpointRequest, problems=(*write, 409)),
        Operation("get", "/v1/endpoints", "List endpoints, newest first",
                  {200: res.EndpointPage}, query=req.ListQuery),
        Operation("get", "/v1/endpoints/{id}", "An endpoint", {200: res.Endpoint},
                  problems=one),
        Operation("patch", "/v1/endpoints/{id}", "Change, disable or re-enable an endpoint",
                  {200: res.Endpoint}, body=req.EndpointPatch, problems=(*write, *one)),
        Operation("delete", "/v1/endpoints/{id}", "Delete an endpoint", {204: None},
                  problems=one),
        Operation("post", "/v1/endpoints/{id}/rotate-secret", "Rotate an endpoint's secret",
                  {200: res.Credential}, problems=one),
        Operation("get", "/v1/endpoints/{id}/public-key", "An ed25519 endpoint's public key",
                  {200: res.PublicKey}, problems=(*one, 409)),
        Operation("get", "/v1/deliveries", "List deliveries, newest first",
                  {200: res.DeliveryPage}, query=req.DeliveryListQuery),
        Operation("get", "/v1/deliveries/{id}", "A delivery with its attempts",
                  {200: res.Delivery}, problems=one),
        Operation("post", "/v1/deliveries/{id}/replay", "Replay a delivery, or try it now",
                  {202: res.Delivery}, problems=(*one, 409)),
        Operation("post", "/v1/deliveries/replay", "Replay every matching delivery",
                  {200: res.Matched, 202: res.Replayed}, body=req.BulkReplayRequest,
                  problems=write),
    ]  # fmt: skip


OPERATIONS = _ops()


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every /v1 route."""
    schemas = _schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dispatcher",
            "version": __version__,
            "description": "Jobs in, results out: signed webhooks, polling, streams, "
            "email and SMS. Every /v1 route needs `Authorization: Bearer <api key>`.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "dk_… API key"}
            },
        },
        "security": [{"apiKey": []}],
    }


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(res.Problem, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            models.append((op.body, "validation"))
        models.extend((m, "serialization") for m in op.answers.values() if m is not None)
    unique = list(dict.fromkeys(models))
    _, top = models_json_schema(unique, ref_template=REF)
    return dict(top.get("$defs", {}))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in ("id", "prefix")
        if "{" + name + "}" in op.path
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if op.stream is not None:
        parameters.append(
            {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "The API key, for browsers that cannot set headers on streams"}
        )  # fmt: skip
    body: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(op),
        "responses": _responses(op),
    }
    if parameters:
        body["parameters"] = parameters
    if op.body is not None:
        body["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return body


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def _responses(op: Operation) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, model in op.answers.items():
        if model is not None:
            content = {"application/json": {"schema": _ref(model)}}
            answers[str(status)] = {"description": model.__doc__ or "OK", "content": content}
        elif op.stream == "text/event-stream":
            content = {op.stream: {"schema": {"type": "string"}}}
            answers[str(status)] = {"description": "Events named `job`", "content": content}
        else:
            answers[str(status)] = {"description": "No body" if status == 204 else op.stream}
    problem = {PROBLEM: {"schema": _ref(res.Problem)}}
    for status in sorted({400, 401, 422, 429, *op.problems}):
        answers[str(status)] = {"description": PROBLEM_TEXT[status], "content": problem}
    # A request HTTP itself cannot parse (a bad Transfer-Encoding, say) is refused by
    # the server before any route sees it, in plain text.
    answers["400"]["content"] = {**problem, "text/plain": {"schema": {"type": "string"}}}
    return answers


def _operation_id(op: Operation) -> str:
    words = [p.strip("{}").replace("-", "_") for p in op.path.split("/")[2:] if p]
    return "_".join([op.method, *words])


_DOCUMENT: dict[str, Any] | None = None


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    global _DOCUMENT  # made once: it never changes while the process runs
    if _DOCUMENT is None:
        _DOCUMENT = document()
    return json_answer(_DOCUMENT)
