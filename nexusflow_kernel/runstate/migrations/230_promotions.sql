-- Promotion (issue #17 item 2): which version of a workflow each environment runs. Every
-- promotion is kept (who, when, from which version); the newest row of (workflow, env) is the
-- version promoted there. Triggers bound to an environment (env set, version NULL) start that
-- version, never the latest draft. Safe to apply twice.

CREATE TABLE IF NOT EXISTS nexusflow_promotions (
    id                bigserial PRIMARY KEY,
    workflow_id       uuid NOT NULL,
    env               text NOT NULL,
    version           integer NOT NULL,
    previous_version  integer,
    promoted_by       text,
    promoted_at       timestamptz NOT NULL DEFAULT now(),
    note              text,
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version)
);
CREATE INDEX IF NOT EXISTS nexusflow_promotions_current
    ON nexusflow_promotions (workflow_id, env, id DESC);

ALTER TABLE nexusflow_webhooks ADD COLUMN IF NOT EXISTS env text;
ALTER TABLE nexusflow_schedules ADD COLUMN IF NOT EXISTS env text;
ALTER TABLE nexusflow_queue_triggers ADD COLUMN IF NOT EXISTS env text;
