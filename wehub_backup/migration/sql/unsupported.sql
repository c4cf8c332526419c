-- One row per app object of the VPS database that a non-superuser cannot create on Supabase:
-- an untrusted-language function; an operator class or family, a text search parser or template,
-- a base or shell type; a publication FOR ALL TABLES or FOR TABLES IN SCHEMA; a foreign table and
-- its server. Each row is one refusal line.
-- An aggregate's own language is always internal: what it runs are its support functions, which
-- are functions of their own (checked here when they are the app's; built-in ones Supabase has).
-- So are the constructors PostgreSQL makes along with a range type (they depend on it internally).
-- Used by: migration/checks.py (source problems), before anything changes.
-- Placeholders: schemas = the app schemas migrated, extension_made.
WITH app AS (SELECT oid FROM pg_namespace WHERE nspname = ANY({schemas}::name[])),
  member AS ({extension_made})
SELECT format('function %s is written in %s, which only a superuser can create', p.oid::regprocedure, l.lanname)
  FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
  WHERE p.pronamespace IN (SELECT oid FROM app) AND NOT l.lanpltrusted AND p.prokind <> 'a'
    AND (p.tableoid, p.oid) NOT IN (SELECT * FROM member)
    AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = p.tableoid AND i.objid = p.oid AND i.deptype = 'i')
UNION ALL
SELECT format('%s %s: only a superuser can create one, and the Supabase login is not a superuser', o.type, o.identity)
  FROM (SELECT tableoid, oid, opcnamespace AS ns FROM pg_opclass
        UNION ALL SELECT tableoid, oid, opfnamespace FROM pg_opfamily
        UNION ALL SELECT tableoid, oid, prsnamespace FROM pg_ts_parser
        UNION ALL SELECT tableoid, oid, tmplnamespace FROM pg_ts_template
        UNION ALL SELECT t.tableoid, t.oid, t.typnamespace FROM pg_type t
          WHERE (t.typtype = 'b' OR NOT t.typisdefined) AND t.typcategory <> 'A') s
  CROSS JOIN LATERAL pg_identify_object(s.tableoid, s.oid, 0) o
  WHERE s.ns IN (SELECT oid FROM app) AND (s.tableoid, s.oid) NOT IN (SELECT * FROM member)
UNION ALL
SELECT format('publication %I is FOR ALL TABLES or FOR TABLES IN SCHEMA, which only a superuser can create', p.pubname)
  FROM pg_publication p
  WHERE p.puballtables OR EXISTS (SELECT 1 FROM pg_publication_namespace s WHERE s.pnpubid = p.oid)
UNION ALL
SELECT format('foreign table %s needs foreign server %I, which a migration does not create', c.oid::regclass, s.srvname)
  FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid JOIN pg_foreign_server s ON s.oid = f.ftserver
  WHERE c.relnamespace IN (SELECT oid FROM app) AND (c.tableoid, c.oid) NOT IN (SELECT * FROM member)
ORDER BY 1
