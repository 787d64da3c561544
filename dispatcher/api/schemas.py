"""What the API answers, as pydantic models: the response half of /openapi.json.

The routes build their answers from the store's records (`public()`); these
models say what those answers hold, field by field, and the test suite holds
every answer to them (schemathesis checks each response against its schema).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Time = str  # RFC 3339 UTC with milliseconds
JobStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
DeliveryStatusName = Literal["pending", "succeeded", "failed"]
ChannelName = Literal["webhook", "email", "sms"]


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(Answer):
    field: str
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457: every error answer, unknown routes included."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class JobError(Answer):
    type: str
    message: str


class DeliverySummary(Answer):
    id: str
    channel: ChannelName
    target: str
    status: DeliveryStatusName
    attempt_count: int


class Job(Answer):
    id: str = Field(examples=["job_01m92w2ytj3g5md0sd4p9gm2bb"])
    type: str
    status: JobStatusName
    payload: Any
    result: Any
    error: JobError | None
    callback_url: str | None
    endpoint_id: str | None
    notify: dict[str, Any] | None
    metadata: dict[str, Any] | None
    deadline: Time | None
    created_at: Time
    started_at: Time | None
    finished_at: Time | None
    deliveries: list[DeliverySummary]


class Attempt(Answer):
    number: int
    started_at: Time
    duration_ms: int
    status_code: int | None
    error: str | None
    response_body: str | None
    trigger: Literal["scheduled", "manual"]
    by: str | None


class Delivery(Answer):
    id: str = Field(examples=["msg_01m92w2yw3cz6q3x4y0b7e8k2d"])
    job_id: str
    channel: ChannelName
    target: str
    endpoint_id: str | None
    event_type: str
    status: DeliveryStatusName
    attempt_count: int
    next_attempt_at: Time | None
    last_status_code: int | None
    last_error: str | None
    created_at: Time
    attempts: list[Attempt] | None = None


class Endpoint(Answer):
    id: str = Field(examples=["ep_01m92w2yw3cz6q3x4y0b7e8k2d"])
    url: str
    description: str | None
    headers: dict[str, str]
    event_types: list[Literal["job.succeeded", "job.failed", "job.cancelled"]] | None
    signature: Literal["hmac", "ed25519"]
    rate_limit: int | None
    max_in_flight: int | None
    disabled: bool
    disabled_reason: str | None
    disabled_at: Time | None
    circuit: Literal["open", "closed"]
    circuit_since: Time | None
    created_at: Time
    updated_at: Time


class NewEndpoint(Endpoint):
    """Shown once: the shared secret (hmac) or the public key (ed25519)."""

    secret: str | None = None
    public_key: str | None = None


class Credential(Answer):
    secret: str | None = None
    public_key: str | None = None


class Secret(Answer):
    secret: str


class PublicKey(Answer):
    public_key: str


class Key(Answer):
    prefix: str
    tenant: str
    admin: bool
    created_at: Time
    last_used_at: Time | None


class NewKey(Answer):
    key: str
    tenant: str
    admin: bool
    signing_secret: str


class JobPage(Answer):
    items: list[Job]
    next_cursor: str | None


class DeliveryPage(Answer):
    items: list[Delivery]
    next_cursor: str | None


class EndpointPage(Answer):
    items: list[Endpoint]
    next_cursor: str | None


class KeyPage(Answer):
    items: list[Key]
    next_cursor: str | None


class Replayed(Answer):
    replayed: int


class Matched(Answer):
    matched: int
