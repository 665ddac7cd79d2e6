-- A map of a flow (issue #20): each item is a child run; the item names it. Safe to apply twice.
ALTER TABLE map_items ADD COLUMN IF NOT EXISTS child_run uuid;
