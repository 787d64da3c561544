"""The PostgreSQL store's statements, named, in one place.

They say what SQLite's do (see sqlite/queries.py), with three differences.
A lease's end is compared with the database's clock, CLOCK, never with an
instance's: instances on one database may disagree about the time, but not
about whose lease has lapsed. Claims lock what they take with FOR UPDATE
SKIP LOCKED, so instances claiming at once pass over each other's rows
instead of waiting for them or taking them twice. Lists travel as arrays.
"""

# The database's clock in epoch seconds, as leases are written: the start of the
# transaction, so one claim compares every lease with the same instant.
CLOCK = "date_part('epoch', now())"

# The time as it is now, later in a transaction that may have waited for a lock.
WALL_CLOCK = "date_part('epoch', clock_timestamp())"

# Tenants and keys

ENSURE_TENANT = """
INSERT INTO tenants (name, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING
"""

INSERT_KEY = """
INSERT INTO api_keys (prefix, key_hash, tenant, admin, created_at) VALUES ($1, $2, $3, $4, $5)
"""

FIND_KEY = "SELECT * FROM api_keys WHERE prefix = $1"

# Newest first; the cursor is the last key shown (see rows.key_cursor).
LIST_KEYS = """
SELECT * FROM api_keys WHERE $1::float8 IS NULL OR (created_at, prefix) < ($1, $2::text)
ORDER BY created_at DESC, prefix DESC LIMIT $3
"""

REVOKE_KEY = "DELETE FROM api_keys WHERE prefix = $1"

TOUCH_KEY = "UPDATE api_keys SET last_used_at = $1 WHERE prefix = $2"

COUNT_KEYS = "SELECT count(*) FROM api_keys"

TENANT_SECRETS = "SELECT secret, previous_secrets FROM tenants WHERE name = $1"

# Locked while the new secrets are worked out: two instances rotating at once
# would otherwise each drop the secret the other just put in front.
TENANT_SECRETS_TO_ROTATE = TENANT_SECRETS + " FOR UPDATE"

ROTATE_TENANT_SECRET = "UPDATE tenants SET secret = $1, previous_secrets = $2 WHERE name = $3"

# Jobs

FIND_IDEMPOTENT = "SELECT id, request_hash FROM jobs WHERE tenant = $1 AND idempotency_key = $2"

# Both counts in one pass over the queued jobs' index.

# Queued, or (with a lease) running already: handed straight to a free worker.
# A key taken meanwhile by another instance's job inserts nothing: the caller
# then reads that job instead.
# A job and the room for it, in one statement (one round trip, no BEGIN and
# COMMIT): the tenant's queued jobs are counted, and all queued jobs (up to the
# limit) only if $18 asks (see jobs._QueueTotal), and the job is inserted only if both
# are below their limits ($16, $17) and its idempotency key is free. The one
# row answered carries both counts (the total 0 when not counted), and the job
# if it was inserted (its id NULL otherwise). Queued, or (with a lease) running
# already: $15 is the lease's length, its end the database's clock.
SUBMIT_JOB = f"""
WITH room AS (
    SELECT CASE WHEN $18::boolean
                THEN (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'queued'
                                            LIMIT $16) AS queued)
                ELSE 0 END AS queued_total,
           (SELECT count(*) FROM jobs WHERE status = 'queued' AND tenant = $2) AS queued_mine
), added AS (
    INSERT INTO jobs (id, tenant, type, status, payload, callback_url, endpoint_id, notify,
                      metadata, deadline, created_at, run_at, idempotency_key, request_hash,
                      lease_owner, lease_until, started_at)
    SELECT $1::text, $2::text, $3::text,
           CASE WHEN $14::text IS NULL THEN 'queued' ELSE 'running' END,
           $4::text, $5::text, $6::text, $7::text, $8::text, $9::float8, $10::float8,
           $11::float8, $12::text, $13::text, $14::text, {CLOCK} + $15::float8,
           CASE WHEN $14::text IS NULL THEN NULL ELSE $10::float8 END
    FROM room WHERE room.queued_total < $16 AND room.queued_mine < $17
    ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
)
SELECT room.queued_total, room.queued_mine, added.* FROM room LEFT JOIN added ON TRUE
"""

