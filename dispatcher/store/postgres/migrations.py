"""PostgreSQL schema, as numbered migrations applied in order and recorded.

The tables and columns are SQLite's (sqlite/migrations.py) as its six
migrations left them, in the first migration here, with PostgreSQL's types:
times are `double precision` epoch seconds like SQLite's REAL, JSON is kept
as `text` (it comes back as the string the records parse), blobs are
`bytea`. Identifiers compare byte by byte (COLLATE "C"), as SQLite compares
them, so that "newest first" pages the same whatever the database's locale.

One index differs: an endpoint's pending deliveries are indexed with their
lease, so that a claim counts those in flight to it (its in-flight limit,
across instances) without reading its whole backlog.

Several instances may start at once on one database: each applies the
migrations under one advisory lock, in one transaction, so the first applies
them and the others find them applied.
"""

from __future__ import annotations

import asyncpg

# pg_advisory_xact_lock's key for migrating: "dispatch" in ASCII.
MIGRATION_LOCK = 7235441202855961448

LOCK = "SELECT pg_advisory_xact_lock($1)"
HAS_VERSIONS = "SELECT to_regclass('schema_version') IS NOT NULL"
CREATE_VERSIONS = "CREATE TABLE schema_version (version integer PRIMARY KEY)"
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_VERSION = "INSERT INTO schema_version (version) VALUES ($1)"

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, keys, jobs, deliveries, attempts, endpoints; the token buckets
    # that share endpoint limits between instances; the probe readiness writes.
    """
    CREATE TABLE tenants (
        name text COLLATE "C" PRIMARY KEY,
        secret text NOT NULL,
        previous_secrets text,
        created_at double precision NOT NULL
    );
    CREATE TABLE api_keys (
        prefix text COLLATE "C" PRIMARY KEY,
        key_hash text NOT NULL,
        tenant text COLLATE "C" NOT NULL REFERENCES tenants (name),
        admin boolean NOT NULL,
        created_at double precision NOT NULL,
        last_used_at double precision
    );
    CREATE INDEX api_keys_newest ON api_keys (created_at, prefix);
    CREATE TABLE jobs (
        id text COLLATE "C" PRIMARY KEY,
        tenant text COLLATE "C" NOT NULL,
        type text NOT NULL,
        status text NOT NULL,
        payload text NOT NULL,
        result text,
        error text,
        callback_url text,
        endpoint_id text COLLATE "C",
        notify text,
        metadata text,
        deadline double precision,
        created_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        retries integer NOT NULL DEFAULT 0,
        run_at double precision NOT NULL,
        lease_owner text,
        lease_until double precision,
        idempotency_key text,
        request_hash text,
        event_body bytea,
        lapses integer NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_queued ON jobs (run_at) WHERE status = 'queued';
    CREATE INDEX jobs_running ON jobs (lease_until) WHERE status = 'running';
    CREATE INDEX jobs_deadline ON jobs (deadline) WHERE status = 'queued' AND deadline IS NOT NULL;
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_tenant ON jobs (tenant, id);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX jobs_tenant_queued ON jobs (tenant) WHERE status = 'queued';
    CREATE TABLE deliveries (
        id text COLLATE "C" PRIMARY KEY,
        tenant text COLLATE "C" NOT NULL,
        job_id text COLLATE "C" NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        channel text NOT NULL,
        target text NOT NULL,
        endpoint_id text COLLATE "C",
        event_type text NOT NULL,
        status text NOT NULL,
        attempt_count integer NOT NULL DEFAULT 0,
        next_attempt_at double precision,
        last_status_code integer,
        last_error text,
        created_at double precision NOT NULL,
        schedule_start integer NOT NULL DEFAULT 0,
        trigger text NOT NULL DEFAULT 'scheduled',
        triggered_by text,
        lease_owner text,
        lease_until double precision,
        body bytea,
        host text,
        lapses integer NOT NULL DEFAULT 0
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_job ON deliveries (job_id);
    CREATE INDEX deliveries_tenant ON deliveries (tenant, id);
    CREATE INDEX deliveries_endpoint_pending ON deliveries (endpoint_id, lease_until)
        WHERE status = 'pending' AND endpoint_id IS NOT NULL;
    CREATE INDEX deliveries_failed ON deliveries (id) WHERE status = 'failed';
    CREATE TABLE attempts (
        delivery_id text COLLATE "C" NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        number integer NOT NULL,
        started_at double precision NOT NULL,
        duration_ms integer NOT NULL,
        status_code integer,
        error text,
        response_body text,
        trigger text NOT NULL,
        "by" text,
        PRIMARY KEY (delivery_id, number)
    );
    CREATE TABLE endpoints (
        id text COLLATE "C" PRIMARY KEY,
        tenant text COLLATE "C" NOT NULL,
        url text NOT NULL,
        host text NOT NULL,
        description text,
        headers text NOT NULL,
        event_types text,
        signature text NOT NULL,
        secret text NOT NULL,
        previous_secrets text,
        rate_limit integer,
        max_in_flight integer,
        disabled_reason text,
        disabled_at double precision,
        failing_since double precision,
        circuit_since double precision,
        circuit_probe_at double precision,
        circuit_probes integer NOT NULL DEFAULT 0,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        deleted_at double precision
    );
    CREATE INDEX endpoints_tenant ON endpoints (tenant, id) WHERE deleted_at IS NULL;
    CREATE TABLE endpoint_tokens (
        endpoint_id text COLLATE "C" PRIMARY KEY,
        tokens double precision NOT NULL,
        at double precision NOT NULL
    );
    CREATE TABLE write_probe (id integer PRIMARY KEY);
    INSERT INTO write_probe (id) VALUES (1);
    """,
)


# Seconds a migration may take, waiting for another instance's included: far
# past the pool's statement timeout, which is for the calls that serve requests.
MIGRATION_TIMEOUT = 3600.0


async def migrate(connection: asyncpg.Connection) -> int:
    """Apply the migrations not applied yet; the version the database was at."""
    async with connection.transaction():
        await connection.execute(LOCK, MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT)
        # Looked up before it is made: a database that is read-only for now
        # (failing over) opens if its schema is up to date, and answers reads.
        if not await connection.fetchval(HAS_VERSIONS):
            await connection.execute(CREATE_VERSIONS)
        current = int(await connection.fetchval(CURRENT_VERSION))
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await connection.execute(script, timeout=MIGRATION_TIMEOUT)
            await connection.execute(RECORD_VERSION, version)
    return current
