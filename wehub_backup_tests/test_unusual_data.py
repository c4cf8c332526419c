"""The backup copies and verifies what a real application database may hold beyond the
fixtures: odd names (quotes, dots, semicolons, line breaks), every built-in type family, settings
that change how values print, and objects a naive restore order breaks (NOT VALID checks that
existing rows violate, forced row security, partitions attached with their own column order)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import dagster as dg
import pytest

from wehub_backup_tests.harness.cluster import PostgresCluster, hand_to_server_user
from wehub_backup_tests.support.backup_runs import run_backup, step_errors
from wehub_backup_tests.support.environment import MONEY_LOCALE, BackupEnv, SessionPasswords
from wehub_backup_tests.support.supabase_target import (
    catalog_snapshot,
    failure_of,
    new_project_cluster,
    new_project_fixture,
    point_migration_at,
    run_migration,
    step_metadata,
)

UNUSUAL_SCHEMA = r"""
CREATE SCHEMA extensions;
CREATE TABLE extensions.lookup (id int PRIMARY KEY);
CREATE SCHEMA "We""ird.Schema";
CREATE TYPE "We""ird.Schema"."Colour" AS ENUM ('red', 'grün', 'blue sky');
CREATE TYPE public.pair AS (a int, b text);
CREATE DOMAIN public.tag_list AS text[] CHECK (cardinality(VALUE) < 10);
CREATE TABLE "We""ird.Schema"."Täble With Spaces" (
  "select" int PRIMARY KEY, t text, "Colour" "We""ird.Schema"."Colour", colours "We""ird.Schema"."Colour"[],
  pairs public.pair[], tags public.tag_list,
  cash money, doc xml, pt point, bx box, circ circle, poly polygon, pth path, seg lseg, ln line,
  r_int int4range, r_ts tstzrange, r_num numrange, mr int4multirange,
  tsv tsvector, tsq tsquery, bits bit(5), vbits varbit, net cidr, mac macaddr, ch "char", nm name,
  rc regclass, rt regtype, rp regproc, o oid, lsn pg_lsn, snap txid_snapshot,
  f8 float8, f4 float4, nmr numeric, ts timestamptz, spans interval[], js json
);
INSERT INTO "We""ird.Schema"."Täble With Spaces"
SELECT i, 'row ' || i, (enum_range(NULL::"We""ird.Schema"."Colour"))[1 + i % 3],
       ARRAY['red', 'blue sky']::"We""ird.Schema"."Colour"[],
       ARRAY[ROW(i, 'x')::public.pair, ROW(NULL, E'tab\there')::public.pair], ARRAY['a', 'b'],
       (i * 1.25)::numeric::money, xmlparse(content '<a n="' || i || '">é</a>'), point(i, -i), box(point(0, 0), point(i, i)),
       circle(point(i, i), 2.5), polygon '((0,0),(1,1),(2,0))', path '[(0,0),(1,1)]', lseg '[(0,0),(1,2)]',
       line '{1,-1,0}', int4range(i, i + 10), tstzrange('2025-01-01', '2025-02-01'), numrange(0.5, i),
       int4multirange(int4range(1, 3), int4range(i + 5, i + 9)), to_tsvector('simple', 'quick brown ' || i),
       to_tsquery('simple', 'quick & brown'), B'10101', B'1101', '10.1.0.0/16', '08:00:2b:01:02:03', 'x', 'nm',
       'extensions.lookup'::regclass, 'public.pair'::regtype, 'now'::regproc, 1259, '16/B374D848', '10:20:10,14,15',
       CASE i % 4 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-Infinity' WHEN 2 THEN -0.0 ELSE 1 / 3.0 END,
       1 / 7.0, CASE WHEN i % 2 = 0 THEN 'Infinity'::numeric ELSE 'NaN' END,
       CASE WHEN i % 2 = 0 THEN 'infinity'::timestamptz ELSE '2024-02-29 23:59:59.999999+05:30' END,
       ARRAY[interval '1 mon 2 days', interval '-3 hours'], '{"b": 1, "a": [1, 2.50]}'
