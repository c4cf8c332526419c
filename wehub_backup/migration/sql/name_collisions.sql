-- One row per app object (relation, function, type, operator, operator class or family) named
-- like a member of an extension that lives in another schema on
-- Supabase (uuid_generate_v4 in public on the VPS, in extensions on Supabase). References are
-- rewritten by qualified name, so such an object could not be told apart: each row refuses.
-- Used by: migration/checks.py. Placeholders: schemas and names, pairwise; extension_made.
WITH member AS ({extension_made})
SELECT format('%s %I.%I', x.kind, n.nspname, x.name) FROM (
  SELECT tableoid, oid, relnamespace AS ns, relname AS name, 'relation' AS kind FROM pg_class
  UNION ALL SELECT tableoid, oid, pronamespace, proname, 'function' FROM pg_proc
  UNION ALL SELECT tableoid, oid, typnamespace, typname, 'type' FROM pg_type t
    WHERE t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_type a WHERE a.typarray = t.oid)
  UNION ALL SELECT tableoid, oid, oprnamespace, oprname, 'operator' FROM pg_operator
  UNION ALL SELECT tableoid, oid, opcnamespace, opcname, 'operator class' FROM pg_opclass
  UNION ALL SELECT tableoid, oid, opfnamespace, opfname, 'operator family' FROM pg_opfamily
) x JOIN pg_namespace n ON n.oid = x.ns
WHERE (n.nspname::text, x.name::text) IN (SELECT * FROM unnest({schemas}::text[], {names}::text[]))
  AND (x.tableoid, x.oid) NOT IN (SELECT * FROM member)
ORDER BY 1
