-- Bulk imports as resumable jobs. The upload itself is kept in PostgreSQL (1 MiB bytea chunks) so
-- any worker on any machine can run it and nothing lives only in one process's memory; the chunks are
-- deleted when the import finishes (they hold personal data that erasure could not reach).
-- Progress is a checkpoint (bytes and lines consumed, row counts) written in the same transaction as
-- each batch's writes, so a batch re-run after a crash starts where the last commit ended and
-- never appends its events twice. A lease (token + expiry) keeps two workers off one import.

CREATE TABLE imports (
    tenant_id       integer NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    kind            text NOT NULL CHECK (kind IN ('suppressions', 'consents', 'customers')),
    format          text NOT NULL CHECK (format IN ('csv', 'ndjson', 'sendgrid', 'mailgun', 'ses')),
    options         jsonb NOT NULL DEFAULT '{}',
    filename        text CHECK (length(filename) <= 300),
    actor           text,
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    bytes_total     bigint NOT NULL CHECK (bytes_total > 0),
    lines_total     bigint NOT NULL,
    sha256          bytea NOT NULL,
    -- the checkpoint: input consumed by committed batches (always at a record boundary)
    bytes_done      bigint NOT NULL DEFAULT 0,
    lines_done      bigint NOT NULL DEFAULT 0,
    rows_done       bigint NOT NULL DEFAULT 0,
    rows_unchanged  bigint NOT NULL DEFAULT 0,
    rows_failed     bigint NOT NULL DEFAULT 0,
    -- claims since the last committed batch; too many means the import cannot make progress
    stalls          integer NOT NULL DEFAULT 0,
    lease_token     text,
    lease_until     timestamptz,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX imports_unfinished ON imports (updated_at) WHERE status IN ('queued', 'running');

CREATE TABLE import_chunks (
    tenant_id  integer NOT NULL,
    import_id  bigint NOT NULL,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (tenant_id, import_id, seq),
    FOREIGN KEY (tenant_id, import_id) REFERENCES imports (tenant_id, id) ON DELETE CASCADE
);
-- Stored as is: compressing 1 MiB chunks on upload costs more time than the space is worth here.
ALTER TABLE import_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Rows that could not be imported, with the line they start on; `ordinal` is the record's position
-- in the file (several records can share a line in a JSON document).
CREATE TABLE import_errors (
    tenant_id  integer NOT NULL,
    import_id  bigint NOT NULL,
    ordinal    bigint NOT NULL,
    line       bigint NOT NULL,
    message    text NOT NULL,
    raw        text,
    PRIMARY KEY (tenant_id, import_id, ordinal),
    FOREIGN KEY (tenant_id, import_id) REFERENCES imports (tenant_id, id) ON DELETE CASCADE
);
