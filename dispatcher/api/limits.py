"""Bounds on what one tenant may hold of the API at once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from dispatcher.auth import Principal
from dispatcher.errors import TooManyRequests


class InProgress:
    """Requests in progress per tenant (streams and long-polls are held for long), bounded.

    Each holds a connection and a file descriptor: without a bound, one tenant
    opening streams by the thousand would leave none for anybody else. Admin
    keys are the operator's and are not counted.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._held: Counter[str] = Counter()

    @contextmanager
    def held(self, who: Principal) -> Iterator[None]:
        if who.admin:
            yield
            return
        if self._held[who.tenant] >= self._limit:
            raise TooManyRequests(
                f"this tenant has {self._limit} requests in progress (streams and long-polls "
                "included), its limit; close some and try again"
            )
        self._held[who.tenant] += 1
        try:
            yield
        finally:
            self._held[who.tenant] -= 1
            if not self._held[who.tenant]:
                del self._held[who.tenant]
