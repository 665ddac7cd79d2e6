-- Retention (issue #14, item 4): `nexusflow prune` and the service's daily pass find old runs
-- by when they ended (top-level runs only: children go with their parent). The maintenance
-- table says when a periodic task last ran, so that one replica of the service runs it per
-- interval. Safe to apply twice.

CREATE INDEX IF NOT EXISTS executions_ended ON executions (ended_at)
    WHERE parent_run IS NULL AND ended_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS nexusflow_schedule_firings_age
    ON nexusflow_schedule_firings (fired_at);

CREATE TABLE IF NOT EXISTS nexusflow_maintenance (
    task      text PRIMARY KEY,
    last_run  timestamptz NOT NULL,
    last_by   text,
    result    jsonb
);
