-- Deleting a workflow releases the key it was filed under (a file path or a flow name, per
-- owner): a key never leads back to a deleted workflow, its versions and its runs (issue #13).
-- Release the keys that workflows deleted before this change still hold. Safe to apply twice.
UPDATE workflows SET key = NULL WHERE deleted_at IS NOT NULL AND key IS NOT NULL;
