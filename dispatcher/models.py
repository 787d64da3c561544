"""Request bodies and query strings, validated at the edge with pydantic."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
)
from yarl import URL

E164 = re.compile(r"\+[0-9]{8,15}")
# Times must fit in a UTC datetime and an RFC 3339 answer: years 1970 to 9999.
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
TENANT = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _phone(value: str) -> str:
    if not E164.fullmatch(value):
        raise ValueError("must be an E.164 number: + and 8 to 15 digits")
    return value


# A host name as DNS has them (letters, digits, hyphens and, in practice,
# underscores, in dot-separated labels), after IDNA; or an address literal.
HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _http_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError as exc:
        raise ValueError("must be an absolute http or https URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http or https URL")
    if not _valid_host(url.raw_host or ""):
        raise ValueError("must name a valid host: a DNS name or an IP address")
    return value


def _valid_host(host: str) -> bool:
    if ":" in host:  # an IPv6 literal; yarl has taken its brackets off
        return all(c in "0123456789abcdefABCDEF:.%" for c in host)
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(HOST_LABEL.fullmatch(label) for label in labels)


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValueError("must be between 1970 and 9999 in UTC") from exc
    if not EARLIEST <= utc <= LATEST:
        raise ValueError("must be between 1970 and 9999 in UTC")
    return utc


def _email(value: str) -> str:
    # The stdlib's parser, not email-validator's deliverability rules: the SPEC
    # asks for "an address with a domain", and a@localhost is one.
    try:
        address = Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError) as exc:
        raise ValueError("must be an email address with a domain") from exc
    if not address.username or not address.domain:
        raise ValueError("must be an email address with a domain")
    if not value.isprintable() or any(c.isspace() for c in value):
        # U+2028 and its kind pass the parser, then break the header they go in.
        raise ValueError("must be an email address without spaces or control characters")
    return value


Phone = Annotated[str, AfterValidator(_phone)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Moment = Annotated[AwareDatetime, AfterValidator(_in_range)]
HttpUrl = Annotated[str, Field(max_length=2048), AfterValidator(_http_url)]


class Strict(BaseModel):
    # Unknown fields are refused: a misspelt "callback" must not silently
    # become a job whose result goes nowhere.
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        # A text column cannot hold NUL in PostgreSQL; no name, URL or filter needs it.
        # (Nested values such as a payload are stored as JSON, which escapes it.)
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain the NUL character")
        return value


class Notify(Strict):
    email: Email | None = None
    sms: Phone | None = None
    on_callback_failure: StrictBool = False


class JobRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"type": "echo", "payload": {"hello": "world"}}]},
    )

    type: str = Field(min_length=1, max_length=200)
    payload: Any
    callback_url: HttpUrl | None = None
    endpoint_id: str | None = Field(None, max_length=100)
    notify: Notify | None = None
    metadata: dict[str, Any] | None = None
    deadline: Moment | None = None


EventType = Literal["job.succeeded", "job.failed", "job.cancelled"]
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# Headers an endpoint may not set: ours (the signature and what it covers), and
# those that frame the request, which a custom value would corrupt or smuggle.
RESERVED_HEADERS = frozenset(
    {
        "content-type", "user-agent", "content-length", "content-encoding", "host",
        "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
        "expect", "proxy-authorization", "proxy-connection",
    }
)  # fmt: skip
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1000


def _headers(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, text in value.items():
        lowered = name.lower()
        if not HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name[:100]!r} is not a valid header name")
        if lowered in RESERVED_HEADERS or lowered.startswith("webhook-"):
            raise ValueError(f"{name} is set by the dispatcher and cannot be replaced")
        if lowered in seen:
            raise ValueError(f"{name} is given twice")
        seen.add(lowered)
        if len(text) > MAX_HEADER_VALUE or not all(" " <= c <= "~" or c == "\t" for c in text):
            raise ValueError(
                f"the value of {name} must be at most {MAX_HEADER_VALUE} printable ASCII characters"
            )
    return value


def _event_types(value: list[str] | None) -> list[str] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("each event type at most once")
    return value


Headers = Annotated[dict[str, str], AfterValidator(_headers)]
EventTypes = Annotated[list[EventType] | None, Field(min_length=1), AfterValidator(_event_types)]
RateLimit = Annotated[StrictInt, Field(ge=1, le=10_000)]
InFlight = Annotated[StrictInt, Field(ge=1, le=1_000)]


def _printable(value: str) -> str:
    if not all(c.isprintable() or c in "\n\t" for c in value):
        raise ValueError("must be printable text: no control characters but tabs and newlines")
    return value


Description = Annotated[str, Field(max_length=1000), AfterValidator(_printable)]


class EndpointRequest(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"url": "https://partner.example/hooks"}]},
    )

    url: HttpUrl
    description: Description | None = None
    headers: Headers = Field(default_factory=dict)
    event_types: EventTypes = None
    signature: Literal["hmac", "ed25519"] = "hmac"
    rate_limit: RateLimit | None = None
    max_in_flight: InFlight | None = None


class EndpointPatch(Strict):
    """Only the fields given change; null clears an optional one."""

    url: HttpUrl | None = None
    description: Description | None = None
    headers: Headers | None = None
    event_types: EventTypes = None
    rate_limit: RateLimit | None = None
    max_in_flight: InFlight | None = None
    disabled: StrictBool | None = None


class KeyRequest(Strict):
    tenant: str = Field(pattern=TENANT)
    admin: StrictBool = False


class BulkReplayRequest(Strict):
    status: Literal["failed", "succeeded"]
    since: Moment | None = None
    until: Moment | None = None
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
    since: Moment | None = None
    until: Moment | None = None


class WaitQuery(Strict):
    wait: float = Field(0, ge=0, le=60)


def timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
