"""The Store interface: the only code that touches the database implements it.

Everything above the store (worker, deliverer, API) depends on this class,
never on a database driver, so a PostgreSQL store can stand in for SQLite.
Writes that the API acknowledges are committed before the call returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence

from dispatcher.store.endpoint_records import Endpoint, EndpointChanges, NewEndpoint
from dispatcher.store.feed import ChangeFeed, LocalFeed
from dispatcher.store.records import (
    ApiKey,
    AttemptRecord,
    Delivery,
    DeliveryFilter,
    DueDelivery,
    Job,
    JobFilter,
    Lease,
    NewJob,
    Outcome,
    Page,
)
from dispatcher.store.signing import SigningSecrets
from dispatcher.store.stats import StoreStats


class Store(ABC):
    # Whether several instances may use this store at once (their limits shared through it).
    shared = False

    def change_feed(self) -> ChangeFeed:
        """The feed that tells every instance on this store what another changed
        (the store is open). One process per store: only itself to tell."""
        return LocalFeed()

    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date; StartupError if the database cannot
        be opened (its message names where, never a password)."""

    @abstractmethod
    async def close(self) -> None:
        """Let go of the database once every write handed to the store is committed."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot be reached."""

    @abstractmethod
    async def check_writable(self) -> None:
        """Commit a write that changes nothing; StoreUnavailable if the database cannot
        be written now (full, read-only, busy past its timeout)."""

    # Tenants and keys

    @abstractmethod
    async def create_key(self, key: ApiKey, tenant_secret: str) -> SigningSecrets:
        """Store a key; create its tenant with `tenant_secret` if the tenant is new."""

    @abstractmethod
    async def ensure_tenant(self, tenant: str, secret: str, now: float) -> None:
        """Create the tenant with `secret` unless it exists (then nothing changes)."""

    @abstractmethod
    async def find_key(self, prefix: str) -> ApiKey | None:
        """The key with this prefix, revoked keys being gone."""

    @abstractmethod
    async def list_keys(self, limit: int, before: str | None) -> Page:
        """Keys newest first, `limit` a page; `before` is a cursor this method handed out
        (rows.cursor_of_key), and the page's next_cursor leads on."""

    @abstractmethod
    async def revoke_key(self, prefix: str) -> bool:
        """Delete the key; whether there was one."""

    @abstractmethod
    async def touch_key(self, prefix: str, at: float) -> None:
        """Note that the key was used at `at` (its last_used_at)."""

    @abstractmethod
    async def count_keys(self) -> int:
        """How many keys there are (none: serve mints a first admin key)."""

    @abstractmethod
    async def tenant_secrets(self, tenant: str) -> SigningSecrets | None:
        """The tenant's signing secrets, current and rotated out; None for no such tenant."""

    @abstractmethod
    async def rotate_tenant_secret(
        self, tenant: str, new_secret: str, grace_until: float, now: float
    ) -> SigningSecrets:
        """Put `new_secret` in front; the one it replaces signs on until `grace_until`."""

    # Jobs

    @abstractmethod
    async def submit_job(
        self,
        job: NewJob,
        max_queue: int,
        tenant_share: int | None = None,
        lease: Lease | None = None,
    ) -> tuple[Job, bool]:
        """Insert a job; answer (job, True) once committed.

        With a `lease`, the job is written running, taken by its owner until
        then (work handed straight to a free worker), else queued. With an
        idempotency key already used by the tenant: (first job, False), or
        Conflict if the request differs; nothing is written. QueueFull past
        `max_queue` queued jobs, or past `tenant_share` of the tenant's own.
        """

    @abstractmethod
    async def get_job(self, job_id: str, tenant: str | None) -> Job | None:
        """The job with its deliveries' summaries, if it is `tenant`'s (any tenant's for None)."""

    @abstractmethod
    async def list_jobs(self, where: JobFilter) -> Page:
        """Jobs newest first as `where` selects them (filters.jobs_where), with their
        deliveries' summaries; the cursor is the last job's id."""

    @abstractmethod
    async def claim_jobs(
        self, owner: str, limit: int, now: float, lease: float, *, skip_tenants: Sequence[str] = ()
    ) -> list[Job]:
        """Take due queued jobs, and running jobs whose lease ran out, as `running`,
        oldest due first, passing over those of `skip_tenants` (their share is running)."""

    @abstractmethod
    async def renew_leases(
        self, owner: str, job_ids: list[str], delivery_ids: list[str], seconds: float
    ) -> None:
        """Extend `owner`'s leases on the jobs and deliveries it is working on now, to
        `seconds` from now by the store's clock."""

    @abstractmethod
    async def finish_job(
        self,
        job_id: str,
        owner: str | None,
        outcome: Outcome,
        lease: Lease | None = None,
        leased: frozenset[str] = frozenset(),
    ) -> Job | None:
        """Write how a job ended and create its deliveries, in one transaction.

        `owner` None finishes a job that is still queued (cancel, deadline);
        otherwise only the lease holder may. None when the guard fails, and
        then nothing is written. The deliveries whose ids are in `leased` are
        written taken under `lease` (handed straight to free delivery slots).
        """

    @abstractmethod
    async def requeue_job(self, job_id: str, owner: str, run_at: float) -> None:
        """Put `owner`'s running job back in the queue, due at `run_at`, counting a retry."""

    @abstractmethod
    async def release_jobs(self, owner: str, job_ids: list[str]) -> None:
        """Give running jobs back to the queue (graceful shutdown)."""

    @abstractmethod
    async def expired_deadlines(self, now: float, limit: int) -> list[Job]:
        """Up to `limit` queued jobs whose deadline is before `now` (to be cancelled)."""

    # Deliveries

    @abstractmethod
    async def claim_deliveries(
        self,
        owner: str,
        limit: int,
        now: float,
        lease: float,
        *,
        skip_tenants: Sequence[str] = (),
        skip_routes: Sequence[tuple[str, str]] = (),
        route_room: Mapping[tuple[str, str], int] | None = None,
        per_route: int | None = None,
        window: int | None = None,
        skip_endpoints: Sequence[str] = (),
        endpoint_room: Mapping[str, int] | None = None,
    ) -> list[DueDelivery]:
        """Take due deliveries, oldest due first, passing over those of `skip_tenants`
        and those whose (tenant, host) is in `skip_routes`: their share is in flight.

        At most `route_room[(tenant, host)]` of one route are taken, or
        `per_route` of a route not named there (no bound if None): a claim never
        takes more of a destination than could start, so none is handed back.
        With a `window`, only the `window` oldest due deliveries are considered
        (a bounded cost however large the backlog passed over); without, all.
        Deliveries to `skip_endpoints` are passed over, and at most
        `endpoint_room[id]` of an endpoint named there are taken (its rate
        limit, its in-flight limit, its open circuit).
        """

    @abstractmethod
    async def record_attempt(self, record: AttemptRecord) -> None:
        """Write an attempt and the delivery state it leaves, releasing the lease,
        with what it taught of the delivery's endpoint (a disabling ends what waits).

        The attempt is always written and counted. The state, the endpoint's
        health and the follow-ups only if the delivery is still `record.owner`'s
        (or nobody's): a late record never undoes what its new holder does."""

    @abstractmethod
    async def release_deliveries(self, owner: str, delivery_ids: list[str]) -> None:
        """Drop `owner`'s leases on these deliveries, leaving them due as they were."""

    @abstractmethod
    async def get_delivery(self, delivery_id: str, tenant: str | None) -> Delivery | None:
        """The delivery with every attempt, if it is `tenant`'s (any tenant's for None)."""

    @abstractmethod
    async def list_deliveries(self, where: DeliveryFilter) -> Page:
        """Deliveries newest first as `where` selects them (filters.deliveries_where),
        without attempts; the cursor is the last delivery's id."""

    @abstractmethod
    async def replay_delivery(
        self, delivery_id: str, tenant: str | None, by: str, now: float
    ) -> Delivery:
        """Send a finished delivery again, or try a pending one now (NotFound if none)."""

    @abstractmethod
    async def replay_deliveries(
        self, where: DeliveryFilter, by: str, now: float, dry_run: bool
    ) -> int:
        """Send again every finished delivery `where` selects whose endpoint (if any) is
        neither disabled nor deleted; how many. A dry run counts the very rows the
        replay would take (both select through filters.deliveries_where), writing nothing."""

    # Endpoints

    @abstractmethod
    async def create_endpoint(self, new: NewEndpoint, max_per_tenant: int) -> Endpoint:
        """Register it; Conflict, writing nothing, if its tenant has `max_per_tenant` already
        (several instances registering at one moment may pass it by one each)."""

    @abstractmethod
    async def get_endpoint(
        self, endpoint_id: str, tenant: str | None, *, deleted: bool = False
    ) -> Endpoint | None:
        """The endpoint (of `tenant`, unless None); a deleted one only if `deleted`."""

    @abstractmethod
    async def list_endpoints(self, tenant: str | None, limit: int, before: str | None) -> Page:
        """Endpoints not deleted, newest first, of `tenant` (all for None); the cursor is
        the last one's id."""

    @abstractmethod
    async def update_endpoint(
        self, endpoint_id: str, tenant: str | None, changes: EndpointChanges, now: float
    ) -> Endpoint | None:
        """Apply a change; a new URL moves the deliveries that may still be sent with it,
        a disabling ends those waiting. None if there is no such endpoint."""

    @abstractmethod
    async def delete_endpoint(self, endpoint_id: str, tenant: str | None, now: float) -> bool:
        """Delete it and fail its pending deliveries, saying so."""

    @abstractmethod
    async def rotate_endpoint_secret(
        self, endpoint_id: str, tenant: str | None, new_secret: str, grace_until: float, now: float
    ) -> Endpoint | None:
        """Put `new_secret` in front; those it replaces sign on until `grace_until`.
        None if there is no such endpoint (of `tenant`)."""

    @abstractmethod
    async def stats(self, now: float) -> StoreStats:
        """Counts for the metrics: queued and running jobs by type, the oldest due
        queued job, pending and failed deliveries, disabled endpoints and open circuits."""

    @abstractmethod
    def observe_commits(self, callback: Callable[[int], None]) -> None:
        """Call `callback` with the number of writes of each commit (group commit)."""

    @abstractmethod
    async def purge(self, finished_before: float) -> int:
        """Delete finished jobs (with deliveries and attempts) older than the cutoff."""
