-- Server-side tables: per-workflow roles, encrypted secrets, triggers (webhooks, queue
-- consumers, cron schedules), the deliveries that make triggers replay-safe, and the audit log.
-- Written so that applying it twice is harmless (the server and the secrets CLI may create
-- these tables before the migration runner records this file).

CREATE TABLE IF NOT EXISTS nexusflow_roles (
    workflow_id  text NOT NULL,
    principal    text NOT NULL,          -- a Jupyter user name, or '*' for every user
    role         text NOT NULL CHECK (role IN ('viewer', 'runner', 'editor', 'owner')),
    granted_by   text,
    granted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, principal)
);

CREATE TABLE IF NOT EXISTS nexusflow_secrets (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,127}$'),
    ciphertext  bytea NOT NULL,           -- AES-256-GCM, the name as associated data
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text
);

CREATE TABLE IF NOT EXISTS nexusflow_webhooks (
    hook_id          text PRIMARY KEY,
    workflow_id      text NOT NULL,
    version          integer,             -- NULL: always the latest version
    auth             text NOT NULL CHECK (auth IN ('hmac', 'jwt')),
    secret           bytea NOT NULL,      -- encrypted HMAC secret or JWT verification key
    previous_secret  bytea,               -- still accepted during a rotation
    jwt_algorithm    text,
    jwt_audience     text,
    jwt_issuer       text,
    content_types    text[] NOT NULL DEFAULT ARRAY['application/json'],
    max_body_bytes   integer NOT NULL,
    rate_limit       integer NOT NULL,    -- requests per rate_window_s
    rate_window_s    integer NOT NULL,
    wait_s           real NOT NULL DEFAULT 0,
    enabled          boolean NOT NULL DEFAULT true,
    created_by       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS nexusflow_webhooks_workflow ON nexusflow_webhooks (workflow_id);

CREATE TABLE IF NOT EXISTS nexusflow_queue_triggers (
    trigger_id      text PRIMARY KEY,
    workflow_id     text NOT NULL,
    version         integer,
    stream          text NOT NULL,
    consumer_group  text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS nexusflow_queue_triggers_workflow
    ON nexusflow_queue_triggers (workflow_id);

-- One row per accepted delivery of a webhook (webhook-id, JWT jti) or a queue message id:
-- the primary key is what rejects a replay and what keeps a redelivered message to one run.
CREATE TABLE IF NOT EXISTS nexusflow_trigger_deliveries (
    trigger_id   text NOT NULL,
    delivery_id  text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    run_id       text,
    PRIMARY KEY (trigger_id, delivery_id)
);
CREATE INDEX IF NOT EXISTS nexusflow_trigger_deliveries_age
    ON nexusflow_trigger_deliveries (received_at);

CREATE TABLE IF NOT EXISTS nexusflow_schedules (
    schedule_id    text PRIMARY KEY,
    workflow_id    text NOT NULL,
    version        integer,
    cron           text NOT NULL,
    timezone       text NOT NULL DEFAULT 'UTC',
    inputs         jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled        boolean NOT NULL DEFAULT true,
    next_fire_at   timestamptz NOT NULL,
    last_fired_at  timestamptz,
    created_by     text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS nexusflow_schedules_due
    ON nexusflow_schedules (next_fire_at) WHERE enabled;

-- The unique (schedule, due time) pair is what makes a firing happen once across servers.
CREATE TABLE IF NOT EXISTS nexusflow_schedule_firings (
    schedule_id  text NOT NULL,
    fire_at      timestamptz NOT NULL,
    fired_at     timestamptz NOT NULL DEFAULT now(),
    fired_by     text,                    -- which server fired it
    run_id       text,
    PRIMARY KEY (schedule_id, fire_at)
);

CREATE TABLE IF NOT EXISTS nexusflow_audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text,
    action    text NOT NULL,
    resource  text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS nexusflow_audit_log_at ON nexusflow_audit_log (at DESC);