FROM generate_series(1, 200) AS i;
CREATE TABLE public.nothing ();
INSERT INTO public.nothing SELECT FROM generate_series(1, 3);
CREATE TABLE public.dropped (id int, gone text, kept text);
ALTER TABLE public.dropped DROP COLUMN gone;
INSERT INTO public.dropped VALUES (1, 'kept');
CREATE TABLE public.parent_log (at date, line text);
CREATE TABLE public.child_log (severity int) INHERITS (public.parent_log);
INSERT INTO public.parent_log VALUES ('2025-01-01', 'in the parent');
INSERT INTO public.child_log VALUES ('2025-01-02', 'in the child', 3);
CREATE UNLOGGED TABLE public.cache (k text PRIMARY KEY, v jsonb);
INSERT INTO public.cache VALUES ('big', jsonb_build_object('blob', repeat('z', 2000000)));
CREATE MATERIALIZED VIEW public.child_count AS SELECT count(*) AS n FROM public.child_log;
SELECT lo_from_bytea(0, 'large object body');
CREATE TABLE public."line
break; -- ""x"" y" (id int PRIMARY KEY, "col
umn" text);
INSERT INTO public."line
break; -- ""x"" y" VALUES (1, 'x');
CREATE TABLE public.checked (v int);
INSERT INTO public.checked VALUES (-1);
ALTER TABLE public.checked ADD CONSTRAINT positive CHECK (v > 0) NOT VALID;
CREATE TABLE public.forced (id int);
ALTER TABLE public.forced ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY nobody ON public.forced USING (false);
INSERT INTO public.forced VALUES (1);
CREATE SEQUENCE public.countdown INCREMENT -5 MINVALUE -1000 MAXVALUE 100 START 100;
SELECT nextval('public.countdown'), nextval('public.countdown');
CREATE TABLE public.parted (id int, k text) PARTITION BY LIST (k);
CREATE TABLE public.parted_a PARTITION OF public.parted FOR VALUES IN ('a');
CREATE TABLE public.parted_b (k text, id int);
ALTER TABLE public.parted ATTACH PARTITION public.parted_b FOR VALUES IN ('b');
INSERT INTO public.parted VALUES (1, 'a'), (2, 'b');
"""


def test_unusual_names_types_and_settings_round_trip(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    """The source's role prints reg* values under Supabase's search_path (extensions on it), the
    VPS under the default one: the copy must verify all the same."""
    supabase_cluster.execute(UNUSUAL_SCHEMA, dbname=scratch_source, user="postgres")
    result = run_backup("wehub_unusual", instance)
    assert result.success, step_errors(result)
    copied = vps_cluster.query(
        'SELECT rc::text, cash::numeric, doc::text, mr::text FROM "We""ird.Schema"."Täble With Spaces" '
        'WHERE "select" = 3', dbname="wehub_unusual")
    assert copied == [("extensions.lookup", 3.75, '<a n="3">é</a>', "{[1,3),[8,12)}")]
    assert vps_cluster.query("SELECT count(*) FROM public.nothing", dbname="wehub_unusual") == [(3,)]
    assert vps_cluster.query("SELECT count(*) FROM public.parent_log", dbname="wehub_unusual") == [(2,)]
    assert vps_cluster.query("SELECT lo_get(oid) FROM pg_largeobject_metadata",
                             dbname="wehub_unusual") == [(b"large object body",)]
    assert vps_cluster.query('SELECT count(*) FROM public."line\nbreak; -- ""x"" y"', dbname="wehub_unusual") == [(1,)]
    assert vps_cluster.query("SELECT nextval('public.countdown')", dbname="wehub_unusual") == [(90,)]


PRICES = ("CREATE TABLE public.prices (id int PRIMARY KEY, amount money, history money[]);"
          "INSERT INTO public.prices SELECT i, i * 1234.5, ARRAY[i * 1.5, -i]::numeric[]::money[] "
          "FROM generate_series(1, 50) i")


def test_money_printed_in_the_sources_locale_restores_on_the_vps(
    backup_env: BackupEnv, instance: dg.DagsterInstance, scratch_source: str,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster,
) -> None:
    """pg_dump writes money as the source prints it ("1.234,50 €"); the VPS, printing "$1,234.50",
    would reject that text unless the restore reads it in the source's locale."""
    supabase_cluster.execute(f"ALTER DATABASE \"{scratch_source}\" SET lc_monetary = '{MONEY_LOCALE}'")
    supabase_cluster.execute(PRICES, dbname=scratch_source, user="postgres")
    result = run_backup("wehub_money", instance)
    assert result.success, step_errors(result)
    assert result.output_for_node("plan_supabase_backup").restore_settings == {"lc_monetary": MONEY_LOCALE}
    assert step_metadata(result, "plan_supabase_backup")["restore_session_settings"] == f"lc_monetary={MONEY_LOCALE}"
    assert vps_cluster.query("SELECT amount::numeric, history[1]::numeric FROM public.prices WHERE id = 2",
                             dbname="wehub_money") == [(2469, 3)]


