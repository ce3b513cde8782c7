-- name: create_import
-- Register an upload (its chunks follow in the same transaction); returns the new import's id.
-- $1 tenant, $2 kind, $3 format, $4 options, $5 filename, $6 actor.
INSERT INTO imports (tenant_id, kind, format, options, filename, actor, bytes_total, lines_total, sha256)
VALUES ($1, $2, $3, $4, $5, $6, 1, 0, '\x')
RETURNING id;

-- name: add_import_chunk
-- Store one chunk of an upload. $2 import id, $3 sequence number (from 0), $4 bytes.
INSERT INTO import_chunks (tenant_id, import_id, seq, data) VALUES ($1, $2, $3, $4);

-- name: seal_import
-- Record an upload's size, line count, digest and file name ($6, known late for multipart uploads)
-- once every chunk is stored.
UPDATE imports SET bytes_total = $3, lines_total = $4, sha256 = $5, filename = coalesce($6, filename),
                   updated_at = now()
WHERE tenant_id = $1 AND id = $2;

-- name: import_chunk
-- One stored chunk of an upload (NULL past the end).
SELECT data FROM import_chunks WHERE tenant_id = $1 AND import_id = $2 AND seq = $3;

-- name: import_tenant
-- The tenant settings an import needs to normalise addresses and apply the soft-bounce rule.
SELECT default_region, soft_bounce_suppress_days, require_notice_version FROM tenants WHERE id = $1;

-- name: import_by_id
-- One import with its progress.
SELECT id, kind, format, options, filename, actor, status, bytes_total, lines_total, bytes_done,
       lines_done, rows_done, rows_unchanged, rows_failed, error, created_at, started_at, updated_at,
       finished_at
FROM imports WHERE tenant_id = $1 AND id = $2;

-- name: import_errors_page
-- An import's errors in file order, at most $3 of them after ordinal $4.
SELECT ordinal, line, message, raw FROM import_errors
WHERE tenant_id = $1 AND import_id = $2 AND ordinal > $4
ORDER BY ordinal
LIMIT $3;

-- name: add_import_errors
-- Record the rows of one batch that could not be imported (a re-run batch records nothing twice).
-- $3..$6 parallel arrays of ordinal, line, message, raw text.
INSERT INTO import_errors (tenant_id, import_id, ordinal, line, message, raw)
SELECT $1, $2, o, l, m, r FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[]) AS e(o, l, m, r)
ON CONFLICT (tenant_id, import_id, ordinal) DO NOTHING;

-- name: claim_import
-- Take the lease on an unfinished import unless another runner holds a live one; counts the claim as
-- a stall until a batch commits. $3 lease token, $4 lease length. No row: finished or taken.
UPDATE imports
SET lease_token = $3, lease_until = now() + $4::interval, stalls = stalls + 1,
    status = 'running', started_at = coalesce(started_at, now()), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')
  AND (lease_until IS NULL OR lease_until < now())
RETURNING kind, format, options, actor, bytes_total, bytes_done, lines_done, rows_done, rows_unchanged,
          rows_failed, stalls;

-- name: checkpoint_import
-- Move the checkpoint past one batch and renew the lease, inside the batch's transaction; no row
-- means the lease was lost (the batch must roll back). $3 token, $4 lease length, $5 bytes done,
-- $6 lines done, $7..$9 rows done, unchanged, failed in this batch.
UPDATE imports
SET bytes_done = $5, lines_done = $6, rows_done = rows_done + $7, rows_unchanged = rows_unchanged + $8,
    rows_failed = rows_failed + $9, stalls = 0, lease_until = now() + $4::interval, updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND status = 'running'
RETURNING bytes_done;

-- name: release_import
-- Give the lease back (end of a time slice, or a failed attempt with its error message).
UPDATE imports SET lease_token = NULL, lease_until = NULL, error = coalesce($4, error), updated_at = now()
WHERE tenant_id = $1 AND id = $2 AND lease_token = $3;

-- name: finish_import
-- Mark an import done or failed and drop its stored upload (its personal data is not kept).
-- $3 token (NULL: regardless of the lease), $4 status, $5 error.
WITH done AS (
    UPDATE imports
    SET status = $4, error = coalesce($5, error), lease_token = NULL, lease_until = NULL,
        finished_at = now(), updated_at = now()
    WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')
      AND ($3::text IS NULL OR lease_token = $3)
    RETURNING id
), dropped AS (
    DELETE FROM import_chunks WHERE tenant_id = $1 AND import_id IN (SELECT id FROM done)
    RETURNING 1
)
SELECT (SELECT count(*) FROM done) AS finished, (SELECT count(*) FROM dropped) AS chunks_dropped;

-- name: stalled_imports
-- Unfinished imports no runner holds and nobody touched since $1 (lost enqueue, killed worker).
SELECT tenant_id, id, bytes_done FROM imports
WHERE status IN ('queued', 'running') AND (lease_until IS NULL OR lease_until < now()) AND updated_at < $1
ORDER BY updated_at
LIMIT $2;
