-- Triggers and policies by OID, as statements that create them again. Placeholders: triggers, policies.
-- One row each:
-- kind, oid, description, table, name, statement, comment, roles (policies' roles, PUBLIC left out).
-- Read with an empty search_path, so every name in the statements is schema-qualified.
-- Used by migration/managed_tables.py for Supabase's own (return) and the VPS copy's (new project).
SELECT 'trigger', t.oid, pg_describe_object('pg_trigger'::regclass, t.oid, 0), t.tgrelid::regclass::text,
       t.tgname::text, pg_get_triggerdef(t.oid) || ';'
         || CASE WHEN t.tgenabled <> 'O' THEN format(E'\nALTER TABLE %s %s %I;', t.tgrelid::regclass,
              CASE t.tgenabled WHEN 'D' THEN 'DISABLE TRIGGER' WHEN 'R' THEN 'ENABLE REPLICA TRIGGER'
                               WHEN 'A' THEN 'ENABLE ALWAYS TRIGGER' END, t.tgname) ELSE '' END,
       obj_description(t.oid, 'pg_trigger'), ARRAY[]::text[]
  FROM pg_trigger t WHERE t.oid = ANY({triggers}::oid[])
UNION ALL
SELECT 'policy', p.oid, pg_describe_object('pg_policy'::regclass, p.oid, 0), p.polrelid::regclass::text,
       p.polname::text,
       format('CREATE POLICY %I ON %s AS %s FOR %s TO %s', p.polname, p.polrelid::regclass,
              CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
              CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
              (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', ')
                 FROM unnest(p.polroles) AS r))
         || coalesce(' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')', '')
         || coalesce(' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')', '') || ';',
       obj_description(p.oid, 'pg_policy'),
       ARRAY(SELECT pg_get_userbyid(r) FROM unnest(p.polroles) AS r WHERE r <> 0)
  FROM pg_policy p WHERE p.oid = ANY({policies}::oid[])
ORDER BY 3
