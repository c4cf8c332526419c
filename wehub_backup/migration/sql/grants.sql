-- One row per (object, grantee) of the privileges the app schemas grant to roles. A grant to a
-- role Supabase lacks is left out and reported.
-- Used by: migration/checks.py. Placeholders: schemas, kept, extension_made.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS ({extension_made}),
acls(object, acl) AS (
  SELECT format('%s %s', CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
                WHEN 'm' THEN 'materialized view' ELSE 'table' END, c.oid::regclass), c.relacl
    FROM pg_class c WHERE c.relnamespace IN (SELECT oid FROM app) AND c.relacl IS NOT NULL
      AND (c.tableoid, c.oid) NOT IN (SELECT * FROM member)
  UNION ALL SELECT format('column %s.%I', c.oid::regclass, a.attname), a.attacl
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace IN (SELECT oid FROM app) AND a.attacl IS NOT NULL
  UNION ALL SELECT format('function %s', p.oid::regprocedure), p.proacl FROM pg_proc p
    WHERE p.pronamespace IN (SELECT oid FROM app) AND p.proacl IS NOT NULL
      AND (p.tableoid, p.oid) NOT IN (SELECT * FROM member)
  UNION ALL SELECT format('type %s', t.oid::regtype), t.typacl FROM pg_type t
    WHERE t.typnamespace IN (SELECT oid FROM app) AND t.typacl IS NOT NULL
      AND (t.tableoid, t.oid) NOT IN (SELECT * FROM member)
  UNION ALL SELECT format('schema %I', n.nspname), n.nspacl FROM pg_namespace n
    WHERE n.oid IN (SELECT oid FROM app) AND n.nspname <> ALL({kept}::name[]) AND n.nspacl IS NOT NULL
  UNION ALL SELECT format('default privileges of %I in schema %I', pg_get_userbyid(d.defaclrole), n.nspname),
                   d.defaclacl
    FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.oid IN (SELECT oid FROM app)
)
SELECT DISTINCT object, pg_get_userbyid(x.grantee) FROM acls, aclexplode(acl) x WHERE x.grantee <> 0 ORDER BY 1, 2
