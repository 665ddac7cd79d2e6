-- Headless triggers (issue #14, item 3): what a schedule does with the firings it missed while
-- no service ran. 'skip' (the default) runs none of them and moves on to the next time;
-- 'catch_up' runs the most recent ones, at most catch_up_limit, oldest first, each as its own
-- firing. skipped_firings counts the firings a schedule did not run (counted up to 1000 per
-- outage). Safe to apply twice.

ALTER TABLE nexusflow_schedules ADD COLUMN IF NOT EXISTS misfire text NOT NULL DEFAULT 'skip';
ALTER TABLE nexusflow_schedules DROP CONSTRAINT IF EXISTS nexusflow_schedules_misfire_check;
ALTER TABLE nexusflow_schedules ADD CONSTRAINT nexusflow_schedules_misfire_check
    CHECK (misfire IN ('skip', 'catch_up'));
ALTER TABLE nexusflow_schedules ADD COLUMN IF NOT EXISTS catch_up_limit integer NOT NULL
    DEFAULT 10 CHECK (catch_up_limit BETWEEN 1 AND 100);
ALTER TABLE nexusflow_schedules ADD COLUMN IF NOT EXISTS skipped_firings bigint NOT NULL
    DEFAULT 0;
