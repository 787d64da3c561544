"""Registered endpoints as the store hands them out, and the health the deliverer keeps of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dispatcher.ids import rfc3339
from dispatcher.store.signing import SigningSecrets


class Signature(StrEnum):
    HMAC = "hmac"
    ED25519 = "ed25519"


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """What the deliverer learnt of an endpoint from its attempts; stored on its row so
    that another instance (and this one after a restart) goes on from it.

    `circuit_since` set means the circuit is open: one probe at a time goes,
    none before `probe_at`; `probes` counts the probes that failed, for the pace.
    """

    failing_since: float | None = None
    circuit_since: float | None = None
    probe_at: float | None = None
    probes: int = 0
    disabled_reason: str | None = None
    disabled_at: float | None = None

    @property
    def open(self) -> bool:
        return self.circuit_since is not None


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    tenant: str
    url: str
    description: str | None
    headers: dict[str, str]
    # None: every event type.
    event_types: tuple[str, ...] | None
    signature: Signature
    secrets: SigningSecrets
    rate_limit: int | None
    max_in_flight: int | None
    health: EndpointHealth
    created_at: float
    updated_at: float
    deleted_at: float | None = None

    @classmethod
    def from_row(cls, row: Any) -> Endpoint:
        event_types = json.loads(row["event_types"]) if row["event_types"] else None
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            url=row["url"],
            description=row["description"],
            headers=json.loads(row["headers"]),
            event_types=tuple(event_types) if event_types is not None else None,
            signature=Signature(row["signature"]),
            secrets=SigningSecrets.load(row["secret"], row["previous_secrets"]),
            rate_limit=row["rate_limit"],
            max_in_flight=row["max_in_flight"],
            health=EndpointHealth(
                failing_since=row["failing_since"],
                circuit_since=row["circuit_since"],
                probe_at=row["circuit_probe_at"],
                probes=row["circuit_probes"],
                disabled_reason=row["disabled_reason"],
                disabled_at=row["disabled_at"],
            ),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            deleted_at=row["deleted_at"],
        )

    @property
    def disabled(self) -> bool:
        return self.health.disabled_at is not None

    def wants(self, event_type: str) -> bool:
        return self.event_types is None or event_type in self.event_types

    def unusable(self) -> str | None:
        """Why nothing may be sent to it now (deleted, disabled), or None."""
        if self.deleted_at is not None:
            return f"the endpoint {self.id} was deleted"
        if self.disabled:
            return f"the endpoint {self.id} is disabled: {self.health.disabled_reason}"
        return None

    def public(self) -> dict[str, Any]:
        health = self.health
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "headers": self.headers,
            "event_types": list(self.event_types) if self.event_types is not None else None,
            "signature": str(self.signature),
            "rate_limit": self.rate_limit,
            "max_in_flight": self.max_in_flight,
            "disabled": self.disabled,
            "disabled_reason": health.disabled_reason,
            "disabled_at": rfc3339(health.disabled_at),
            "circuit": "open" if health.open else "closed",
            "circuit_since": rfc3339(health.circuit_since),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class NewEndpoint:
    id: str
    tenant: str
    url: str
    host: str
    description: str | None
    headers: dict[str, str]
    event_types: tuple[str, ...] | None
    signature: Signature
    secret: str
    rate_limit: int | None
    max_in_flight: int | None
    created_at: float


# What a PATCH may change, by column; `url` also moves the endpoint's pending deliveries.
CHANGEABLE = ("url", "description", "headers", "event_types", "rate_limit", "max_in_flight")


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """A PATCH: only the fields given; `enable` clears a disabling and the health with it."""

    values: dict[str, Any]
    host: str | None = None
    enable: bool = False
    disable_reason: str | None = None
