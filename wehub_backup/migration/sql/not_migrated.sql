-- One row per object the migration leaves out and reports by name: (kind, name, reason).
-- Publication tables, casts on app functions, large objects: none belongs to a schema.
-- Used by: migration/checks.py; the rows go to the plan's left_out list (run metadata).
-- Placeholders: schemas = the app schemas migrated.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
SELECT 'publication table', format('%I: %s', p.pubname, r.prrelid::regclass),
       'publications are not migrated; add the table to a Supabase publication if it needs one'
  FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid
  WHERE c.relnamespace IN (SELECT oid FROM app)
UNION ALL
SELECT 'cast', format('%s AS %s', format_type(k.castsource, NULL), format_type(k.casttarget, NULL)),
       'casts are not part of a schema; create it on Supabase if it is needed'
  FROM pg_cast k JOIN pg_proc p ON p.oid = k.castfunc
  WHERE p.pronamespace IN (SELECT oid FROM app) AND (k.tableoid, k.oid) NOT IN (SELECT * FROM member)
UNION ALL
SELECT 'large objects', count(*)::text, 'large objects are not part of a schema'
  FROM pg_largeobject_metadata HAVING count(*) > 0
