"""The SQLite store's statements, named, in one place."""

ENSURE_TENANT = "INSERT OR IGNORE INTO tenants (name, secret, created_at) VALUES (?, ?, ?)"

INSERT_KEY = """
INSERT INTO api_keys (prefix, key_hash, tenant, admin, created_at) VALUES (?, ?, ?, ?, ?)
"""

LIST_KEYS = "SELECT rowid, * FROM api_keys {where} ORDER BY rowid DESC LIMIT ?"

TENANT_SECRETS = "SELECT secret, previous_secret, previous_until FROM tenants WHERE name = ?"

ROTATE_TENANT_SECRET = """
UPDATE tenants SET previous_secret = secret, previous_until = ?2, secret = ?1 WHERE name = ?3
"""

FIND_IDEMPOTENT = "SELECT id, request_hash FROM jobs WHERE tenant = ? AND idempotency_key = ?"

COUNT_QUEUED = "SELECT count(*) FROM jobs WHERE status = 'queued'"

COUNT_TENANT_QUEUED = "SELECT count(*) FROM jobs WHERE status = 'queued' AND tenant = ?"

# Queued, or (with a lease) running already: handed straight to a free worker.
INSERT_JOB = """
INSERT INTO jobs (id, tenant, type, status, payload, callback_url, endpoint_id, notify,
                  metadata, deadline, created_at, run_at, idempotency_key, request_hash,
                  lease_owner, lease_until, started_at)
VALUES (?1, ?2, ?3, CASE WHEN ?14 IS NULL THEN 'queued' ELSE 'running' END,
        ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
        CASE WHEN ?14 IS NULL THEN NULL ELSE ?10 END)
"""

GET_JOB = "SELECT * FROM jobs WHERE id = ? AND (? IS NULL OR tenant = ?)"

JOB_DELIVERIES = "SELECT * FROM deliveries WHERE job_id = ? ORDER BY id"

# Due work, oldest due first: a queued job is due at its run_at, a running one
# whose lease ran out (its process or task died) at its lease's end, so that
# work lost this way is run again in its turn, not ahead of everything. The
# compound ORDER BY is a merge of two index scans, whatever the backlog.
# Each lapse is counted: a job that keeps losing its worker is failed.
CLAIM_JOBS = """
UPDATE jobs SET status = 'running', lapses = lapses + (status = 'running'),
                lease_owner = ?1, lease_until = ?2, started_at = ?3
WHERE id IN (
    SELECT id FROM (
        SELECT id, run_at AS due FROM jobs
        WHERE status = 'queued' AND run_at <= ?3
          AND tenant NOT IN (SELECT value FROM json_each(?5))
        UNION ALL
        SELECT id, lease_until AS due FROM jobs
        WHERE status = 'running' AND lease_until < ?3
          AND tenant NOT IN (SELECT value FROM json_each(?5))
        ORDER BY due LIMIT ?4
    )
)
RETURNING *
"""

# Only the work in hand: a lease on work whose task died must lapse, so
# that the work is taken up again.
RENEW_JOB_LEASE = """
UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id = ? AND status = 'running'
"""

RENEW_DELIVERY_LEASE = """
UPDATE deliveries SET lease_until = ? WHERE lease_owner = ? AND id = ? AND status = 'pending'
"""

_FINISH = """
UPDATE jobs SET status = ?1, result = ?2, error = ?3, finished_at = ?4, event_body = ?5,
                lease_owner = NULL, lease_until = NULL
WHERE id = ?6 AND {guard}
RETURNING *
"""
FINISH_RUNNING_JOB = _FINISH.format(guard="status = 'running' AND lease_owner = ?7")
FINISH_QUEUED_JOB = _FINISH.format(guard="status = 'queued'")

REQUEUE_JOB = """
UPDATE jobs SET status = 'queued', run_at = ?, retries = retries + 1,
                lease_owner = NULL, lease_until = NULL
WHERE id = ? AND lease_owner = ? AND status = 'running'
"""

# Its run_at is left as it was: released work keeps its place in line.
RELEASE_JOB = """
UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL
WHERE id = ? AND lease_owner = ? AND status = 'running'
"""

EXPIRED_DEADLINES = """
SELECT * FROM jobs WHERE status = 'queued' AND deadline IS NOT NULL AND deadline < ? LIMIT ?
"""

