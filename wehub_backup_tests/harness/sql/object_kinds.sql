-- One object of every kind an application's owner (not a superuser) can create, after the CREATE
-- statements of PostgreSQL's own pg_dump test suite (src/bin/pg_dump/t/002_pg_dump.pl), with
-- rows in every table. Extension objects are named unqualified: the extensions live in
-- `extensions` on Supabase and in `public` on a VPS. Needs role regress_dump_test_role.
SET search_path = public, extensions;

CREATE SCHEMA kinds;
COMMENT ON SCHEMA kinds IS 'comment on schema';
GRANT USAGE ON SCHEMA kinds TO regress_dump_test_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA kinds GRANT SELECT ON TABLES TO regress_dump_test_role;

-- types, domains, collations, conversions, text search ------------------------------------
CREATE TYPE kinds.planets AS ENUM ('venus', 'earth', 'mars');
COMMENT ON TYPE kinds.planets IS 'comment on enum type';
GRANT USAGE ON TYPE kinds.planets TO regress_dump_test_role;
CREATE TYPE kinds.textrange AS RANGE (subtype = text, collation = "C");
COMMENT ON TYPE kinds.textrange IS 'comment on range type';
CREATE TYPE kinds.composite AS (f1 int, f2 text);
COMMENT ON COLUMN kinds.composite.f1 IS 'comment on column of type';
CREATE DOMAIN kinds.us_postal_code AS text COLLATE "C" DEFAULT '10014'
  CHECK (VALUE ~ '^\d{5}$' OR VALUE ~ '^\d{5}-\d{4}$');
COMMENT ON CONSTRAINT us_postal_code_check ON DOMAIN kinds.us_postal_code IS 'check it';
ALTER DOMAIN kinds.us_postal_code ADD CONSTRAINT not_zero CHECK (VALUE <> '00000') NOT VALID;
GRANT USAGE ON DOMAIN kinds.us_postal_code TO regress_dump_test_role;
CREATE DOMAIN kinds.positive AS integer NOT NULL CHECK (VALUE > 0);
CREATE COLLATION kinds.test0 FROM "C";
COMMENT ON COLLATION kinds.test0 IS 'comment on test0 collation';
CREATE DEFAULT CONVERSION kinds.test_conversion FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;
COMMENT ON CONVERSION kinds.test_conversion IS 'comment on test conversion';
CREATE TEXT SEARCH DICTIONARY kinds.alt_ts_dict1 (template = simple);
COMMENT ON TEXT SEARCH DICTIONARY kinds.alt_ts_dict1 IS 'comment on text search dictionary';
CREATE TEXT SEARCH CONFIGURATION kinds.alt_ts_conf1 (copy = english);
ALTER TEXT SEARCH CONFIGURATION kinds.alt_ts_conf1 ALTER MAPPING FOR asciiword WITH kinds.alt_ts_dict1, english_stem;
COMMENT ON TEXT SEARCH CONFIGURATION kinds.alt_ts_conf1 IS 'comment on text search configuration';

-- functions, procedures, aggregates, operators, casts --------------------------------------
CREATE FUNCTION kinds.trigger_func() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END; $$;
CREATE FUNCTION kinds.concat_step(state text, item text) RETURNS text LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN state IS NULL THEN item ELSE state || ',' || item END $$;
COMMENT ON FUNCTION kinds.concat_step(text, text) IS 'comment on function';
CREATE AGGREGATE public.group_concat(text) (SFUNC = kinds.concat_step, STYPE = text);
COMMENT ON AGGREGATE public.group_concat(text) IS 'comment on aggregate';
CREATE AGGREGATE kinds.newavg (sfunc = int4_avg_accum, basetype = int4, stype = _int8, finalfunc = int8_avg,
                               finalfunc_modify = shareable, initcond1 = '{0,0}');
CREATE FUNCTION kinds.plus(bigint, int) RETURNS bigint LANGUAGE sql IMMUTABLE STRICT AS 'SELECT $1 + $2';
CREATE FUNCTION kinds.minus(bigint, int) RETURNS bigint LANGUAGE sql IMMUTABLE STRICT AS 'SELECT $1 - $2';
-- A window aggregate: its inverse transition lets a moving frame drop rows instead of rescanning.
CREATE AGGREGATE kinds.moving_sum(int) (SFUNC = kinds.plus, STYPE = bigint, INITCOND = '0', COMBINEFUNC = int8pl,
  MSFUNC = kinds.plus, MINVFUNC = kinds.minus, MSTYPE = bigint, MINITCOND = '0');
