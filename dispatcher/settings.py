"""All configuration, read once from `DISPATCHER_*` variables and passed down."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)

CommaList = Annotated[tuple[str, ...], NoDecode]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split(value: object) -> object:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHER_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the API listens on.")
    database_url: str = Field(
        "sqlite:///dispatcher.db",
        description="sqlite:///PATH (relative to the working directory, or sqlite:////abs/path), "
        "or postgresql://USER:PASSWORD@HOST:PORT/DATABASE for several instances on one database.",
    )
    database_pool_size: int = Field(
        10,
        ge=1,
        le=1000,
        description="PostgreSQL only: connections each instance keeps open to the database.",
    )
    admin_key: SecretStr | None = Field(
        None,
        description="A bootstrap admin API key of your choosing (tenant 'admin'). When unset "
        "and the database has no key, serve creates an admin key and prints it once.",
    )
    workers: int = Field(16, ge=1, description="Jobs run at once (deliveries do not take these).")
    max_queue: int = Field(
        100_000, ge=1, description="Queued jobs beyond which POST /v1/jobs answers 503."
    )
    lease_seconds: float = Field(
        30,
        gt=0,
        description="How long a claimed job or delivery stays with the process that claimed it; "
        "after a crash its work is taken up again within this time.",
    )
    handlers: CommaList = Field(
        (),
        description="Comma-separated Python modules imported at start (from the working "
        "directory first, as python -m does); they register job handlers with @handler.",
    )
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        DEFAULT_RETRY_SCHEDULE,
        description="Seconds to wait before each retry after the first (immediate) attempt; "
        "its length is the number of retries. Empty: no retries.",
    )
    delivery_timeout: float = Field(
        15, gt=0, description="Seconds for one delivery attempt, connect to last byte."
    )
    rotation_grace: float = Field(
        86_400, ge=0, description="Seconds an old signing secret keeps signing after a rotation."
    )
    disable_after: float = Field(
        432_000,
        gt=0,
        description="Seconds of failing without a single success after which an endpoint is "
        "disabled.",
    )
    allow_networks: Annotated[tuple[Network, ...], NoDecode] = Field(
        (),
        description="CIDRs that callbacks may reach although private, loopback or link-local "
        "(e.g. 127.0.0.0/8,::1/128 for local development); everything else non-public is "
        "refused.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the API accepts."
    )
    public_url: str | None = Field(
        None, description="The address users reach the API at, for links in emails."
    )
    retention_days: float = Field(
        30,
        gt=0,
        description="Finished jobs, their deliveries and attempts older than this are purged.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json for one JSON object per line."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR."
    )
    smtp_url: SecretStr | None = Field(
        None,
        description="smtp://[user:pass@]host:port (smtps:// for TLS; ?starttls=true) for "
        "email notifications.",
    )
    email_from: str = Field("dispatcher@localhost", description="Sender of notification emails.")
    sms_url: str | None = Field(
        None,
        description="A Twilio-compatible SMS API: POST {URL}/2010-04-01/Accounts/{SID}/"
        "Messages.json.",
    )
    sms_account_sid: str | None = Field(None, description="The SMS API's account SID.")
    sms_auth_token: SecretStr | None = Field(None, description="The SMS API's auth token.")
    sms_from: str | None = Field(None, description="The number SMS are sent from.")
    delivery_concurrency: int = Field(
        256,
        ge=1,
        description="Webhook, email and SMS attempts in flight at once. Each tenant holds at "
        "most a fair share while others wait; an eighth is kept for newcomers.",
    )
    delivery_per_host: int = Field(
        32,
        ge=1,
        description="Attempts in flight from one tenant to one address:port (however it is "
        "spelled or named), or to the email relay, or to the SMS gateway.",
    )
    poll_interval: float = Field(
        0.5,
        gt=0,
        description="How often idle workers look for work made due elsewhere (retries, other "
        "instances); work submitted to this process wakes them at once.",
    )
    shutdown_grace: float = Field(
        10, ge=0, description="Seconds SIGTERM waits for running work before releasing it."
    )
    max_requests_per_tenant: int = Field(
        256,
        ge=1,
        description="Requests one tenant may have in progress at once, streams and long-polls "
        "included; past it 429 with Retry-After. Admin keys are not counted.",
    )
    max_endpoints_per_tenant: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Registered endpoints one tenant may have; past it POST /v1/endpoints "
        "answers 409. Each endpoint being sent to keeps a little state in memory.",
    )
    max_queue_per_tenant: int | None = Field(
        None,
        ge=1,
        description="Queued jobs one tenant may hold (default: a tenth of "
        "DISPATCHER_MAX_QUEUE), so that no tenant can fill the queue for everyone.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("handlers", mode="before")
    @classmethod
    def _split_handlers(cls, value: object) -> object:
        return _split(value)

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        return _split(value)

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(delay < 0 for delay in value):
            raise ValueError("retry delays must be >= 0 seconds")
        return value

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        parts = _split(value)
        if isinstance(parts, tuple):
            return tuple(ipaddress.ip_network(part, strict=False) for part in parts)
        return parts

    @property
    def tenant_queue_share(self) -> int:
        return self.max_queue_per_tenant or max(1, self.max_queue // 10)

    @property
    def postgres_dsn(self) -> str | None:
        """The URL itself when it names a PostgreSQL database, else None."""
        if self.database_url.startswith(("postgresql://", "postgres://")):
            return self.database_url
        return None

    @property
    def sqlite_path(self) -> str | None:
        """The file of a `sqlite:///PATH` URL, or None for another database."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            return self.database_url[len(prefix) :]
        return None


class _LogFormat(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DISPATCHER_", extra="ignore")

    log_format: Literal["text", "json"] = "text"


def log_format_alone() -> str:
    """DISPATCHER_LOG_FORMAT when the other settings are not valid: `text` if it is not."""
    try:
        return _LogFormat().log_format
    except ValidationError:
        return "text"
