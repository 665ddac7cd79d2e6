-- The notebook debug loop (issue #15): which flow version each node of a run ran with (a
-- retry may resume a run with the flow's current version), results served from the cache or
-- from a pinned output, the options a run was started with, the history of a run's updates,
-- and one-node tests run by workers outside any run. Safe to apply twice.

-- The version of the workflow a node ran (or will run) with; NULL: the run's own version
-- (executions.version), which is what every node of a run never updated has.
ALTER TABLE node_runs ADD COLUMN IF NOT EXISTS version integer;
-- A keyed hash of what a node with a `cache` field ran on (type, config with its secrets
-- resolved, code, inputs, params): never a secret value. Set on the nodes that really ran.
ALTER TABLE node_runs ADD COLUMN IF NOT EXISTS cache_key text;
-- {run_id, node_id} of the result this node was served from the cache.
ALTER TABLE node_runs ADD COLUMN IF NOT EXISTS cached_from jsonb;
-- The node's pinned output was used instead of running it (a run started with pins).
ALTER TABLE node_runs ADD COLUMN IF NOT EXISTS pinned boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS node_runs_cache ON node_runs (cache_key, ended_at DESC)
    WHERE cache_key IS NOT NULL AND state = 'succeeded';

ALTER TABLE node_logs ADD COLUMN IF NOT EXISTS cached_from jsonb;
ALTER TABLE node_logs ADD COLUMN IF NOT EXISTS pinned boolean NOT NULL DEFAULT false;

-- How a run was started: {"use_pins": true} (pinned outputs stand in for their nodes),
-- {"cache": false} (never served from the cache).
ALTER TABLE executions ADD COLUMN IF NOT EXISTS options jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Each time a finished run was resumed with another version of its flow.
CREATE TABLE IF NOT EXISTS run_updates (
    execution_id  uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    from_version  integer NOT NULL,
    to_version    integer NOT NULL,
    from_node     text,
    rerun         text[] NOT NULL,      -- the nodes that run again with to_version
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text,
    PRIMARY KEY (execution_id, seq)
);

-- One node run by a worker outside any run ("Test node", Flow.test): what it got, how it
-- ended. Masked like a run's record; never part of a run.
CREATE TABLE IF NOT EXISTS node_tests (
    id            uuid PRIMARY KEY,
    workflow_id   uuid,                 -- the workflow the node belongs to, when filed
    source        text,                 -- the flow file it came from, when known
    node_id       text NOT NULL,
    node          jsonb NOT NULL,       -- the node as tested (the document's entry)
    inputs        jsonb NOT NULL DEFAULT '{}'::jsonb,
    params        jsonb NOT NULL DEFAULT '{}'::jsonb,
    secret_names  text[] NOT NULL DEFAULT '{}',
    from_run      uuid,                 -- the run whose recorded inputs were used
    status        text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    output        jsonb,
    error         text,
    log           text,
    worker        text,
    duration_ms   double precision,
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    ended_at      timestamptz
);
CREATE INDEX IF NOT EXISTS node_tests_recent ON node_tests (created_at);
