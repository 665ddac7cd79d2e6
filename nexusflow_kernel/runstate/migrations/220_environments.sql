-- Environments (issue #17 item 1): named environments with their variables and role grants;
-- a run runs in one of them. `dev` exists from the start and anyone may run in it; running in
-- a restricted environment needs a role on it. Safe to apply twice.

CREATE TABLE IF NOT EXISTS nexusflow_environments (
    name         text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    description  text,
    restricted   boolean NOT NULL DEFAULT true,   -- running in it needs a role on it
    vars         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text
);
INSERT INTO nexusflow_environments (name, description, restricted, created_by)
VALUES ('dev', 'the default environment', false, 'nexusflow') ON CONFLICT DO NOTHING;

-- runner: may run flows in the environment; deployer: also promotes versions to it and
-- changes its variables, secrets and connections. Principals as for workflow roles: a user,
-- '*', or 'group:<name>'.
CREATE TABLE IF NOT EXISTS nexusflow_env_roles (
    env         text NOT NULL REFERENCES nexusflow_environments (name) ON DELETE CASCADE,
    principal   text NOT NULL,
    role        text NOT NULL CHECK (role IN ('runner', 'deployer')),
    granted_by  text,
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env, principal)
);

-- The environment a run runs in, and its variables as they were when it started.
ALTER TABLE executions ADD COLUMN IF NOT EXISTS env text NOT NULL DEFAULT 'dev';
ALTER TABLE executions ADD COLUMN IF NOT EXISTS env_vars jsonb NOT NULL DEFAULT '{}'::jsonb;
