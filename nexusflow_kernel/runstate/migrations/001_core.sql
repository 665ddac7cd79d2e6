-- Core run-state tables: workflows and their immutable versions, executions (runs),
-- one row per node of a run (its state machine and lease), and one log row per attempt.

CREATE TABLE workflows (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    key         text UNIQUE,            -- where an ad-hoc flow came from (file path or name)
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    deleted_at  timestamptz
);

CREATE TABLE workflow_versions (
    workflow_id   uuid NOT NULL REFERENCES workflows (id),
    version       integer NOT NULL,
    name          text NOT NULL,
    graph_json    jsonb NOT NULL,       -- the exact canonical document that runs
    plan          jsonb NOT NULL,       -- topological order, parents, children
    content_hash  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    PRIMARY KEY (workflow_id, version)
);
CREATE INDEX workflow_versions_hash ON workflow_versions (workflow_id, content_hash);

CREATE TABLE executions (
    id           uuid PRIMARY KEY,
    workflow_id  uuid NOT NULL,
    version      integer NOT NULL,
    status       text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'canceled')),
    trigger      text NOT NULL DEFAULT 'manual',
    inputs       jsonb NOT NULL DEFAULT '{}'::jsonb,
    source       text,
    created_by   text,
    replay_of    uuid,
    dedupe_key   text UNIQUE,          -- a second start with the same key returns this run
    remaining    integer NOT NULL,      -- nodes not yet in a final state
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version)
);
CREATE INDEX executions_recent ON executions (created_at DESC);
CREATE INDEX executions_workflow ON executions (workflow_id, created_at DESC);
CREATE INDEX executions_source ON executions (source, created_at DESC);
CREATE INDEX executions_running ON executions (status) WHERE status = 'running';

CREATE TABLE node_runs (
    execution_id  uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    idx           integer NOT NULL,     -- position in the plan's order; names the RQ job
    node_id       text NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'queued', 'running', 'scheduled',
                                                 'succeeded', 'failed', 'skipped', 'canceled')),
    attempt       integer NOT NULL DEFAULT 0,   -- attempts ever made (names the RQ job)
    tries         integer NOT NULL DEFAULT 0,   -- attempts since the node was last (re)opened
    max_attempts  integer NOT NULL DEFAULT 1,
    queue         text NOT NULL DEFAULT 'default',
    lease_token   text,
    lease_until   timestamptz,
    worker        text,
    job           text,                 -- the RQ job that holds the node while it runs
    due_at        timestamptz,          -- when a scheduled node (retry wait, delay) may run
    enqueued_at   timestamptz,
    resume_state  jsonb,
    branch        text,                 -- the output handle a condition took
    n_parents     integer NOT NULL DEFAULT 0,  -- incoming edges
    n_done        integer NOT NULL DEFAULT 0,  -- incoming edges whose parent is final
    n_success     integer NOT NULL DEFAULT 0,  -- ... that succeeded on this edge's handle
    n_failed      integer NOT NULL DEFAULT 0,  -- ... whose parent failed or was canceled
    output        jsonb,
    error         text,
    started_at    timestamptz,
    ended_at      timestamptz,
    duration_ms   double precision,
    PRIMARY KEY (execution_id, idx),
    UNIQUE (execution_id, node_id)
);
CREATE INDEX node_runs_active ON node_runs (state, enqueued_at)
    WHERE state IN ('queued', 'running', 'scheduled');
CREATE INDEX node_runs_ready ON node_runs (execution_id, queue, idx) WHERE state = 'queued';

CREATE TABLE node_logs (
    id            bigserial PRIMARY KEY,
    execution_id  uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    node_id       text NOT NULL,
    attempt       integer NOT NULL,
    status        text NOT NULL,
    input         jsonb,
    output        jsonb,
    error         text,
    log           text,
    worker        text,
    duration_ms   double precision,
    started_at    timestamptz,
    ended_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (execution_id, node_id, attempt)
);
