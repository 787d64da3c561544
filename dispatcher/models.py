"""Request bodies and query strings, validated at the edge with pydantic."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
)
from yarl import URL

E164 = re.compile(r"^\+[0-9]{8,15}$")
TENANT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _phone(value: str) -> str:
    if not E164.match(value):
        raise ValueError("must be an E.164 number: + and 8 to 15 digits")
    return value


def _http_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError as exc:
        raise ValueError("must be an absolute http or https URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http or https URL")
    return value


Phone = Annotated[str, AfterValidator(_phone)]
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]


class Strict(BaseModel):
    # Unknown fields are refused: a misspelt "callback" must not silently
    # become a job whose result goes nowhere.
    model_config = ConfigDict(extra="forbid")


class Notify(Strict):
    email: EmailStr | None = None
    sms: Phone | None = None
    on_callback_failure: StrictBool = False


class JobRequest(Strict):
    type: str = Field(min_length=1, max_length=200)
    payload: Any = None
    callback_url: HttpUrl | None = None
    endpoint_id: str | None = Field(None, max_length=100)
    notify: Notify | None = None
    metadata: dict[str, Any] | None = None
    deadline: AwareDatetime | None = None


class KeyRequest(Strict):
    tenant: str = Field(pattern=TENANT)
    admin: StrictBool = False


class BulkReplayRequest(Strict):
    status: Literal["failed", "succeeded"]
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    endpoint_id: str | None = None
    channel: Literal["webhook", "email", "sms"] | None = None
    dry_run: StrictBool = False


class ListQuery(Strict):
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = None


class JobListQuery(ListQuery):
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    type: str | None = None


class DeliveryListQuery(ListQuery):
    status: Literal["pending", "succeeded", "failed"] | None = None
    job_id: str | None = None
    endpoint_id: str | None = None
    channel: Literal["webhook", "email", "sms"] | None = None
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None


class WaitQuery(Strict):
    wait: float = Field(0, ge=0, le=60)
    # The stream routes take the key here too (browsers cannot set headers).
    token: str | None = None


def timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
