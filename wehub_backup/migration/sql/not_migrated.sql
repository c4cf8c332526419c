-- One row per object the migration leaves out and reports by name: (kind, name, reason).
-- Large objects: they belong to no schema (casts and publications are recreated: casts.sql,
-- publications.sql).
-- Used by: migration/checks.py; the rows go to the plan's left_out list (run metadata).
SELECT 'large objects', count(*)::text, 'large objects are not part of a schema'
  FROM pg_largeobject_metadata HAVING count(*) > 0
