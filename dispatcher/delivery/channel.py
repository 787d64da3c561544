"""What every channel (webhook, email, SMS) offers the deliverer: one attempt at a time."""

from __future__ import annotations

from typing import Protocol

from dispatcher.delivery.policy import AttemptResult
from dispatcher.store.records import DueDelivery


class Redactor:
    """Keeps an operator's secret, in every form it takes on the wire, out of what is recorded."""

    def __init__(self, *forms: str) -> None:
        # Longest first, so that no shorter form leaves part of a longer one behind.
        self._forms = sorted({form for form in forms if form}, key=len, reverse=True)
        # How far past a cut a secret may reach: read this much more, then cut.
        self.slack = max((len(form.encode()) for form in self._forms), default=0)

    def text(self, value: str) -> str:
        for form in self._forms:
            value = value.replace(form, "***")
        return value

    def data(self, value: bytes) -> bytes:
        for form in self._forms:
            value = value.replace(form.encode(), b"***")
        return value

    def failed(self, error: str, *, gone: bool = False) -> AttemptResult:
        return AttemptResult(ok=False, error=self.text(error), gone=gone)


class Sender(Protocol):
    async def send(self, due: DueDelivery) -> AttemptResult:
        """Make one attempt. Never raises for a failure of the far side: it is the result."""
        ...