GET_JOB = "SELECT * FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"

JOB_DELIVERIES = "SELECT * FROM deliveries WHERE job_id = $1 ORDER BY id"

JOBS_DELIVERIES = "SELECT * FROM deliveries WHERE job_id = ANY($1::text[]) ORDER BY id"

# The WHERE is built from filters.jobs_where; {limit} is the placeholder after its parameters.
LIST_JOBS = "SELECT * FROM jobs WHERE {where} ORDER BY id DESC LIMIT {limit}"

# Due work, oldest due first: a queued job is due at its run_at, a running one
# whose lease ran out (by the database's clock) at its lease's end, so that
# work lost this way is run again in its turn. Each branch reads its own
# index in order and locks what it reads, passing over rows another claim
# holds; what is locked beyond the `limit` taken is let go at the commit.
# Each lapse is counted: a job that keeps losing its worker is failed.
CLAIM_JOBS = f"""
WITH queued AS (
    SELECT id, run_at AS due FROM jobs
    WHERE status = 'queued' AND run_at <= $3 AND tenant <> ALL($5::text[])
    ORDER BY run_at LIMIT $4
    FOR UPDATE SKIP LOCKED
), lapsed AS (
    SELECT id, lease_until AS due FROM jobs
    WHERE status = 'running' AND lease_until < {CLOCK} AND tenant <> ALL($5::text[])
    ORDER BY lease_until LIMIT $4
    FOR UPDATE SKIP LOCKED
), chosen AS (
    SELECT id, due FROM queued UNION ALL SELECT id, due FROM lapsed
    ORDER BY due LIMIT $4
)
UPDATE jobs SET status = 'running', lapses = jobs.lapses + (jobs.status = 'running')::int,
                lease_owner = $1, lease_until = {CLOCK} + $2, started_at = $3
FROM chosen WHERE jobs.id = chosen.id
RETURNING jobs.*, chosen.due
"""

# Only the work in hand: a lease on work whose task died must lapse, so
# that the work is taken up again.
RENEW_JOB_LEASES = f"""
UPDATE jobs SET lease_until = {CLOCK} + $1
WHERE lease_owner = $2 AND id = ANY($3::text[]) AND status = 'running'
"""

RENEW_DELIVERY_LEASES = f"""
UPDATE deliveries SET lease_until = {CLOCK} + $1
WHERE lease_owner = $2 AND id = ANY($3::text[]) AND status = 'pending'
"""

# How a job ended and the deliveries it makes, in one statement (one round trip,
# no BEGIN and COMMIT); nothing is written unless the guard holds. Deliveries
# come as arrays, one element each ($8…$16). An endpoint's delivery goes where
# the endpoint points as this commits, even if its URL changed while the job
# ended. Those with a lease ($15 its holder, $16 its length) are written taken:
# handed straight to a free delivery slot.
_FINISH = f"""
WITH done AS (
    UPDATE jobs SET status = $1, result = $2, error = $3, finished_at = $4, event_body = $5,
                    lease_owner = NULL, lease_until = NULL
    WHERE id = $6 AND {{guard}}
    RETURNING *
), added AS (
    INSERT INTO deliveries (id, tenant, job_id, channel, target, endpoint_id, event_type,
                            status, next_attempt_at, created_at, body, host, lease_owner,
                            lease_until)
    SELECT n.id, done.tenant, done.id, n.channel, coalesce(e.url, n.target), n.endpoint_id,
           n.event_type, 'pending', $4, $4, n.body, coalesce(e.host, n.host), n.lease_owner,
           {CLOCK} + n.lease_seconds
    FROM done
    CROSS JOIN unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                      $13::bytea[], $14::text[], $15::text[], $16::float8[])
         AS n (id, channel, target, endpoint_id, event_type, body, host, lease_owner,
               lease_seconds)
    LEFT JOIN endpoints AS e ON e.id = n.endpoint_id
)
SELECT * FROM done
"""
FINISH_RUNNING_JOB = _FINISH.format(guard="status = 'running' AND lease_owner = $7")
FINISH_QUEUED_JOB = _FINISH.format(guard="status = 'queued' AND $7::text IS NULL")

