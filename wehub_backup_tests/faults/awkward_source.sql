-- Names and values that break naive quoting, COPY handling, text encodings and listing parsers.
-- Run as the application's login (postgres) in a database it owns.

CREATE SCHEMA "Weird Schema; --";
CREATE SCHEMA "realtime archive";  -- starts like a platform schema the copy leaves out
CREATE TYPE "Weird Schema; --"."Mood, ""quoted""" AS ENUM ('ok', 'it''s', 'a,b', 'tab	in', '😀');

CREATE TABLE "Weird Schema; --"."Tab""le; DROP TABLE x; --" (
  "from" integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  "ünï cødé col" text,
  "col ""quoted""" text,
  "select" "Weird Schema; --"."Mood, ""quoted""",
  "oid" integer
);
INSERT INTO "Weird Schema; --"."Tab""le; DROP TABLE x; --" ("ünï cødé col", "col ""quoted""", "select", "oid")
VALUES ('ω', '"; DROP TABLE x; --', 'it''s', 1), (NULL, E'\\N', '😀', NULL), ('', '', 'a,b', 0);

CREATE TABLE "realtime archive".messages (id integer PRIMARY KEY, body text);
INSERT INTO "realtime archive".messages VALUES (1, 'kept: only the schema "realtime" itself is left out');

CREATE TABLE public."select" ("user" text, "line
break" text, " " text);
INSERT INTO public."select" VALUES ('u', E'a\nb', 'a column named by one space');

CREATE TABLE public."new
line table" (id integer PRIMARY KEY);
INSERT INTO public."new
line table" VALUES (1);

-- Every byte value, in one value and one per row.
CREATE TABLE public.every_byte (id integer PRIMARY KEY, raw bytea);
INSERT INTO public.every_byte
SELECT 0, decode(string_agg(lpad(to_hex(b), 2, '0'), '' ORDER BY b), 'hex') FROM generate_series(0, 255) AS b;
INSERT INTO public.every_byte SELECT b + 1, decode(lpad(to_hex(b), 2, '0'), 'hex') FROM generate_series(0, 255) AS b;

-- A sample of every Unicode plane (0 to 16), all of ASCII and Latin-1 but NUL, and characters
-- that move, hide or join text.
CREATE TABLE public.every_plane (id integer PRIMARY KEY, sample text);
INSERT INTO public.every_plane
SELECT p, chr(p * 65536 + 1) || chr(p * 65536 + 65) || chr(p * 65536 + 65533) || chr(p * 65536 + 65535)
FROM generate_series(0, 16) AS p;
INSERT INTO public.every_plane VALUES
  (100, (SELECT string_agg(chr(c), '' ORDER BY c) FROM generate_series(1, 255) AS c)),
  (101, chr(8232) || chr(8233) || chr(65279) || chr(8203) || chr(8238) || 'e' || chr(769) || chr(55295) || chr(57344));

-- Very long text (10 MiB), huge arrays, odd array shapes.
CREATE TABLE public.long_values (id integer PRIMARY KEY, body text, ints integer[], words text[], grid integer[],
                                 shifted integer[]);
INSERT INTO public.long_values VALUES (
  1, repeat('0123456789abcdef', 655360),
  (SELECT array_agg(i ORDER BY i) FROM generate_series(1, 1000000) AS i),
  (SELECT array_agg(CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN 'NULL' WHEN 2 THEN '' WHEN 3 THEN '"q",\{}'
                    ELSE 'w' || i END ORDER BY i) FROM generate_series(1, 100000) AS i),
  '{{1,2,3},{4,5,6}}', '[-5:-3]={7,8,9}');

-- Numbers with a thousand digits and the special values.
CREATE TABLE public.precise (id integer PRIMARY KEY, n numeric, f double precision, r real);
INSERT INTO public.precise VALUES
  (1, repeat('9', 1000)::numeric, 5e-324, 1.4e-45),
  (2, ('-0.' || repeat('0', 999) || '1')::numeric, '-0', '-0'),
  (3, ('1' || repeat('0', 999) || '.' || repeat('3', 1000))::numeric, 'NaN', 'NaN'),
  (4, 'NaN', 'Infinity', '-Infinity'),
  (5, 'Infinity', 1.7976931348623157e308, 3.4028235e38),
  (6, '-Infinity', 0.1, 0.1);

-- JSON as typed (json keeps text, duplicates and whitespace) and as parsed (jsonb).
CREATE TABLE public.json_edges (id integer PRIMARY KEY, j json, jb jsonb);
INSERT INTO public.json_edges VALUES
  (1, '{"a": 1, "a": 2}', '{"a": 1, "a": 2}'),
  (2, '  { "spaced" :  [ 1 ,2 ] }  ', '{"z": 1, "a": 2, "": ""}'),
  (3, '"\u0000"', '"\u00e9"'),
  (4, (repeat('[', 500) || repeat(']', 500))::json, (repeat('[', 500) || repeat(']', 500))::jsonb),
  (5, '1e400', '1e400'),
  (6, '"\ud83d\ude00"', '"\ud83d\ude00"'),
  (7, 'null', 'null'),
  (8, NULL, NULL),
  (9, '-0', '-0.0'),
  (10, '{"x": [true, false, null, "\\", "\"", "\t"]}', '{"x": "line\nbreak"}');

-- Types whose text form is easy to get wrong.
CREATE TABLE public.odd_types (id integer PRIMARY KEY, span tstzrange, spans int4multirange, pt point,
                               poly polygon, doc tsvector, markup xml, u uuid, mac macaddr8, c "char",
                               iv interval, d date, t timestamptz, bits bit varying(40));
INSERT INTO public.odd_types VALUES
  (1, '[2024-01-01,infinity)', '{[1,3),[5,7)}', '(1.5,-2)', '((0,0),(1,1),(1,0))', 'a:1 b:2 ''quoted'':3',
   '<a b="&amp;">&lt;x&gt;</a>', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '08:00:2b:01:02:03:04:05', 'x',
   '-178000000 years', '4713-01-01 BC', '294276-12-31 23:59:59+00', B'1010101010101010101010101010101010101010'),
  (2, 'empty', '{}', NULL, NULL, '', '', NULL, NULL, '', '0', 'infinity', '-infinity', B'');
