"""The SQLite store's statements, named, in one place."""

ENSURE_TENANT = "INSERT OR IGNORE INTO tenants (name, secret, created_at) VALUES (?, ?, ?)"

INSERT_KEY = """
INSERT INTO api_keys (prefix, key_hash, tenant, admin, created_at) VALUES (?, ?, ?, ?, ?)
"""

# Newest first; the cursor is the last key shown (see rows.key_cursor).
LIST_KEYS = """
SELECT * FROM api_keys WHERE ?1 IS NULL OR (created_at, prefix) < (?1, ?2)
ORDER BY created_at DESC, prefix DESC LIMIT ?3
"""

TENANT_SECRETS = "SELECT secret, previous_secrets FROM tenants WHERE name = ?"

ROTATE_TENANT_SECRET = "UPDATE tenants SET secret = ?, previous_secrets = ? WHERE name = ?"

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

# With a lease, taken already: handed straight to a free delivery slot. An
# endpoint's delivery goes where the endpoint points as this commits, even if
# its URL changed while the job ended.
INSERT_DELIVERY = """
INSERT INTO deliveries (id, tenant, job_id, channel, target, endpoint_id, event_type, status,
                        next_attempt_at, created_at, body, host, lease_owner, lease_until)
VALUES (?1, ?2, ?3, ?4, coalesce((SELECT url FROM endpoints WHERE id = ?6), ?5), ?6, ?7,
        'pending', ?8, ?9, ?10, coalesce((SELECT host FROM endpoints WHERE id = ?6), ?11),
        ?12, ?13)
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
SELECT id, tenant, host, endpoint_id FROM (
    SELECT id, tenant, coalesce(host, '') AS host, endpoint_id, next_attempt_at FROM deliveries
    WHERE status = 'pending' AND next_attempt_at <= :now
      AND (lease_until IS NULL OR lease_until < :now)
    ORDER BY next_attempt_at {window}
)
WHERE tenant NOT IN (SELECT value FROM json_each(:skip_tenants))
  AND (tenant || char(31) || host) NOT IN (SELECT value FROM json_each(:skip_routes))
  AND coalesce(endpoint_id, '') NOT IN (SELECT value FROM json_each(:skip_endpoints))
ORDER BY next_attempt_at LIMIT :scan
"""
DUE_DELIVERIES = _DUE.format(window="")
DUE_DELIVERIES_IN_WINDOW = _DUE.format(window="LIMIT :window")

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

# Only its holder's record sets the state, or, if nobody holds it (released),
# the one next in its count (?7) of a delivery still pending; another's is only
# counted (see the PostgreSQL RECORD_ATTEMPT).
_OURS = """(?6 IS NULL OR lease_owner IS ?6
           OR (lease_owner IS NULL AND status = 'pending' AND attempt_count = ?7))"""
UPDATE_AFTER_ATTEMPT = f"""
UPDATE deliveries SET status = ?1, next_attempt_at = ?2, attempt_count = attempt_count + 1,
                      last_status_code = ?3, last_error = ?4, trigger = 'scheduled',
                      triggered_by = NULL, lease_owner = NULL, lease_until = NULL
WHERE id = ?5 AND {_OURS}
"""
COUNT_OTHERS_ATTEMPT = f"""
UPDATE deliveries SET attempt_count = attempt_count + 1 WHERE id = ?5 AND NOT {_OURS}
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
                      trigger = 'manual', triggered_by = ?2,
                      target = coalesce((SELECT url FROM endpoints e
                                         WHERE e.id = deliveries.endpoint_id), target),
                      host = coalesce((SELECT host FROM endpoints e
                                       WHERE e.id = deliveries.endpoint_id), host)
"""

REPLAY_ONE = _REPLAY_SET + "WHERE id = ?3 AND (?4 IS NULL OR tenant = ?4) RETURNING *"

# {where}: filters.replayable_where, the same for the replay and its dry run.
REPLAY_MANY = _REPLAY_SET + "WHERE {where}"
COUNT_DELIVERIES = "SELECT count(*) FROM deliveries WHERE {where}"

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

# Endpoints. A deleted endpoint keeps its row (marked), so that what is still
# on its way to it can say why it stops; it is gone for the API.

INSERT_ENDPOINT = """
INSERT INTO endpoints (id, tenant, url, host, description, headers, event_types, signature,
                       secret, rate_limit, max_in_flight, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
RETURNING *
"""

COUNT_TENANT_ENDPOINTS = "SELECT count(*) FROM endpoints WHERE tenant = ? AND deleted_at IS NULL"

GET_ENDPOINT = """
SELECT * FROM endpoints WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)
  AND (?3 OR deleted_at IS NULL)
"""

LIST_ENDPOINTS = """
SELECT * FROM endpoints WHERE deleted_at IS NULL AND (?1 IS NULL OR tenant = ?1)
  AND (?2 IS NULL OR id < ?2)
ORDER BY id DESC LIMIT ?3
"""

# What its attempts taught is forgotten when it is enabled again or points elsewhere.
RESET_ENDPOINT_HEALTH = """
UPDATE endpoints SET failing_since = NULL, circuit_since = NULL, circuit_probe_at = NULL,
                     circuit_probes = 0
WHERE id = ?
"""

ENABLE_ENDPOINT = "UPDATE endpoints SET disabled_reason = NULL, disabled_at = NULL WHERE id = ?"

DISABLE_ENDPOINT = """
UPDATE endpoints SET disabled_reason = ?1, disabled_at = ?2 WHERE id = ?3 AND disabled_at IS NULL
"""

DELETE_ENDPOINT = "UPDATE endpoints SET deleted_at = ?1, updated_at = ?1 WHERE id = ?2"

ROTATE_ENDPOINT_SECRET = """
UPDATE endpoints SET secret = ?, previous_secrets = ?, updated_at = ? WHERE id = ?
"""

# What an attempt taught of its endpoint. A disabling stays until the API lifts it.
UPDATE_ENDPOINT_HEALTH = """
UPDATE endpoints SET failing_since = ?1, circuit_since = ?2, circuit_probe_at = ?3,
                     circuit_probes = ?4, disabled_reason = coalesce(disabled_reason, ?5),
                     disabled_at = coalesce(disabled_at, ?6)
WHERE id = ?7 AND deleted_at IS NULL
"""

# Deliveries that may still be sent go where the endpoint now points.
MOVE_ENDPOINT_DELIVERIES = """
UPDATE deliveries SET target = ?1, host = ?2 WHERE endpoint_id = ?3 AND status != 'succeeded'
"""

# An endpoint disabled or deleted: what waits for it ends, saying why. Work in
# flight is left to its attempt, which records its own end.
FAIL_ENDPOINT_DELIVERIES = """
UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = ?1
WHERE endpoint_id = ?2 AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?3)
"""

# For the metrics, each count through an index of its own.
STATS_JOBS = """
SELECT type, 'queued' AS status, count(*) AS n FROM jobs WHERE status = 'queued' GROUP BY type
UNION ALL
SELECT type, 'running' AS status, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY type
"""
STATS_OLDEST_QUEUED = "SELECT min(run_at) FROM jobs WHERE status = 'queued' AND run_at <= ?"
STATS_DELIVERIES = """
SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM deliveries WHERE status = 'failed')
"""
STATS_ENDPOINTS = """
SELECT coalesce(sum(disabled_at IS NOT NULL), 0), coalesce(sum(circuit_since IS NOT NULL), 0)
FROM endpoints WHERE deleted_at IS NULL
"""
