"""SQLite schema, as numbered migrations applied in order and recorded."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, keys, jobs, deliveries, attempts
    """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        previous_secret TEXT,
        previous_until REAL,
        created_at REAL NOT NULL
    );
    CREATE TABLE api_keys (
        prefix TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL,
        tenant TEXT NOT NULL REFERENCES tenants(name),
        admin INTEGER NOT NULL,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        payload TEXT NOT NULL,
        result TEXT,
        error TEXT,
        callback_url TEXT,
        endpoint_id TEXT,
        notify TEXT,
        metadata TEXT,
        deadline REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        retries INTEGER NOT NULL DEFAULT 0,
        run_at REAL NOT NULL,
        lease_owner TEXT,
        lease_until REAL,
        idempotency_key TEXT,
        request_hash TEXT,
        event_body BLOB
    );
    CREATE INDEX jobs_queued ON jobs (run_at) WHERE status = 'queued';
    CREATE INDEX jobs_running ON jobs (lease_until) WHERE status = 'running';
    CREATE INDEX jobs_deadline ON jobs (deadline) WHERE status = 'queued' AND deadline IS NOT NULL;
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_tenant ON jobs (tenant, id);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        target TEXT NOT NULL,
        endpoint_id TEXT,
        event_type TEXT NOT NULL,
        status TEXT NOT NULL,
        attempt_count INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_status_code INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        schedule_start INTEGER NOT NULL DEFAULT 0,
        trigger TEXT NOT NULL DEFAULT 'scheduled',
        triggered_by TEXT,
        lease_owner TEXT,
        lease_until REAL
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX deliveries_job ON deliveries (job_id);
    CREATE INDEX deliveries_tenant ON deliveries (tenant, id);
    CREATE TABLE attempts (
        delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        error TEXT,
        response_body TEXT,
        trigger TEXT NOT NULL,
        by TEXT,
        PRIMARY KEY (delivery_id, number)
    ) WITHOUT ROWID;
    """,
    # 2: a delivery may carry its own body (a notice that a job's callback failed
    # is not the job's event), else it sends its job's event body.
    """
    ALTER TABLE deliveries ADD COLUMN body BLOB;
    """,
    # 3: where a delivery goes (a webhook's host:port, or the channel), so that
    # claiming can pass over hosts that already have their share in flight.
    """
    ALTER TABLE deliveries ADD COLUMN host TEXT;
    """,
    # 4: how often a job or delivery was taken up again after its lease lapsed
    # (its process died, or its task did), so that one that keeps doing so is
    # failed instead of being retried forever; each tenant's queued jobs,
    # counted for its share of the queue.
    """
    ALTER TABLE jobs ADD COLUMN lapses INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN lapses INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_tenant_queued ON jobs (tenant) WHERE status = 'queued';
    """,
    # 5: registered endpoints, with the health their attempts leave (disabled,
    # failing since, circuit) kept on the row; secrets rotated out keep signing
    # for their grace, several at once.
    """
    CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        url TEXT NOT NULL,
        host TEXT NOT NULL,
        description TEXT,
        headers TEXT NOT NULL,
        event_types TEXT,
        signature TEXT NOT NULL,
        secret TEXT NOT NULL,
        previous_secrets TEXT,
        rate_limit INTEGER,
        max_in_flight INTEGER,
        disabled_reason TEXT,
        disabled_at REAL,
        failing_since REAL,
        circuit_since REAL,
        circuit_probe_at REAL,
        circuit_probes INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deleted_at REAL
    );
    CREATE INDEX endpoints_tenant ON endpoints (tenant, id) WHERE deleted_at IS NULL;
    CREATE INDEX deliveries_endpoint_pending ON deliveries (endpoint_id)
        WHERE status = 'pending' AND endpoint_id IS NOT NULL;
    ALTER TABLE tenants ADD COLUMN previous_secrets TEXT;
    UPDATE tenants SET previous_secrets = json_array(json_array(previous_secret, previous_until))
        WHERE previous_secret IS NOT NULL AND previous_until IS NOT NULL;
    """,
    # 6: a table that stays empty: readiness writes a page to it and takes it
    # back, proving that the file can be written, not only read; failed
    # deliveries counted for the metrics without reading them all.
    """
    CREATE TABLE write_probe (data BLOB);
    CREATE INDEX deliveries_failed ON deliveries (id) WHERE status = 'failed';
    """,
)
