"""All configuration, read once from `DISPATCHER_*` variables and passed down."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
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

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    database_url: str = "sqlite:///dispatcher.db"
    admin_key: SecretStr | None = None
    workers: int = Field(16, ge=1)
    max_queue: int = Field(100_000, ge=1)
    lease_seconds: float = Field(30, gt=0)
    handlers: CommaList = ()
    retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_RETRY_SCHEDULE
    delivery_timeout: float = Field(15, gt=0)
    rotation_grace: float = Field(86_400, ge=0)
    disable_after: float = Field(432_000, gt=0)
    allow_networks: Annotated[tuple[Network, ...], NoDecode] = ()
    max_body_bytes: int = Field(1_048_576, ge=1024)
    public_url: str | None = None
    retention_days: float = Field(30, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    smtp_url: SecretStr | None = None
    email_from: str = "dispatcher@localhost"
    sms_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: SecretStr | None = None
    sms_from: str | None = None
    # Not in the SPEC table: how many webhook/email/SMS attempts run at once.
    # Deliveries never take job slots; this only bounds sockets and memory.
    delivery_concurrency: int = Field(256, ge=1)
    # At most this many attempts in flight to one host (webhook host:port, or
    # the email relay, or the SMS gateway): a hanging receiver holds only these.
    delivery_per_host: int = Field(32, ge=1)
    # How often idle workers look for work that other processes (or the retry
    # schedule) made due. Work submitted in this process wakes them at once.
    poll_interval: float = Field(0.5, gt=0)
    # How long SIGTERM waits for running jobs before releasing them.
    shutdown_grace: float = Field(10, ge=0)
    # Queued jobs one tenant may hold (default: a tenth of max_queue), so that
    # no tenant can fill the queue and have everyone else's submissions refused.
    max_queue_per_tenant: int | None = Field(None, ge=1)

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
    def sqlite_path(self) -> str | None:
        """The file of a `sqlite:///PATH` URL, or None for another database."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix):
            return self.database_url[len(prefix) :]
        return None
