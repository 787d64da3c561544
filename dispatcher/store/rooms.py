"""How many deliveries a claim may take of each route and endpoint, in both dialects.

A claim reads the oldest due rows (a few times what it may take) and chooses
from them in Python: the choice, a running count per route and per
endpoint, is the same for SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Due rows read per row a claim may take.
SCAN_FACTOR = 4


@dataclass(slots=True)
class Rooms:
    """How many more deliveries a claim may take of each route, and of each endpoint."""

    routes: dict[tuple[str, str], int]
    per_route: int | None
    endpoints: dict[str, int]

    def choose(self, rows: list[Any], limit: int) -> list[str]:
        """The ids of the oldest rows, at most each route's and each endpoint's room."""
        chosen: list[str] = []
        for row in rows:
            route = (row["tenant"], row["host"])
            left = self.routes.get(route, self.per_route if self.per_route is not None else limit)
            endpoint = row["endpoint_id"]
            if left <= 0 or (endpoint is not None and self.endpoints.get(endpoint, 1) <= 0):
                continue
            self.routes[route] = left - 1
            if endpoint in self.endpoints:
                self.endpoints[endpoint] -= 1
            chosen.append(row["id"])
            if len(chosen) == limit:
                break
        return chosen
