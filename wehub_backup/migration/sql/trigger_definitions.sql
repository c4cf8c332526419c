-- One row per trigger on a Supabase-managed table that calls an app function: its definition
-- (pg_get_triggerdef), enable state, and whether the login may recreate it (TRIGGER privilege).
-- Used by: migration/checks.py, to recreate the triggers after the restore. Placeholders: oids.
SELECT t.oid, pg_describe_object('pg_trigger'::regclass, t.oid, 0), pg_get_triggerdef(t.oid), t.tgenabled,
       format('%s %I', t.tgrelid::regclass, t.tgname), has_table_privilege(t.tgrelid, 'TRIGGER')
  FROM pg_trigger t WHERE t.oid = ANY({oids}::oid[]) ORDER BY 2