REQUEUE_JOB = """
UPDATE jobs SET status = 'queued', run_at = $1, retries = retries + 1,
                lease_owner = NULL, lease_until = NULL
WHERE id = $2 AND lease_owner = $3 AND status = 'running'
"""

# Their run_at is left as it was: released work keeps its place in line.
RELEASE_JOBS = """
UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL
WHERE id = ANY($1::text[]) AND lease_owner = $2 AND status = 'running'
"""

EXPIRED_DEADLINES = """
SELECT * FROM jobs WHERE status = 'queued' AND deadline IS NOT NULL AND deadline < $1 LIMIT $2
"""

# Deliveries

# A delivery set off by another one: same tenant and job.
INSERT_FOLLOW_UP = """
INSERT INTO deliveries (id, tenant, job_id, channel, target, endpoint_id, event_type, status,
                        next_attempt_at, created_at, body, host)
SELECT $1::text, tenant, job_id, $2::text, $3::text, NULL, $4::text, 'pending', $5::float8,
       $6::float8, $7::bytea, $8::text
FROM deliveries WHERE id = $9
"""

# Due deliveries in the order they are due, for a claim to choose from (see
# PostgresDeliveries.claim_deliveries), locked, passing over those another
# claim holds. Each comes with its endpoint's limits when it has any and may
# be sent to: a claim counts those across instances. {window} bounds the
# look to the oldest $7 due rows, so a huge backlog to one busy receiver
# costs a claim no more than that: read as an array first, so that they are
# fetched by id rather than joined with every due row.
_DUE = f"""
SELECT d.id, d.tenant, coalesce(d.host, '') AS host, d.endpoint_id, d.next_attempt_at,
       e.rate_limit, e.max_in_flight
FROM deliveries AS d
LEFT JOIN endpoints AS e ON e.id = d.endpoint_id
    AND (e.rate_limit IS NOT NULL OR e.max_in_flight IS NOT NULL)
    AND e.disabled_at IS NULL AND e.deleted_at IS NULL
WHERE d.status = 'pending' AND d.next_attempt_at <= $1
  AND (d.lease_until IS NULL OR d.lease_until < {CLOCK})
  AND d.tenant <> ALL($2::text[])
  AND NOT EXISTS (SELECT 1 FROM unnest($3::text[], $4::text[]) AS route (tenant, host)
                  WHERE route.tenant = d.tenant AND route.host = coalesce(d.host, ''))
  AND coalesce(d.endpoint_id, '') <> ALL($5::text[])
  {{window}}
ORDER BY d.next_attempt_at LIMIT $6
FOR UPDATE OF d SKIP LOCKED
"""
DUE_DELIVERIES = _DUE.format(window="")
DUE_DELIVERIES_IN_WINDOW = _DUE.format(
    window=f"""AND d.id = ANY(ARRAY(
      SELECT id FROM deliveries
      WHERE status = 'pending' AND next_attempt_at <= $1
        AND (lease_until IS NULL OR lease_until < {CLOCK})
      ORDER BY next_attempt_at LIMIT $7))"""
)

# A lapsed lease (its process or task died mid-attempt) is counted, as for
# jobs. What sending needs of the job comes back in the same statement.
CLAIM_DELIVERIES = f"""
UPDATE deliveries AS d SET lease_owner = $1, lease_until = {CLOCK} + $2,
                           lapses = d.lapses + (d.lease_until IS NOT NULL)::int
FROM jobs AS j
WHERE d.id = ANY($3::text[]) AND j.id = d.job_id
RETURNING d.*, j.event_body AS job_event_body, j.deadline AS job_deadline,
          j.notify AS job_notify
"""

