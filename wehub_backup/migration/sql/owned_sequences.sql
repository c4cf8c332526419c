-- One row per sequence owned by a column of an app table: (schema, table, column, sequence,
-- increment). Verification checks each sequence lies beyond its column's values, or the next
-- insert would collide with a migrated row.
-- Used by: migration/verify.py. Placeholders: schemas.
SELECT n.nspname, c.relname, a.attname, sn.nspname || '.' || s.relname, q.seqincrement
  FROM pg_depend d
  JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_sequence q ON q.seqrelid = s.oid
  JOIN pg_class c ON c.oid = d.refobjid AND c.relkind IN ('r', 'p') JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid
  WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    AND n.nspname = ANY({schemas}::name[]) ORDER BY 1, 2, 3
