-- A DO block run in the migration's transaction after the app's objects are created: it revokes
-- what Supabase's default privileges granted (anon and authenticated on every new table in public),
-- so each object ends with exactly the grants it had on the VPS, which the next script applies.
-- Used by: migration/scripts.py (reset_privileges_sql). Placeholders: schemas, kept.
DO $wehub$ DECLARE statement text; BEGIN
  FOREACH statement IN ARRAY ARRAY(
    SELECT DISTINCT format('REVOKE ALL ON %s %s FROM %s', o.kind, o.name,
                           CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
    FROM (
      SELECT c.tableoid, c.oid, CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
             c.oid::regclass::text AS name, c.relacl AS acl,
             acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner) AS initial
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY({schemas}::name[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relacl IS NOT NULL
      UNION ALL SELECT p.tableoid, p.oid, 'ROUTINE', p.oid::regprocedure::text, p.proacl, acldefault('f', p.proowner)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = ANY({schemas}::name[]) AND p.proacl IS NOT NULL
      UNION ALL SELECT t.tableoid, t.oid, 'TYPE', format_type(t.oid, NULL), t.typacl, acldefault('T', t.typowner)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = ANY({schemas}::name[]) AND t.typacl IS NOT NULL
      UNION ALL SELECT n.tableoid, n.oid, 'SCHEMA', quote_ident(n.nspname), n.nspacl, acldefault('n', n.nspowner)
        FROM pg_namespace n
        WHERE n.nspname = ANY({schemas}::name[]) AND n.nspname <> ALL({kept}::name[]) AND n.nspacl IS NOT NULL
    ) o CROSS JOIN LATERAL aclexplode(o.acl) a
    WHERE a.grantee NOT IN (SELECT i.grantee FROM aclexplode(o.initial) i)
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = o.tableoid AND e.objid = o.oid AND e.deptype = 'e'))
  LOOP EXECUTE statement; END LOOP;
END $wehub$;
