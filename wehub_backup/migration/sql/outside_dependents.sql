-- One row per object OUTSIDE the replaced schemas on Supabase that depends on an object inside
-- them: (kind, objid, dependent, referenced, referenced_catalog, referenced identity). Dropping the
-- inside object with CASCADE would silently drop the dependent, so each row is recreated (kind
-- trigger or policy: a trigger on auth.users calling an app function, a policy on storage.objects
-- reading an app table), reported (kind publication), or refuses (kind other).
-- Used by: migration/checks.py, and migration/scripts.py, which re-checks inside the transaction.
-- Placeholders: schemas = the app schemas on Supabase, kept.
WITH replaced AS (SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
candidates(classid, objid) AS (
  SELECT 'pg_namespace'::regclass, oid FROM replaced WHERE nspname <> ALL({kept}::name[])
  UNION ALL SELECT 'pg_class'::regclass, oid FROM pg_class WHERE relnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc WHERE pronamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type WHERE typnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_constraint'::regclass, oid FROM pg_constraint WHERE connamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_collation'::regclass, oid FROM pg_collation WHERE collnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config WHERE cfgnamespace IN (SELECT oid FROM replaced)
  UNION ALL SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict WHERE dictnamespace IN (SELECT oid FROM replaced)
),
inside AS (
  SELECT * FROM candidates c WHERE NOT EXISTS (
    SELECT 1 FROM pg_depend e WHERE e.classid = c.classid AND e.objid = c.objid AND e.deptype = 'e')
),
dependents AS (
  SELECT DISTINCT d.classid, d.objid, d.refclassid, d.refobjid,
    CASE d.classid
      WHEN 'pg_class'::regclass THEN (SELECT relnamespace FROM pg_class WHERE oid = d.objid)
      WHEN 'pg_proc'::regclass THEN (SELECT pronamespace FROM pg_proc WHERE oid = d.objid)
      WHEN 'pg_type'::regclass THEN (SELECT typnamespace FROM pg_type WHERE oid = d.objid)
      WHEN 'pg_constraint'::regclass THEN (SELECT coalesce(c.relnamespace, k.connamespace) FROM pg_constraint k
                                           LEFT JOIN pg_class c ON c.oid = k.conrelid WHERE k.oid = d.objid)
      WHEN 'pg_rewrite'::regclass THEN (SELECT c.relnamespace FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                                        WHERE r.oid = d.objid)
      WHEN 'pg_trigger'::regclass THEN (SELECT c.relnamespace FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                                        WHERE t.oid = d.objid)
      WHEN 'pg_policy'::regclass THEN (SELECT c.relnamespace FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
                                       WHERE p.oid = d.objid)
      WHEN 'pg_attrdef'::regclass THEN (SELECT c.relnamespace FROM pg_attrdef a JOIN pg_class c ON c.oid = a.adrelid
                                        WHERE a.oid = d.objid)
      ELSE (SELECT n.oid FROM pg_namespace n WHERE n.nspname = (pg_identify_object(d.classid, d.objid, 0)).schema)
    END AS schema_oid
  FROM pg_depend d JOIN inside i ON i.classid = d.refclassid AND i.objid = d.refobjid
  WHERE d.deptype IN ('n', 'a') AND d.classid <> 'pg_default_acl'::regclass
    AND d.classid <> 'pg_cast'::regclass  -- a cast of the app's types goes with them; the VPS's are recreated
)
SELECT CASE WHEN classid = 'pg_trigger'::regclass THEN 'trigger' WHEN classid = 'pg_policy'::regclass THEN 'policy'
            WHEN classid IN ('pg_publication_rel'::regclass, 'pg_publication_namespace'::regclass) THEN 'publication'
            ELSE 'other' END AS kind,
       objid, pg_describe_object(classid, objid, 0) AS dependent,
       pg_describe_object(refclassid, refobjid, 0) AS referenced,
       refclassid::regclass::text AS referenced_catalog, (pg_identify_object(refclassid, refobjid, 0)).identity
  FROM dependents WHERE schema_oid IS NULL OR schema_oid NOT IN (SELECT oid FROM replaced)
  ORDER BY 3, 4