CREATE FUNCTION kinds.planet_number(kinds.planets) RETURNS int LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT array_position(enum_range(NULL::kinds.planets), $1) $$;
CREATE FUNCTION kinds.planet_distance(kinds.planets, kinds.planets) RETURNS int LANGUAGE sql IMMUTABLE STRICT
  AS $$ SELECT abs(kinds.planet_number($1) - kinds.planet_number($2)) $$;
CREATE OPERATOR kinds.<-> (LEFTARG = kinds.planets, RIGHTARG = kinds.planets, FUNCTION = kinds.planet_distance,
                           COMMUTATOR = OPERATOR(kinds.<->));
CREATE OPERATOR kinds.~~ (PROCEDURE = int4eq, LEFTARG = int, RIGHTARG = int);
COMMENT ON OPERATOR kinds.~~ (int, int) IS 'comment on operator';
CREATE CAST (kinds.planets AS integer) WITH FUNCTION kinds.planet_number(kinds.planets) AS ASSIGNMENT;
COMMENT ON CAST (kinds.planets AS integer) IS 'comment on cast';
CREATE CAST (text AS kinds.composite) WITH INOUT;

-- tables and what hangs on them -------------------------------------------------------------
CREATE TABLE kinds.test_table (
  col1 serial PRIMARY KEY,
  col2 text COMPRESSION pglz,
  col3 text,
  col4 text,
  CHECK (col1 <= 1000)
) WITH (autovacuum_enabled = false, fillfactor = 80);
COMMENT ON TABLE kinds.test_table IS 'comment on table';
COMMENT ON COLUMN kinds.test_table.col1 IS 'comment on column';
COMMENT ON CONSTRAINT test_table_col1_check ON kinds.test_table IS 'bounds check';
ALTER TABLE kinds.test_table ALTER COLUMN col1 SET STATISTICS 90, ALTER COLUMN col2 SET STORAGE EXTERNAL,
  ALTER COLUMN col3 SET STORAGE MAIN, ALTER COLUMN col4 SET (n_distinct = 10);
ALTER TABLE kinds.test_table CLUSTER ON test_table_pkey;
GRANT SELECT ON TABLE kinds.test_table TO regress_dump_test_role;
INSERT INTO kinds.test_table (col2) SELECT 'row ' || i FROM generate_series(1, 9) AS i;
ALTER TABLE kinds.test_table ENABLE ROW LEVEL SECURITY;
CREATE POLICY p1 ON kinds.test_table USING (true) WITH CHECK (true);
CREATE POLICY p2 ON kinds.test_table FOR SELECT TO regress_dump_test_role USING (true);
CREATE POLICY p3 ON kinds.test_table FOR INSERT TO regress_dump_test_role WITH CHECK (true);
CREATE POLICY p4 ON kinds.test_table FOR UPDATE TO regress_dump_test_role USING (true) WITH CHECK (true);
CREATE POLICY p5 ON kinds.test_table FOR DELETE TO regress_dump_test_role USING (true);
CREATE POLICY p6 ON kinds.test_table AS RESTRICTIVE USING (col1 > 0);
COMMENT ON POLICY p6 ON kinds.test_table IS 'comment on policy';
CREATE TRIGGER test_trigger BEFORE INSERT ON kinds.test_table
  FOR EACH ROW WHEN (NEW.col1 > 10) EXECUTE FUNCTION kinds.trigger_func();
COMMENT ON TRIGGER test_trigger ON kinds.test_table IS 'comment on trigger';

CREATE TABLE kinds.fk_reference_test_table (col1 int PRIMARY KEY REFERENCES kinds.test_table
                                            DEFERRABLE INITIALLY DEFERRED);
INSERT INTO kinds.fk_reference_test_table SELECT generate_series(1, 5);
CREATE CONSTRAINT TRIGGER deferred_check AFTER INSERT OR UPDATE ON kinds.fk_reference_test_table
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kinds.trigger_func();

CREATE TABLE kinds.test_second_table (col1 int PRIMARY KEY, col2 text, code kinds.us_postal_code,
                                      UNIQUE (col2) DEFERRABLE);
GRANT INSERT (col1), UPDATE (col2) ON TABLE kinds.test_second_table TO regress_dump_test_role;
INSERT INTO kinds.test_second_table SELECT i, i::text, lpad(i::text, 5, '1') FROM generate_series(1, 9) AS i;
CREATE TABLE kinds.audit (at timestamptz DEFAULT now(), what text);
CREATE RULE log_update AS ON UPDATE TO kinds.test_second_table DO ALSO
  INSERT INTO kinds.audit (what) VALUES ('updated ' || OLD.col1);
