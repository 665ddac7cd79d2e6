-- node_runs: lead the unique node-name key with node_id, not execution_id.
--
-- With execution_id first, that key was a second index on execution_id alone, and the
-- planner, without statistics (a fresh database, a new table), often read every node of a
-- run through it instead of the primary key (execution_id, idx): each dependency decision
-- then cost O(nodes in the run), and a 10,000-node run slowed down as it went. Leading with
-- node_id keeps the uniqueness and the lookup by name, and leaves the primary key as the
-- only index that serves "nodes of this run by position". Safe to apply twice.
ALTER TABLE node_runs DROP CONSTRAINT IF EXISTS node_runs_execution_id_node_id_key;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'node_runs_node_key') THEN
        ALTER TABLE node_runs ADD CONSTRAINT node_runs_node_key UNIQUE (node_id, execution_id);
    END IF;
END $$;
