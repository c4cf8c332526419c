-- Triggers and policies on the tables of the given schemas (parameter schemas): kind, oid, table, name.
-- Run on both servers by migration/managed_tables.py to find what the VPS copy has and Supabase lacks.
SELECT 'trigger', t.oid, t.tgrelid::regclass::text, t.tgname::text FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE NOT t.tgisinternal AND n.nspname = ANY(%(schemas)s)
UNION ALL
SELECT 'policy', p.oid, p.polrelid::regclass::text, p.polname::text FROM pg_policy p
  JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = ANY(%(schemas)s)
ORDER BY 3, 4, 1