# Endpoint limits across instances. Each limited endpoint has a row here: its
# rate limit's token bucket, and the lock under which a claim counts what is
# in flight to it, so that two instances claiming at once count one after the
# other. No foreign key: endpoints are never deleted, only marked.
LOCK_ENDPOINT_TOKENS = f"""
SELECT endpoint_id, tokens, at, {WALL_CLOCK} AS now FROM endpoint_tokens
WHERE endpoint_id = ANY($1::text[])
ORDER BY endpoint_id
FOR UPDATE
"""

# A bucket starts full. Rows that exist are left alone, unlocked; one another
# claim is making is waited for. In the order of the ids, as every claim locks
# them: two claims never wait for each other both ways.
ADD_ENDPOINT_TOKENS = f"""
INSERT INTO endpoint_tokens (endpoint_id, tokens, at)
SELECT id, tokens, {WALL_CLOCK} FROM unnest($1::text[], $2::float8[]) AS t (id, tokens)
ORDER BY id
ON CONFLICT (endpoint_id) DO NOTHING
"""

SPEND_ENDPOINT_TOKENS = """
UPDATE endpoint_tokens AS b SET tokens = t.tokens, at = t.at
FROM unnest($1::text[], $2::float8[], $3::float8[]) AS t (id, tokens, at)
WHERE b.endpoint_id = t.id
"""

# Deliveries leased now, by any instance: attempts in flight to the endpoint,
# a range of deliveries_endpoint_pending however long its backlog.
ENDPOINTS_IN_FLIGHT = f"""
SELECT endpoint_id, count(*) AS n FROM deliveries
WHERE endpoint_id = ANY($1::text[]) AND status = 'pending' AND lease_until >= {CLOCK}
GROUP BY endpoint_id
"""

# An attempt and the state it leaves its delivery in, in one statement (one
# round trip, no BEGIN and COMMIT). The row is locked first: two instances that
# both tried a delivery (its lease ran out mid-attempt) number their attempts
# apart. The attempt is always written and counted; the state only by its
# holder ($9), or, if nobody holds it (released), by the attempt that comes
# next in its count ($12: the count it was made after) of a delivery still
# pending: once another instance has taken the delivery, or recorded an
# attempt of it, a late record leaves what follows to that one. Answers
# whether the state was set.
RECORD_ATTEMPT = """
WITH before AS (
    SELECT id, attempt_count,
           ($9::text IS NULL OR lease_owner IS NOT DISTINCT FROM $9
            OR (lease_owner IS NULL AND status = 'pending' AND attempt_count = $12::integer))
               AS ours
    FROM deliveries WHERE id = $1 FOR UPDATE
), added AS (
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,
                          response_body, trigger, "by")
    SELECT b.id, b.attempt_count + 1, $2::float8, $3::integer, $4::integer, $5::text,
           $6::text, $7::text, $8::text
    FROM before AS b
)
UPDATE deliveries AS d SET
    attempt_count = d.attempt_count + 1,
    status = CASE WHEN b.ours THEN $10::text ELSE d.status END,
    next_attempt_at = CASE WHEN b.ours THEN $11::float8 ELSE d.next_attempt_at END,
    last_status_code = CASE WHEN b.ours THEN $4::integer ELSE d.last_status_code END,
    last_error = CASE WHEN b.ours THEN $5::text ELSE d.last_error END,
    trigger = CASE WHEN b.ours THEN 'scheduled' ELSE d.trigger END,
    triggered_by = CASE WHEN b.ours THEN NULL ELSE d.triggered_by END,
    lease_owner = CASE WHEN b.ours THEN NULL ELSE d.lease_owner END,
    lease_until = CASE WHEN b.ours THEN NULL ELSE d.lease_until END
FROM before AS b WHERE d.id = b.id
RETURNING b.ours
"""

