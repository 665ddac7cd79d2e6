-- Flow control (issue #20): nodes that wait without a worker (sub-flows, approvals, external
-- callbacks), child runs, runs queued behind a flow's max_active_runs, and pools.
-- Safe to apply twice.

-- A node that waits for something outside the worker (a child run, a decision, a callback)
-- is 'waiting': it holds no worker and no lease; resume_state says what it waits for, due_at
-- when it times out (if ever).
ALTER TABLE node_runs DROP CONSTRAINT IF EXISTS node_runs_state_check;
ALTER TABLE node_runs ADD CONSTRAINT node_runs_state_check CHECK (state IN (
    'pending', 'queued', 'running', 'scheduled', 'waiting',
    'succeeded', 'failed', 'skipped', 'canceled'));

-- A run beyond its flow's max_active_runs is 'queued' until one of the flow's runs ends.
ALTER TABLE executions DROP CONSTRAINT IF EXISTS executions_status_check;
ALTER TABLE executions ADD CONSTRAINT executions_status_check CHECK (status IN (
    'queued', 'running', 'succeeded', 'failed', 'canceled'));

-- A child run (a sub-flow) names the node of the parent run that waits for it; ``subflows``
-- pins, per node of this run that calls a sub-flow, the workflow version it runs (resolved
-- when the run started, with its own sub-flows nested); ``depth`` counts the parents.
ALTER TABLE executions ADD COLUMN IF NOT EXISTS parent_run uuid;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS parent_node text;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS parent_item integer;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS depth integer NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS subflows jsonb;
CREATE INDEX IF NOT EXISTS executions_parent ON executions (parent_run, parent_node)
    WHERE parent_run IS NOT NULL;
CREATE INDEX IF NOT EXISTS executions_queued ON executions (workflow_id, created_at)
    WHERE status = 'queued';

-- A wait node's resume token, by its SHA-256 only (the token itself is never stored): one
-- row while the node waits; the callback that uses it deletes it.
CREATE TABLE IF NOT EXISTS nexusflow_resume_tokens (
    token_sha256  text PRIMARY KEY,
    execution_id  uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    node_id       text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS nexusflow_resume_tokens_node
    ON nexusflow_resume_tokens (execution_id, node_id);

-- Pools bound how many nodes run in them at once, across all runs. A pooled node waits as
-- 'queued' on the pseudo-queue 'pool' (no run job claims it) until it is granted a slot: its
-- queue becomes ``pool_queue`` (the node type's queue). Slots in use are counted from the
-- node rows, so a slot comes back when its node ends, however it ends.
CREATE TABLE IF NOT EXISTS nexusflow_pools (
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$'),
    size         integer NOT NULL CHECK (size >= 0),
    description  text,
    updated_by   text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE node_runs ADD COLUMN IF NOT EXISTS pool text;
ALTER TABLE node_runs ADD COLUMN IF NOT EXISTS pool_queue text;
CREATE INDEX IF NOT EXISTS node_runs_pool ON node_runs (pool, state)
    WHERE pool IS NOT NULL;
