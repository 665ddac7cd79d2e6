-- JupyterHub teams: group-scoped secrets, the Hub identities the workers check them against,
-- and indexes for reading the audit log by who and what. Safe to apply twice.

-- A secret with scope groups may be read only by a run whose user is in one of them
-- (empty: any run). The worker checks it when it resolves the secret.
ALTER TABLE nexusflow_secrets ADD COLUMN IF NOT EXISTS scope_groups text[] NOT NULL DEFAULT '{}';

-- The groups of each user as the Hub last told a single-user server, written right before the
-- server starts (or retries, or replays) a run for that user; the worker reads the run's
-- created_by user's row here when a node asks for a group-scoped secret.
CREATE TABLE IF NOT EXISTS nexusflow_principals (
    name        text PRIMARY KEY,
    groups      text[] NOT NULL DEFAULT '{}',
    source      text NOT NULL DEFAULT 'hub',   -- 'hub' (JupyterHub user model) or 'local'
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS nexusflow_audit_log_actor ON nexusflow_audit_log (actor, id DESC);
CREATE INDEX IF NOT EXISTS nexusflow_audit_log_resource ON nexusflow_audit_log (resource, id DESC);