# Deliveries handed back unsent: their leases go, and the tokens their claim
# spent go back to their endpoints' buckets (locked in id order, as claims lock
# them), so a delivery held back here does not eat into its endpoint's rate.
RELEASE_DELIVERIES = """
WITH released AS (
    UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
    WHERE id = ANY($1::text[]) AND lease_owner = $2
    RETURNING endpoint_id
), refunds AS (
    SELECT endpoint_id, count(*) AS n FROM released
    WHERE endpoint_id IS NOT NULL GROUP BY endpoint_id
), locked AS (
    SELECT t.endpoint_id FROM endpoint_tokens AS t
    WHERE t.endpoint_id IN (SELECT endpoint_id FROM refunds)
    ORDER BY t.endpoint_id
    FOR UPDATE
)
UPDATE endpoint_tokens AS t SET tokens = t.tokens + r.n
FROM refunds AS r
WHERE t.endpoint_id = r.endpoint_id AND t.endpoint_id IN (SELECT endpoint_id FROM locked)
"""

GET_DELIVERY = "SELECT * FROM deliveries WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"

ATTEMPTS = "SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY number"

# The WHERE is built from filters.deliveries_where; {limit} follows its parameters.
LIST_DELIVERIES = "SELECT * FROM deliveries WHERE {where} ORDER BY id DESC LIMIT {limit}"

# A finished delivery is sent again with the whole schedule (which starts
# after the attempts made so far); a pending one is tried now, and the rest
# of its schedule goes on from there. A pending delivery's lease is left
# alone: if it is in flight, that attempt is the one made now.
_REPLAY_SET = """
UPDATE deliveries AS d
SET status = 'pending', next_attempt_at = $1,
    schedule_start = CASE d.status WHEN 'pending' THEN d.schedule_start ELSE d.attempt_count END,
    trigger = 'manual', triggered_by = $2,
    target = coalesce((SELECT e.url FROM endpoints AS e WHERE e.id = d.endpoint_id), d.target),
    host = coalesce((SELECT e.host FROM endpoints AS e WHERE e.id = d.endpoint_id), d.host)
"""

# What a bulk replay, and its dry run, select beyond the filter: finished
# deliveries, none to an endpoint that is disabled or deleted.
# A replay holds its jobs' rows (FOR KEY SHARE) until it commits: a purge that
# runs meanwhile (its FOR UPDATE SKIP LOCKED) passes over them, rather than
# deleting a job whose delivery the replay is making pending again.
_KEEP_ONE = """
WITH kept AS (
    SELECT j.id FROM jobs AS j
    WHERE j.id = (SELECT x.job_id FROM deliveries AS x WHERE x.id = $3)
    FOR KEY SHARE
)
"""
REPLAY_ONE = (
    _KEEP_ONE
    + _REPLAY_SET
    + "WHERE d.id = $3 AND ($4::text IS NULL OR d.tenant = $4)"
    + " AND d.job_id IN (SELECT id FROM kept) RETURNING d.*"
)

# {where}'s parameters follow $1 and $2; the dry run counts the same {where} from $1.
REPLAY_MANY = (
    """
WITH kept AS (
    SELECT j.id FROM jobs AS j WHERE j.id IN (SELECT job_id FROM deliveries WHERE {where})
    FOR KEY SHARE
)
"""
    + _REPLAY_SET
    + "WHERE {where} AND d.job_id IN (SELECT id FROM kept)"
)
COUNT_REPLAYABLE = "SELECT count(*) FROM deliveries WHERE {where}"

# Jobs with a pending delivery (a replay in progress) are kept until it ends.
# Rows another instance is purging at the same moment are left to it. The
# chunk's ids are read as an array first, so each is deleted by its key
# rather than by a join with the whole table.
PURGE_JOBS = """
DELETE FROM jobs WHERE id = ANY(ARRAY(
    SELECT id FROM jobs AS j WHERE finished_at IS NOT NULL AND finished_at < $1
      AND NOT EXISTS (
          SELECT 1 FROM deliveries AS d WHERE d.job_id = j.id AND d.status = 'pending'
      )
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
))
"""

# Endpoints. A deleted endpoint keeps its row (marked), so that what is still
# on its way to it can say why it stops; it is gone for the API.

INSERT_ENDPOINT = """
INSERT INTO endpoints (id, tenant, url, host, description, headers, event_types, signature,
                       secret, rate_limit, max_in_flight, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
RETURNING *
"""

