-- One row per cast of the VPS database (not built-in, not an extension's, not one a range type
-- makes for its multirange): pg_dump --schema leaves casts out, the migration recreates them.
-- Row: (name, statements, binary-coercible, one of its types is an app type, the archive entries
-- it needs as (catalog OID, object OID) pairs: its function; its types, or the tables whose row
-- types they are).
-- Used by: migration/checks.py (plan_casts). Placeholders: schemas, extension_made.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS ({extension_made})
SELECT format('cast (%s AS %s)', format_type(k.castsource, NULL), format_type(k.casttarget, NULL)),
       format('CREATE CAST (%s AS %s) %s%s;', format_type(k.castsource, NULL), format_type(k.casttarget, NULL),
              CASE k.castmethod WHEN 'f' THEN 'WITH FUNCTION ' || k.castfunc::regprocedure::text
                                WHEN 'i' THEN 'WITH INOUT' ELSE 'WITHOUT FUNCTION' END,
              CASE k.castcontext WHEN 'a' THEN ' AS ASSIGNMENT' WHEN 'i' THEN ' AS IMPLICIT' ELSE '' END)
         || coalesce(format(E'\nCOMMENT ON CAST (%s AS %s) IS %L;', format_type(k.castsource, NULL),
                            format_type(k.casttarget, NULL), obj_description(k.oid, 'pg_cast')), ''),
       k.castmethod = 'b',
       EXISTS (SELECT 1 FROM pg_type t WHERE t.oid IN (k.castsource, k.casttarget)
               AND t.typnamespace IN (SELECT oid FROM app) AND (t.tableoid, t.oid) NOT IN (SELECT * FROM member)),
       ARRAY(SELECT ARRAY[a.classid, a.objid]::int8[] FROM (
               SELECT 'pg_proc'::regclass::oid AS classid, k.castfunc AS objid WHERE k.castfunc <> 0
               UNION ALL SELECT c.classid, c.objid
                 FROM pg_type e JOIN pg_type t
                   ON t.oid = CASE WHEN e.typcategory = 'A' AND e.typelem <> 0 THEN e.typelem ELSE e.oid END
                 CROSS JOIN LATERAL (VALUES ('pg_type'::regclass::oid, t.oid), ('pg_class'::regclass, t.typrelid))
                   c(classid, objid)
                 WHERE e.oid IN (k.castsource, k.casttarget)) a)
  FROM pg_cast k
  WHERE (k.tableoid, k.oid) NOT IN (SELECT * FROM member) AND k.oid >= 16384
    AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = k.tableoid AND i.objid = k.oid AND i.deptype = 'i')
ORDER BY 1
