-- A one-node test runs in an environment, as a run does (issue #17 follow-up): its name and
-- the variables it had when the test was queued, so the worker resolves the node's variables,
-- secrets and connections there. Safe to apply twice.

ALTER TABLE node_tests ADD COLUMN IF NOT EXISTS env text;
ALTER TABLE node_tests ADD COLUMN IF NOT EXISTS env_vars jsonb NOT NULL DEFAULT '{}'::jsonb;
