-- One row per role that owns app objects in the VPS database. The migration restores without
-- owners, so on Supabase the login owns them all; the plan reports the roles replaced.
-- Used by: migration/checks.py. Placeholders: schemas, kept = schemas emptied but never dropped, extension_made.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS ({extension_made})
SELECT DISTINCT pg_get_userbyid(o.owner) FROM (
  SELECT tableoid, oid, relowner AS owner FROM pg_class WHERE relnamespace IN (SELECT oid FROM app)
  UNION ALL SELECT tableoid, oid, proowner FROM pg_proc WHERE pronamespace IN (SELECT oid FROM app)
  UNION ALL SELECT tableoid, oid, typowner FROM pg_type WHERE typnamespace IN (SELECT oid FROM app)
  UNION ALL SELECT tableoid, oid, nspowner FROM pg_namespace
    WHERE oid IN (SELECT oid FROM app) AND nspname <> ALL({kept}::name[])
) o WHERE (o.tableoid, o.oid) NOT IN (SELECT * FROM member) ORDER BY 1
