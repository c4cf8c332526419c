-- One row per app object of the VPS database that a non-superuser cannot create on Supabase:
-- an untrusted-language function, a foreign table and its server. Each row is one refusal line.
-- Used by: migration/checks.py (source problems), before anything changes.
-- Placeholders: schemas = the app schemas migrated.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
SELECT format('function %s is written in %s, which only a superuser can create', p.oid::regprocedure, l.lanname)
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
  WHERE p.pronamespace IN (SELECT oid FROM app) AND NOT l.lanpltrusted
    AND (p.tableoid, p.oid) NOT IN (SELECT * FROM member)
UNION ALL
SELECT format('foreign table %s needs foreign server %I, which a migration does not create', c.oid::regclass, s.srvname)
  FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid JOIN pg_foreign_server s ON s.oid = f.ftserver
  WHERE c.relnamespace IN (SELECT oid FROM app) AND (c.tableoid, c.oid) NOT IN (SELECT * FROM member)
ORDER BY 1