supabase_project = new_project_fixture("supabase_money")


@pytest.fixture
def vps_money_database(vps_cluster: PostgresCluster) -> Iterator[str]:
    """A VPS application database whose money prints in a German locale."""
    name = "vps_money"
    vps_cluster.fresh_database(name)
    vps_cluster.execute(f"ALTER DATABASE {name} SET lc_monetary = '{MONEY_LOCALE}'")
    vps_cluster.execute(PRICES, dbname=name)
    yield name
    vps_cluster.drop_database(name)


def test_money_printed_in_the_vps_locale_migrates_to_supabase(
    monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, supabase_project: PostgresCluster,
    vps_cluster: PostgresCluster, vps_money_database: str,
) -> None:
    point_migration_at(monkeypatch, backup_env, supabase_project, vps_cluster, vps_money_database)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_migration(instance, overwrite=True)
    assert result.success, failure_of(result)
    assert step_metadata(result, "plan_vps_migration")["restore_session_settings"] == f"lc_monetary={MONEY_LOCALE}"
    assert supabase_project.query("SELECT amount::numeric FROM public.prices WHERE id = 2") == [(2469,)]


@pytest.fixture(scope="module")
def project_without_the_locale(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """A project whose server finds only C.UTF-8: LOCPATH makes the C library look for locales in
    a directory holding that one alone, like an operating system with no other locale installed."""
    locales = pg_base_dir / "only-c-utf8"
    shutil.copytree("/usr/lib/locale/C.utf8", locales / "C.utf8")
    hand_to_server_user(locales)
    with pytest.MonkeyPatch.context() as server_environment:
        server_environment.setenv("LOCPATH", str(locales))
        cluster = new_project_cluster("supabase_c_only", pg_base_dir, session_passwords.supabase_postgres)
    yield cluster
    cluster.destroy()


def test_money_in_a_locale_the_target_lacks_is_refused_before_anything_changes(
    monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, project_without_the_locale: PostgresCluster,
    vps_cluster: PostgresCluster, vps_money_database: str,
) -> None:
    point_migration_at(monkeypatch, backup_env, project_without_the_locale, vps_cluster, vps_money_database)
    before = catalog_snapshot(project_without_the_locale)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_migration(instance, overwrite=True)
    step, error = failure_of(result)
    assert step == "plan_vps_migration"
    assert (f"money column public.prices.amount is printed in the source's lc_monetary locale {MONEY_LOCALE}, "
            "which Supabase does not have") in error
    assert catalog_snapshot(project_without_the_locale) == before