COMMENT ON RULE log_update ON kinds.test_second_table IS 'comment on rule';
CREATE TRIGGER count_inserts AFTER INSERT ON kinds.test_second_table REFERENCING NEW TABLE AS added
  FOR EACH STATEMENT EXECUTE FUNCTION kinds.trigger_func();

CREATE TABLE kinds.test_third_table (f1 int, junk int, g1 int GENERATED ALWAYS AS (f1 * 2) STORED, "F3" int,
                                     g2 int GENERATED ALWAYS AS ("F3" * 3) STORED);
ALTER TABLE kinds.test_third_table DROP COLUMN junk;
INSERT INTO kinds.test_third_table VALUES (123, DEFAULT, 456);
CREATE TABLE kinds.test_fourth_table ();
INSERT INTO kinds.test_fourth_table DEFAULT VALUES;
INSERT INTO kinds.test_fourth_table DEFAULT VALUES;
CREATE TABLE kinds.test_fifth_table (col1 integer, col2 boolean, col3 boolean, col4 bit(5), col5 float8);
INSERT INTO kinds.test_fifth_table VALUES (NULL, true, false, '11001', 'NaN'), (2, false, true, '00001', 1.5);
CREATE STATISTICS kinds.test_ext_stats_no_options ON col1, col2 FROM kinds.test_fifth_table;
CREATE STATISTICS kinds.test_ext_stats_opts (ndistinct) ON col1, col2 FROM kinds.test_fifth_table;
ALTER STATISTICS kinds.test_ext_stats_opts SET STATISTICS 1000;
CREATE STATISTICS kinds.test_ext_stats_expr ON (2 * col1) FROM kinds.test_fifth_table;
COMMENT ON STATISTICS kinds.test_ext_stats_expr IS 'comment on statistics';
CREATE TABLE kinds.test_table_identity (col1 int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, col2 text,
                                        col3 bigint GENERATED BY DEFAULT AS IDENTITY (START 100 INCREMENT 5));
INSERT INTO kinds.test_table_identity (col2) VALUES ('test'), ('again');
CREATE TABLE kinds.test_table_generated (col1 int PRIMARY KEY, col2 int GENERATED ALWAYS AS (col1 * 2) STORED);
CREATE TABLE kinds.test_table_generated_child1 () INHERITS (kinds.test_table_generated);
CREATE TABLE kinds.test_table_generated_child2 (col1 int, col2 int) INHERITS (kinds.test_table_generated);
INSERT INTO kinds.test_table_generated VALUES (1), (2);
INSERT INTO kinds.test_table_generated_child1 VALUES (3);
INSERT INTO kinds.test_table_generated_child2 VALUES (4);
CREATE TABLE kinds.test_inheritance_parent (col1 int NOT NULL, col2 int CHECK (col2 >= 42));
CREATE TABLE kinds.test_inheritance_child (col1 int NOT NULL, CONSTRAINT test_inheritance_child CHECK (col2 >= 142857))
  INHERITS (kinds.test_inheritance_parent);
INSERT INTO kinds.test_inheritance_child VALUES (1, 142857);
CREATE TABLE kinds.table_index_stats (col1 int, col2 int, col3 int);
CREATE INDEX index_with_stats ON kinds.table_index_stats ((col1 + 1), col1, (col2 + 1), (col3 + 1));
ALTER INDEX kinds.index_with_stats ALTER COLUMN 1 SET STATISTICS 400;
COMMENT ON INDEX kinds.index_with_stats IS 'comment on index';
CREATE TABLE kinds.reservations (
  room int, during tstzrange, planet kinds.planets,
  EXCLUDE USING gist (during WITH &&),
  EXCLUDE USING btree (room WITH =) DEFERRABLE INITIALLY IMMEDIATE
);
INSERT INTO kinds.reservations VALUES (1, tstzrange('2025-01-01', '2025-01-02'), 'mars'),
                                      (2, tstzrange('2025-01-02', '2025-01-03'), 'venus');

-- partitions ----------------------------------------------------------------------------------
CREATE TABLE kinds.measurement (city_id serial NOT NULL, logdate date NOT NULL,
                                peaktemp int CHECK (peaktemp >= -460), unitsales int) PARTITION BY RANGE (logdate);
CREATE TABLE kinds.measurement_y2006m2 PARTITION OF kinds.measurement (unitsales DEFAULT 0 CHECK (unitsales >= 0))
  FOR VALUES FROM ('2006-02-01') TO ('2006-03-01');
