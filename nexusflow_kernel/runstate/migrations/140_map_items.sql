-- Map nodes (issue #20): one row per expanded map node, one row per item.
--
-- A map node's own row in node_runs stays 'running' while its items run, with no lease of
-- its own (lease_until NULL: the reconciler leaves it alone); each item has its own state,
-- attempts and output here. Workers claim and record items in batches (one statement each),
-- so an item costs a fraction of a node; a batch's lease is one row of map_leases (renewed
-- as one row, so a renewal never rewrites the items it covers). The item that ends the map
-- finishes the map node in the same transaction. Safe to apply twice.

CREATE TABLE IF NOT EXISTS map_runs (
    execution_id  uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    idx           integer NOT NULL,     -- the map node's position in the plan
    attempt       integer NOT NULL,     -- the map node's attempt that expanded (or reopened) it
    token         text NOT NULL,        -- the map node's lease token while its items run
    state         text NOT NULL CHECK (state IN ('running', 'done')),
    queue         text NOT NULL DEFAULT 'default',  -- where its items run
    total         integer NOT NULL,
    running       integer NOT NULL DEFAULT 0,
    succeeded     integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,   -- items failed for good
    canceled      integer NOT NULL DEFAULT 0,
    concurrency   integer,              -- most items running at once (NULL: unbounded)
    stop          boolean NOT NULL DEFAULT false,  -- on_item_failure=fail and an item failed
    max_attempts  integer NOT NULL DEFAULT 1,
    touched_at    timestamptz NOT NULL DEFAULT clock_timestamp(),  -- last claim or record
    cache_key     text,                 -- the map node's cache key: its result serves others
    PRIMARY KEY (execution_id, idx)
);

CREATE TABLE IF NOT EXISTS map_items (
    execution_id  uuid NOT NULL,
    idx           integer NOT NULL,     -- the map node
    item          integer NOT NULL,     -- position in the items list (the output's order)
    state         text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed',
                                                 'canceled')),
    attempt       integer NOT NULL DEFAULT 1,   -- attempts ever made
    tries         integer NOT NULL DEFAULT 1,   -- attempts since the item was last (re)opened
    lease_token   text,                 -- the batch (map_leases) that holds it while it runs
    worker        text,
    due_at        timestamptz,          -- a retry waits until then
    value         jsonb,                -- the item itself
    output        jsonb,
    error         text,
    log           text,
    started_at    timestamptz,
    ended_at      timestamptz,
    duration_ms   double precision,
    PRIMARY KEY (execution_id, idx, item),
    FOREIGN KEY (execution_id, idx) REFERENCES map_runs (execution_id, idx) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS map_items_queued ON map_items (execution_id, idx, item)
    WHERE state = 'queued';

-- The lease of one claimed batch of items (all of one map): renewed while its items run,
-- deleted once they are all recorded; an expired one means its worker is gone.
CREATE TABLE IF NOT EXISTS map_leases (
    token         text PRIMARY KEY,
    execution_id  uuid NOT NULL,
    idx           integer NOT NULL,
    lease_until   timestamptz NOT NULL,
    worker        text,
    job           text,                 -- the RQ job that runs the batch
    FOREIGN KEY (execution_id, idx) REFERENCES map_runs (execution_id, idx) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS map_leases_until ON map_leases (lease_until);
CREATE INDEX IF NOT EXISTS map_leases_run ON map_leases (execution_id, idx);

-- Attempts of an item that did not succeed (a retried failure, a lost worker, the final
-- failure); the item's row holds its latest attempt, so a success costs no row here.
CREATE TABLE IF NOT EXISTS map_item_attempts (
    execution_id  uuid NOT NULL,
    idx           integer NOT NULL,
    item          integer NOT NULL,
    attempt       integer NOT NULL,
    status        text NOT NULL,
    error         text,
    log           text,
    worker        text,
    duration_ms   double precision,
    started_at    timestamptz,
    ended_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (execution_id, idx, item, attempt),
    FOREIGN KEY (execution_id, idx) REFERENCES map_runs (execution_id, idx) ON DELETE CASCADE
);
