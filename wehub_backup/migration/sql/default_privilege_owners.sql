-- One row per (schema, role) whose ALTER DEFAULT PRIVILEGES the app schemas hold. Setting them on
-- Supabase needs membership in the role; otherwise they are left out and reported.
-- Used by: migration/checks.py. Placeholders: schemas.
SELECT DISTINCT n.nspname, pg_get_userbyid(d.defaclrole) FROM pg_default_acl d
  JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = ANY({schemas}::name[]) ORDER BY 1, 2