# With a lease, taken already: handed straight to a free delivery slot.
INSERT_DELIVERY = """
INSERT INTO deliveries (id, tenant, job_id, channel, target, endpoint_id, event_type, status,
                        next_attempt_at, created_at, body, host, lease_owner, lease_until)
VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)
"""

# A delivery set off by another one: same tenant and job.
INSERT_FOLLOW_UP = """
INSERT INTO deliveries (id, tenant, job_id, channel, target, endpoint_id, event_type, status,
                        next_attempt_at, created_at, body, host)
SELECT ?, tenant, job_id, ?, ?, NULL, ?, 'pending', ?, ?, ?, ? FROM deliveries WHERE id = ?
"""

# Due deliveries in the order they are due, for a claim to choose from: it
# takes at most each route's room (see SQLiteDeliveries.claim_deliveries).
# Passing over a route reads its due rows; with a window, only the oldest
# ?5 due rows are looked at, so a huge backlog to one busy receiver costs a
# claim no more than that.
_DUE = """
SELECT id, tenant, host FROM (
    SELECT id, tenant, coalesce(host, '') AS host, next_attempt_at FROM deliveries
    WHERE status = 'pending' AND next_attempt_at <= ?1
      AND (lease_until IS NULL OR lease_until < ?1)
    ORDER BY next_attempt_at {window}
)
WHERE tenant NOT IN (SELECT value FROM json_each(?2))
  AND (tenant || char(31) || host) NOT IN (SELECT value FROM json_each(?3))
ORDER BY next_attempt_at LIMIT ?4
"""
DUE_DELIVERIES = _DUE.format(window="")
DUE_DELIVERIES_IN_WINDOW = _DUE.format(window="LIMIT ?5")

# A lapsed lease (its process or task died mid-attempt) is counted, as for jobs.
CLAIM_DELIVERIES = """
UPDATE deliveries SET lease_owner = ?1, lease_until = ?2,
                      lapses = lapses + (lease_until IS NOT NULL)
WHERE id IN (SELECT value FROM json_each(?3))
RETURNING *
"""
# Joins a tenant and a host in the routes a claim passes over; tenant names cannot hold it.
ROUTE_SEPARATOR = chr(31)

# The number is taken from the row, so two processes that both tried a
# delivery (its lease ran out mid-attempt) still number their attempts apart.
INSERT_ATTEMPT = """
INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,
                      response_body, trigger, by)
SELECT ?, attempt_count + 1, ?, ?, ?, ?, ?, ?, ? FROM deliveries WHERE id = ?
"""

UPDATE_AFTER_ATTEMPT = """
UPDATE deliveries SET status = ?, next_attempt_at = ?, attempt_count = attempt_count + 1,
                      last_status_code = ?, last_error = ?, trigger = 'scheduled',
                      triggered_by = NULL, lease_owner = NULL, lease_until = NULL
WHERE id = ?
"""

RELEASE_DELIVERY = """
UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?
"""

GET_DELIVERY = "SELECT * FROM deliveries WHERE id = ? AND (? IS NULL OR tenant = ?)"

ATTEMPTS = "SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number"

# A finished delivery is sent again with the whole schedule (which starts
# after the attempts made so far); a pending one is tried now, and the rest
# of its schedule goes on from there. A pending delivery's lease is left
# alone: if it is in flight, that attempt is the one made now.
_REPLAY_SET = """
UPDATE deliveries SET status = 'pending', next_attempt_at = ?1,
                      schedule_start = CASE status WHEN 'pending' THEN schedule_start
                                                   ELSE attempt_count END,
                      trigger = 'manual', triggered_by = ?2
"""

REPLAY_ONE = _REPLAY_SET + "WHERE id = ?3 AND (?4 IS NULL OR tenant = ?4) RETURNING *"

REPLAY_MANY = _REPLAY_SET + "WHERE status != 'pending' AND {where}"

# Jobs with a pending delivery (a replay in progress) are kept until it ends.
PURGE_JOBS = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?
      AND NOT EXISTS (
          SELECT 1 FROM deliveries WHERE job_id = jobs.id AND status = 'pending'
      )
    LIMIT 1000
)
"""
