-- One row per publication of the VPS database that is not FOR ALL TABLES (those, and FOR TABLES IN
-- SCHEMA ones, are refused: unsupported.sql): its name, its CREATE PUBLICATION (with its comment),
-- and apart the migrated tables it publishes, with column lists and row filters, since a
-- publication Supabase already has can only take the tables.
-- Used by: migration/checks.py (plan_publications). Placeholders: schemas,
-- excluded = the tables not migrated, as schema.table.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[]))
SELECT p.pubname,
       format('CREATE PUBLICATION %I WITH (publish = %L, publish_via_partition_root = %s);', p.pubname,
              concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                        CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END),
              CASE WHEN p.pubviaroot THEN 'true' ELSE 'false' END)
         || coalesce(format(E'\nCOMMENT ON PUBLICATION %I IS %L;', p.pubname,
                            obj_description(p.oid, 'pg_publication')), ''),
       ARRAY(SELECT format('ALTER PUBLICATION %I ADD TABLE ONLY %s%s%s;', p.pubname, r.prrelid::regclass,
                           ' (' || (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                    FROM pg_attribute a WHERE a.attrelid = r.prrelid AND a.attnum = ANY(r.prattrs))
                                || ')',
                           ' WHERE (' || pg_get_expr(r.prqual, r.prrelid) || ')')
               FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE r.prpubid = p.oid AND n.oid IN (SELECT oid FROM app)
                 AND format('%s.%s', n.nspname, c.relname) <> ALL({excluded}::text[]) ORDER BY 1)
  FROM pg_publication p WHERE NOT p.puballtables ORDER BY 1
