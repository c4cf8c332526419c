-- What extensions made, as (classid, objid): their members, and what PostgreSQL made along with
-- those (only the pg_type row of an extension's composite type is a member, its relation depends
-- on it internally; so do the array types of its types).
-- Used by: the other queries, through their extension_made placeholder (migration/queries.py).
SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
UNION SELECT i.classid, i.objid FROM pg_depend i
  JOIN pg_depend e ON e.classid = i.refclassid AND e.objid = i.refobjid AND e.deptype = 'e'
  WHERE i.deptype = 'i'
