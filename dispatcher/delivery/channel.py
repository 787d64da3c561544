"""What every channel (webhook, email, SMS) offers the deliverer: one attempt at a time."""

from __future__ import annotations

from typing import Protocol

from dispatcher.delivery.policy import AttemptResult
from dispatcher.store.records import DueDelivery


class Sender(Protocol):
    async def send(self, due: DueDelivery) -> AttemptResult:
        """Make one attempt. Never raises for a failure of the far side: it is the result."""
        ...
