-- DROPPED ON SUPABASE. One row per top-level object of the given schemas on Supabase:
-- (schema, type, identity, owner). empty_schemas_sql (migration/scripts.py) runs
-- DROP <type> IF EXISTS <identity> CASCADE for every row, inside the migration's one transaction;
-- with overwrite off, any row refuses the migration, in the plan and again inside the transaction.
-- Not rows: extension members (they stay), and objects owned by another object (an identity column's
-- sequence goes with its table). A subquery: callers add ORDER BY or wrap it.
-- Used by: migration/checks.py (what an overwrite would replace, and its owners) and migration/scripts.py.
-- Placeholders: schemas = the app schemas that exist on Supabase.
SELECT n.nspname AS schema, o.type, o.identity,
       coalesce((SELECT relowner FROM pg_class WHERE d.classid = 'pg_class'::regclass AND oid = d.objid),
                (SELECT proowner FROM pg_proc WHERE d.classid = 'pg_proc'::regclass AND oid = d.objid),
                (SELECT typowner FROM pg_type WHERE d.classid = 'pg_type'::regclass AND oid = d.objid)) AS owner
  FROM pg_depend d JOIN pg_namespace n ON n.oid = d.refobjid
  CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, 0) o
  WHERE d.refclassid = 'pg_namespace'::regclass AND d.deptype = 'n' AND n.nspname = ANY({schemas}::name[])
    AND d.classid <> 'pg_extension'::regclass
    AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid
                    AND e.deptype IN ('e', 'a', 'i'))
