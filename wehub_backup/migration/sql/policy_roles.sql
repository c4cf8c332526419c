-- One row per (policy, role) an RLS policy of the app schemas applies to. A policy cannot lose a
-- role without changing who it applies to, so a role missing on Supabase refuses the migration.
-- Used by: migration/checks.py. Placeholders: schemas.
SELECT format('policy %I on %s', p.polname, p.polrelid::regclass), pg_get_userbyid(r.role)
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  CROSS JOIN LATERAL unnest(p.polroles) AS r(role)
  WHERE n.nspname = ANY({schemas}::name[]) AND r.role <> 0 ORDER BY 1, 2
