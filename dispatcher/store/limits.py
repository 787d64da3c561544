"""How a store refuses work past a limit, in the same words whichever the dialect."""

from __future__ import annotations

from dispatcher.errors import Conflict, QueueFull


def check_queue(queued: int, limit: int) -> None:
    """QueueFull once `queued` jobs fill the queue's `limit`."""
    if queued >= limit:
        raise QueueFull(f"{queued} jobs are queued; the limit is {limit}")


def check_share(queued: int, share: int) -> None:
    """QueueFull once a tenant's `queued` jobs fill its `share` of the queue."""
    if queued >= share:
        raise QueueFull(f"this tenant has {queued} jobs queued; its share is {share}")


def check_endpoints(count: int, limit: int) -> None:
    """Conflict once a tenant has `limit` endpoints."""
    if count >= limit:
        raise Conflict(f"this tenant has {count} endpoints, the most it may have; delete one first")