COUNT_TENANT_ENDPOINTS = """
SELECT count(*) FROM endpoints WHERE tenant = $1 AND deleted_at IS NULL
"""

GET_ENDPOINT = """
SELECT * FROM endpoints WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)
  AND ($3::boolean OR deleted_at IS NULL)
"""

# Locked while a new secret is worked out from the current ones.
ENDPOINT_TO_ROTATE = GET_ENDPOINT + " FOR UPDATE"

LIST_ENDPOINTS = """
SELECT * FROM endpoints WHERE deleted_at IS NULL AND ($1::text IS NULL OR tenant = $1)
  AND ($2::text IS NULL OR id < $2)
ORDER BY id DESC LIMIT $3
"""

# {assignments} are `column = $n` for columns named in endpoint_records.CHANGEABLE
# (and host, updated_at) only; {id} and {tenant} are the placeholders after them.
UPDATE_ENDPOINT = """
UPDATE endpoints SET {assignments}
WHERE id = {id} AND ({tenant}::text IS NULL OR tenant = {tenant}) AND deleted_at IS NULL
RETURNING id
"""

# What its attempts taught is forgotten when it is enabled again or points elsewhere.
RESET_ENDPOINT_HEALTH = """
UPDATE endpoints SET failing_since = NULL, circuit_since = NULL, circuit_probe_at = NULL,
                     circuit_probes = 0
WHERE id = $1
"""

ENABLE_ENDPOINT = "UPDATE endpoints SET disabled_reason = NULL, disabled_at = NULL WHERE id = $1"

DISABLE_ENDPOINT = """
UPDATE endpoints SET disabled_reason = $1, disabled_at = $2 WHERE id = $3 AND disabled_at IS NULL
"""

DELETE_ENDPOINT = "UPDATE endpoints SET deleted_at = $1, updated_at = $1 WHERE id = $2"

ROTATE_ENDPOINT_SECRET = """
UPDATE endpoints SET secret = $1, previous_secrets = $2, updated_at = $3 WHERE id = $4
"""

# What an attempt taught of its endpoint. A disabling stays until the API lifts it.
UPDATE_ENDPOINT_HEALTH = """
UPDATE endpoints SET failing_since = $1, circuit_since = $2, circuit_probe_at = $3,
                     circuit_probes = $4, disabled_reason = coalesce(disabled_reason, $5),
                     disabled_at = coalesce(disabled_at, $6)
WHERE id = $7 AND deleted_at IS NULL
"""

# Deliveries that may still be sent go where the endpoint now points.
MOVE_ENDPOINT_DELIVERIES = """
UPDATE deliveries SET target = $1, host = $2 WHERE endpoint_id = $3 AND status <> 'succeeded'
"""

# An endpoint disabled or deleted: what waits for it ends, saying why. Work in
# flight (its lease holding, by the database's clock) is left to its attempt,
# which records its own end.
FAIL_ENDPOINT_DELIVERIES = f"""
UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = $1
WHERE endpoint_id = $2 AND status = 'pending' AND (lease_until IS NULL OR lease_until < {CLOCK})
"""

# Stats, for the metrics, each count through an index of its own.

STATS_JOBS = """
SELECT type, 'queued' AS status, count(*) AS n FROM jobs WHERE status = 'queued' GROUP BY type
UNION ALL
SELECT type, 'running' AS status, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY type
"""
STATS_OLDEST_QUEUED = "SELECT min(run_at) FROM jobs WHERE status = 'queued' AND run_at <= $1"
STATS_DELIVERIES = """
SELECT (SELECT count(*) FROM deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM deliveries WHERE status = 'failed') AS failed
"""
STATS_ENDPOINTS = """
SELECT count(*) FILTER (WHERE disabled_at IS NOT NULL) AS disabled,
       count(*) FILTER (WHERE circuit_since IS NOT NULL) AS open
FROM endpoints WHERE deleted_at IS NULL
"""

# The connection

PING = "SELECT 1"

# A write that changes nothing, committed: the database takes writes now.
PROBE_WRITE = "UPDATE write_probe SET id = id"