CREATE TABLE kinds.measurement_default PARTITION OF kinds.measurement DEFAULT;
CREATE INDEX ON kinds.measurement (city_id, logdate);
ALTER TABLE kinds.measurement ADD PRIMARY KEY (city_id, logdate);
CREATE TRIGGER test_trigger AFTER INSERT ON kinds.measurement FOR EACH ROW EXECUTE FUNCTION kinds.trigger_func();
ALTER TABLE kinds.measurement_default DISABLE TRIGGER test_trigger;
GRANT SELECT ON TABLE kinds.measurement TO regress_dump_test_role;
INSERT INTO kinds.measurement (logdate, peaktemp, unitsales) VALUES ('2006-02-12', 35, 1), ('2007-01-01', 20, 2);
CREATE TABLE kinds.test_table_fk (col1 int REFERENCES kinds.test_table) PARTITION BY RANGE (col1);
CREATE TABLE kinds.test_table_fk_1 PARTITION OF kinds.test_table_fk FOR VALUES FROM (0) TO (10);
INSERT INTO kinds.test_table_fk VALUES (1), (2);

-- views, sequences, procedures ---------------------------------------------------------------
CREATE VIEW kinds.test_view WITH (check_option = 'local', security_barrier = true) AS
  SELECT col1 FROM kinds.test_table;
ALTER VIEW kinds.test_view ALTER COLUMN col1 SET DEFAULT 1;
COMMENT ON VIEW kinds.test_view IS 'comment on view';
CREATE VIEW kinds.planet_pairs AS
  SELECT a.planet, b.planet AS other, a.planet OPERATOR(kinds.<->) b.planet AS distance, group_concat(a.planet::text) OVER () AS all_
  FROM kinds.reservations a CROSS JOIN kinds.reservations b;
CREATE VIEW kinds.planet_numbers AS SELECT planet, planet::integer AS n FROM kinds.reservations;
CREATE RULE insert_pair AS ON INSERT TO kinds.planet_pairs DO INSTEAD
  INSERT INTO kinds.reservations (room, planet) VALUES (NULL, NEW.planet);
CREATE MATERIALIZED VIEW kinds.matview (col1) AS SELECT col1 FROM kinds.test_table;
CREATE MATERIALIZED VIEW kinds.matview_second (col1) AS SELECT * FROM kinds.matview;
CREATE MATERIALIZED VIEW kinds.matview_third (col1) AS SELECT * FROM kinds.matview_second WITH NO DATA;
COMMENT ON MATERIALIZED VIEW kinds.matview IS 'comment on materialized view';
CREATE SEQUENCE kinds.countdown INCREMENT -3 MINVALUE -100 MAXVALUE 10 START 10;
SELECT nextval('kinds.countdown');
COMMENT ON SEQUENCE kinds.countdown IS 'comment on sequence';
CREATE PROCEDURE kinds.ptest1(a int) LANGUAGE sql AS $$ INSERT INTO kinds.test_table (col1) VALUES (a) $$;
COMMENT ON PROCEDURE kinds.ptest1(int) IS 'comment on procedure';

-- publications (a table's owner may publish it; FOR ALL TABLES and TABLES IN SCHEMA need a superuser)
CREATE PUBLICATION kinds_pub FOR TABLE kinds.test_table WHERE (col1 > 0), kinds.test_second_table (col1, col2)
  WITH (publish = 'insert, update');
COMMENT ON PUBLICATION kinds_pub IS 'comment on publication';
CREATE PUBLICATION kinds_partitions FOR TABLE kinds.measurement WITH (publish_via_partition_root = true);

-- extensions an application uses (citext, hstore, pg_trgm, tablefunc) ------------------------
CREATE TABLE public.profiles (
  id int PRIMARY KEY,
  email citext UNIQUE,
  attributes hstore,
  name text
);
CREATE INDEX profiles_name_trgm ON public.profiles USING gin (name gin_trgm_ops);
CREATE INDEX profiles_attributes ON public.profiles USING gist (attributes);
INSERT INTO public.profiles
SELECT i, 'User' || i || '@Example.test', hstore('plan', CASE WHEN i % 2 = 0 THEN 'pro' ELSE 'free' END), 'name ' || i
FROM generate_series(1, 20) AS i;
CREATE VIEW public.pro_profiles AS
  SELECT id, email, similarity(name, 'name 1') AS likeness FROM public.profiles
  WHERE attributes -> 'plan' = 'pro' AND email = 'user2@example.test'::citext OR name % 'name 3';
CREATE FUNCTION public.plans_by_parity() RETURNS SETOF tablefunc_crosstab_2 LANGUAGE sql STABLE
  AS $$ SELECT * FROM crosstab2('SELECT (id % 2)::text, attributes -> ''plan'', count(*)::text
                                 FROM public.profiles GROUP BY 1, 2 ORDER BY 1, 2') $$;
CREATE POLICY pro_only ON public.profiles FOR SELECT USING (attributes ? 'plan');
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
