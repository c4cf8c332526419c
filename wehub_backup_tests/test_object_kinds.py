"""Every kind of object PostgreSQL's own pg_dump tests create, through both jobs.

The corpus (harness/sql/object_kinds.sql) is created by the application's owner, never a
superuser: `postgres` on a Supabase-like project (extensions in `extensions`), a plain role on
the VPS (extensions in `public`). The backup and the migration must each bring every object
across, compared object by object with its definition, and their verification counts every kind;
what Supabase's login cannot create is refused, by name, before anything changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from wehub_backup.migration.plan import MigrationRefused, plan_migration
from wehub_backup.pg.connection import ConnectionInfo
from wehub_backup.pg.fingerprint import compare_fingerprints, fingerprint_database
from wehub_backup_tests.harness.cluster import PostgresCluster, find_newer_postgres_bindir
from wehub_backup_tests.harness.supabase_like import APP_OWNER, enable_extensions, load_sql
from wehub_backup_tests.support.backup_runs import run_backup, step_errors
from wehub_backup_tests.support.environment import VPS_SUPERUSER, BackupEnv, point_backup_at
from wehub_backup_tests.support.supabase_target import (
    catalog_snapshot,
    failure_of,
    new_project_fixture,
    point_migration_at,
    run_migration,
    step_metadata,
)

CORPUS_EXTENSIONS = ("citext", "hstore", "pg_trgm", "tablefunc")
CORPUS_ROLE = "regress_dump_test_role"
CORPUS_SCHEMAS = ["kinds", "public"]
VPS_OWNER = "kinds_owner"
VPS_CORPUS = "vps_kinds"
VPS_SUPERUSER_ONLY = "vps_kinds_superuser_only"
BACKUP_COPY = "wehub_kinds"

source_project = new_project_fixture("supabase_kinds")
target_project = new_project_fixture("supabase_kinds_target")


def create_role(cluster: PostgresCluster, role: str, options: str = "NOLOGIN") -> None:
    cluster.execute(f"""DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} {options}; END IF;
    END $$""")


def build_supabase_corpus(cluster: PostgresCluster, dbname: str) -> None:
    """The corpus in a Supabase-like database, as `postgres` built it there."""
    enable_extensions(cluster, CORPUS_EXTENSIONS, dbname)
    create_role(cluster, CORPUS_ROLE)
    cluster.execute(load_sql("object_kinds.sql"), dbname=dbname, user=APP_OWNER)


@pytest.fixture(scope="module")
def supabase_corpus(source_project: PostgresCluster) -> PostgresCluster:
    build_supabase_corpus(source_project, "postgres")
    return source_project


@pytest.fixture(scope="module")
def supabase17_corpus(supabase17_cluster: PostgresCluster) -> Iterator[str]:
    """The corpus in a database of its own on the PostgreSQL 17 project (new projects run 17)."""
    name = "kinds17"
    supabase17_cluster.fresh_database(name, owner=APP_OWNER)
    supabase17_cluster.execute(f"CREATE SCHEMA extensions; GRANT USAGE ON SCHEMA extensions TO {APP_OWNER}",
                               dbname=name)
    build_supabase_corpus(supabase17_cluster, name)
    yield name
    supabase17_cluster.drop_database(name)


def new_vps_database(vps: PostgresCluster, name: str) -> None:
    """A database of the VPS application's owner, a plain role, with the extensions in `public`."""
    create_role(vps, VPS_OWNER, "LOGIN")
    create_role(vps, CORPUS_ROLE)
    vps.fresh_database(name, owner=VPS_OWNER)
    vps.execute("".join(f"CREATE EXTENSION {ext} WITH SCHEMA public;" for ext in CORPUS_EXTENSIONS), dbname=name)


@pytest.fixture(scope="module")
def vps_corpus(vps_cluster: PostgresCluster) -> Iterator[str]:
    new_vps_database(vps_cluster, VPS_CORPUS)
    vps_cluster.execute(load_sql("object_kinds.sql"), dbname=VPS_CORPUS, user=VPS_OWNER)
    yield VPS_CORPUS
    vps_cluster.drop_database(VPS_CORPUS)


def _acl(acl: str, owner: str) -> str:
    """Privileges as (grantee, privilege) pairs, the owner named as such: the migration changes owners."""
    return f"""(SELECT string_agg(concat_ws(':', CASE WHEN x.grantee = {owner} THEN 'owner' WHEN x.grantee = 0
                  THEN 'PUBLIC' ELSE x.grantee::regrole::text END, x.privilege_type, x.is_grantable), ','
                  ORDER BY 1) FROM aclexplode({acl}) x)"""


# Every object of the corpus with its definition, as the server itself describes it: schema
# objects of the corpus schemas, casts, and publications of their tables. Extensions' own objects
# are left out (they live in another schema on each side); the search path holds both of their
# schemas, so definitions print extension names unqualified on either side.
_INVENTORY = """
WITH objects(classid, objid, objsubid, detail) AS (
  SELECT 'pg_class'::regclass, c.oid, 0, concat_ws(' ', c.relkind, c.relpersistence,
         CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
         CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END, c.relrowsecurity,
         (SELECT string_agg(option, ',' ORDER BY option) FROM unnest(c.reloptions) AS option),
         (SELECT string_agg(concat_ws(' ', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                                      a.attidentity, a.attgenerated, nullif(a.attstattarget, -1), a.attstorage,
                                      """ + _acl("a.attacl", "c.relowner") + """),
                            ', ' ORDER BY a.attnum)
            FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
    FROM pg_class c
  UNION ALL SELECT 'pg_type'::regclass, oid, 0, concat_ws(' ', typtype, format_type(typbasetype, typtypmod), typnotnull,
                   typdefault) FROM pg_type
  UNION ALL SELECT 'pg_proc'::regclass, p.oid, 0, concat_ws(' ', prokind, md5(prosrc), prorettype::regtype,
                   proargtypes::regtype[]::text, aggkind, aggtransfn, aggfinalfn, aggcombinefn, aggmtransfn,
                   aggminvtransfn, agginitval, aggminitval)
    FROM pg_proc p LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
  UNION ALL SELECT 'pg_constraint'::regclass, oid, 0, concat_ws(' ', pg_get_constraintdef(oid), condeferrable,
                   condeferred, convalidated) FROM pg_constraint
    WHERE contype <> 'n'  -- NOT NULL is a constraint row from PostgreSQL 17 on (for domains), a flag before
  UNION ALL SELECT 'pg_trigger'::regclass, oid, 0, concat_ws(' ', pg_get_triggerdef(oid), tgenabled) FROM pg_trigger
    WHERE NOT tgisinternal
  UNION ALL SELECT 'pg_policy'::regclass, oid, 0, concat_ws(' ', polcmd, polpermissive, polroles::regrole[]::text,
                   pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)) FROM pg_policy
  UNION ALL SELECT 'pg_rewrite'::regclass, oid, 0, pg_get_ruledef(oid) FROM pg_rewrite WHERE rulename <> '_RETURN'
  UNION ALL SELECT 'pg_attrdef'::regclass, oid, 0, pg_get_expr(adbin, adrelid) FROM pg_attrdef
  UNION ALL SELECT 'pg_operator'::regclass, oid, 0, concat_ws(' ', oprcode, oprcom::regoperator) FROM pg_operator
  UNION ALL SELECT 'pg_opclass'::regclass, oid, 0, NULL FROM pg_opclass
  UNION ALL SELECT 'pg_opfamily'::regclass, oid, 0, NULL FROM pg_opfamily
  UNION ALL SELECT 'pg_collation'::regclass, oid, 0, concat_ws(' ', collprovider, collcollate) FROM pg_collation
  UNION ALL SELECT 'pg_conversion'::regclass, oid, 0, concat_ws(' ', conproc, condefault) FROM pg_conversion
  UNION ALL SELECT 'pg_ts_config'::regclass, oid, 0, (SELECT string_agg(concat_ws(' ', maptokentype, mapseqno,
                   mapdict::regdictionary), ', ' ORDER BY maptokentype, mapseqno) FROM pg_ts_config_map WHERE mapcfg = c.oid)
    FROM pg_ts_config c
  UNION ALL SELECT 'pg_ts_dict'::regclass, oid, 0, dictinitoption FROM pg_ts_dict
  UNION ALL SELECT 'pg_statistic_ext'::regclass, oid, 0, concat_ws(' ', pg_get_statisticsobjdef(oid), nullif(stxstattarget, -1))
    FROM pg_statistic_ext
  UNION ALL SELECT 'pg_cast'::regclass, oid, 0, concat_ws(' ', castfunc::regprocedure, castcontext, castmethod)
    FROM pg_cast
  UNION ALL SELECT 'pg_publication_rel'::regclass, oid, 0, concat_ws(' ', pg_get_expr(prqual, prrelid), prattrs::text)
    FROM pg_publication_rel
  UNION ALL SELECT 'pg_publication'::regclass, p.oid, 0, concat_ws(' ', pubinsert, pubupdate, pubdelete, pubtruncate,
                   pubviaroot) FROM pg_publication p
    WHERE EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid
                  WHERE r.prpubid = p.oid AND c.relnamespace::regnamespace::text = ANY(%(schemas)s))
  UNION ALL SELECT 'pg_namespace'::regclass, oid, 0, """ + _acl("nspacl", "nspowner") + """ FROM pg_namespace
    WHERE nspname = 'kinds'
  UNION ALL SELECT 'pg_description'::regclass, classoid, objsubid, description FROM pg_description
    WHERE objoid >= 16384 AND NOT (classoid = 'pg_namespace'::regclass AND objoid = 'public'::regnamespace)
)
SELECT o.type, o.identity, x.detail FROM (
  SELECT classid, objid, objsubid, detail FROM objects WHERE classid <> 'pg_description'::regclass
  UNION ALL SELECT d.classoid, d.objoid, d.objsubid, concat('comment: ', d.description) FROM pg_description d
    WHERE d.objoid >= 16384
) x CROSS JOIN LATERAL pg_identify_object(x.classid, x.objid, x.objsubid) o
WHERE x.objid >= 16384
  AND (o.schema = ANY(%(schemas)s) OR x.classid IN ('pg_cast'::regclass, 'pg_publication'::regclass)
       OR (x.classid = 'pg_publication_rel'::regclass AND o.identity LIKE ANY(%(in_schemas)s))
       OR (x.classid = 'pg_namespace'::regclass AND o.identity = 'kinds'))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = x.classid AND d.objid = x.objid
                  AND (d.deptype = 'e' OR d.deptype = 'i' AND EXISTS (SELECT 1 FROM pg_depend e
                       WHERE e.classid = d.refclassid AND e.objid = d.refobjid AND e.deptype = 'e')))
ORDER BY 1, 2, 3"""


def inventory(cluster: PostgresCluster, dbname: str) -> list[tuple[str, str, str]]:
    """Every corpus object as (type, identity, definition)."""
    with cluster.connect(dbname) as conn:
        conn.execute("SET search_path = kinds, public, extensions")
        return conn.execute(_INVENTORY, {"schemas": CORPUS_SCHEMAS,
                                         "in_schemas": [f"{s}.%" for s in CORPUS_SCHEMAS]}).fetchall()


def assert_same_objects(source: list[tuple[str, str, str]], copy: list[tuple[str, str, str]], *,
                        definitions: bool = True) -> None:
    """The copy holds each object of the source (with the same definition), and nothing else."""
    assert len(source) > 200, source
    if not definitions:
        source, copy = [o[:2] for o in source], [o[:2] for o in copy]
    missing, extra = [o for o in source if o not in copy], [o for o in copy if o not in source]
    assert not missing and not extra, "\n".join(["missing from the copy:", *map(str, missing), "only in the copy:",
                                                  *map(str, extra)])


def corpus_fingerprint(conn: psycopg.Connection) -> object:
    return fingerprint_database(conn, CORPUS_SCHEMAS, [])


def test_the_backup_copies_every_kind(monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv,
                                      supabase_corpus: PostgresCluster, vps_cluster: PostgresCluster) -> None:
    point_backup_at(monkeypatch, backup_env, supabase_corpus, vps_cluster)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_backup(BACKUP_COPY, instance)

    assert result.success, step_errors(result)
    assert_same_objects(inventory(supabase_corpus, "postgres"), inventory(vps_cluster, BACKUP_COPY))
    counts = step_metadata(result, "verify_restored_database")["object_counts"]
    assert all(counts[kind] > 0 for kind in COUNTED_KINDS), counts


def test_the_backup_copies_every_kind_from_postgresql_17(
    monkeypatch: pytest.MonkeyPatch, backup_env_pg17: BackupEnv, supabase17_cluster: PostgresCluster,
    supabase17_corpus: str, vps_cluster: PostgresCluster,
) -> None:
    """pg_dump 17's archive goes into the VPS's PostgreSQL 15 through a script. Each server prints
    definitions its own way (16 stopped qualifying the columns of a view's lone table), so the
    objects are compared by name; verification compares their content and counts."""
    monkeypatch.setenv("SUPABASE_DB_NAME", supabase17_corpus)
    monkeypatch.setenv("WEHUB_PG_BINDIRS", str(find_newer_postgres_bindir()))
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_backup(f"{BACKUP_COPY}17", instance)

    assert result.success, step_errors(result)
    assert_same_objects(inventory(supabase17_cluster, supabase17_corpus), inventory(vps_cluster, f"{BACKUP_COPY}17"),
                        definitions=False)


COUNTED_KINDS = ("types", "domains", "domain constraints", "aggregates", "operators", "collations", "conversions",
                 "text search configurations", "text search dictionaries", "rules", "statistics objects",
                 "publication tables", "casts")


def test_the_migration_copies_every_kind(monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv,
                                         target_project: PostgresCluster, vps_cluster: PostgresCluster,
                                         vps_corpus: str) -> None:
    enable_extensions(target_project, CORPUS_EXTENSIONS)
    create_role(target_project, CORPUS_ROLE)
    point_migration_at(monkeypatch, backup_env, target_project, vps_cluster, vps_corpus)
    with dg.DagsterInstance.ephemeral() as instance:
        result = run_migration(instance)

    assert result.success, failure_of(result)
    assert_same_objects(inventory(vps_cluster, vps_corpus), inventory(target_project, "postgres"))
    counts = step_metadata(result, "verify_supabase_copy")["object_counts"]
    assert all(counts[kind] > 0 for kind in COUNTED_KINDS), counts
    plan = step_metadata(result, "plan_vps_migration")
    assert "left_out" not in plan or "cast" not in str(plan["left_out"])
    rows = target_project.query("SELECT count(*) FROM public.plans_by_parity()", user=APP_OWNER)
    assert rows == [(2,)]

    monkeypatch.setenv("WEHUB_PG_BINDIRS", str(find_newer_postgres_bindir()))  # and through pg_restore 17's script
    with dg.DagsterInstance.ephemeral() as instance:
        again = run_migration(instance, overwrite=True)
    assert again.success, failure_of(again)
    assert step_metadata(again, "plan_vps_migration")["pg_dump"].startswith("17.")
    assert_same_objects(inventory(vps_cluster, vps_corpus), inventory(target_project, "postgres"))


# Each statement takes one object of a kind away; verification must notice.
MISSING_ONE = {
    "types": "DROP TYPE kinds.textrange CASCADE",
    "domains": "DROP DOMAIN kinds.positive",
    "domain constraints": "ALTER DOMAIN kinds.us_postal_code DROP CONSTRAINT not_zero",
    "aggregates": "DROP AGGREGATE public.group_concat(text) CASCADE",
    "operators": "DROP OPERATOR kinds.~~ (int, int)",
    "collations": "DROP COLLATION kinds.test0",
    "conversions": "DROP CONVERSION kinds.test_conversion",
    "text search configurations": "DROP TEXT SEARCH CONFIGURATION kinds.alt_ts_conf1",
    "text search dictionaries": "DROP TEXT SEARCH DICTIONARY kinds.alt_ts_dict1 CASCADE",
    "rules": "DROP RULE log_update ON kinds.test_second_table",
    "statistics objects": "DROP STATISTICS kinds.test_ext_stats_expr",
    "publication tables": "ALTER PUBLICATION kinds_pub DROP TABLE kinds.test_second_table",
    "casts": "DROP CAST (kinds.planets AS integer)",
    "policies": "DROP POLICY p4 ON kinds.test_table",
    "triggers": "DROP TRIGGER deferred_check ON kinds.fk_reference_test_table",
}


@pytest.mark.parametrize("kind", sorted(MISSING_ONE))
def test_verification_fails_a_copy_missing_one_object_of_a_kind(vps_cluster: PostgresCluster, vps_corpus: str,
                                                                 kind: str) -> None:
    with vps_cluster.connect(vps_corpus) as conn:
        whole = corpus_fingerprint(conn)
        with pytest.raises(_RolledBack), conn.transaction():
            conn.execute(MISSING_ONE[kind])
            missing = corpus_fingerprint(conn)
            raise _RolledBack
    problems = compare_fingerprints(whole, missing)
    assert any(problem.startswith(f"{kind}: ") for problem in problems), problems


class _RolledBack(Exception):
    """Ends a transaction that only looked at a copy with an object missing."""


# What Supabase's login (not a superuser) cannot create, and the object named in each refusal.
SUPERUSER_ONLY = {
    "CREATE OPERATOR FAMILY public.op_family USING btree": "operator family public.op_family USING btree",
    "CREATE OPERATOR CLASS public.op_class FOR TYPE bigint USING btree FAMILY public.op_family AS "
    "OPERATOR 1 <(bigint, bigint), OPERATOR 2 <=(bigint, bigint), OPERATOR 3 =(bigint, bigint), "
    "OPERATOR 4 >=(bigint, bigint), OPERATOR 5 >(bigint, bigint), FUNCTION 1 btint8cmp(bigint, bigint)":
        "operator class public.op_class USING btree",
    "CREATE TEXT SEARCH TEMPLATE public.alt_ts_temp1 (lexize = dsimple_lexize)":
        "text search template public.alt_ts_temp1",
    "CREATE TEXT SEARCH PARSER public.alt_ts_prs1 (start = prsd_start, gettoken = prsd_nexttoken, "
    "end = prsd_end, lextypes = prsd_lextype)": "text search parser public.alt_ts_prs1",
    "CREATE TYPE public.undefined": "type public.undefined",
    "CREATE CAST (timestamptz AS interval) WITH FUNCTION age(timestamptz) AS ASSIGNMENT":
        "cast (timestamp with time zone AS interval) needs ownership of one of its types",
    "CREATE CAST (xid AS integer) WITHOUT FUNCTION": "cast (xid AS integer) is binary-coercible",
    "CREATE PUBLICATION pub2 FOR ALL TABLES WITH (publish = '')": "publication pub2 is FOR ALL TABLES",
    "CREATE PUBLICATION pub3 FOR TABLES IN SCHEMA public": "publication pub3 is FOR ALL TABLES or FOR TABLES IN SCHEMA",
}


@pytest.fixture(scope="module")
def vps_superuser_only(vps_cluster: PostgresCluster) -> Iterator[str]:
    """A VPS database holding, besides a table, one of each object only a superuser can create."""
    new_vps_database(vps_cluster, VPS_SUPERUSER_ONLY)
    vps_cluster.execute("CREATE TABLE public.notes (id int PRIMARY KEY)", dbname=VPS_SUPERUSER_ONLY, user=VPS_OWNER)
    vps_cluster.execute(";".join(SUPERUSER_ONLY), dbname=VPS_SUPERUSER_ONLY)
    yield VPS_SUPERUSER_ONLY
    vps_cluster.drop_database(VPS_SUPERUSER_ONLY)


def test_the_migration_refuses_what_only_a_superuser_can_create(
    monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, target_project: PostgresCluster,
    vps_cluster: PostgresCluster, vps_superuser_only: str, tmp_path: Path,
) -> None:
    enable_extensions(target_project, CORPUS_EXTENSIONS)
    env = point_migration_at(monkeypatch, backup_env, target_project, vps_cluster, vps_superuser_only)
    before = catalog_snapshot(target_project)
    source = ConnectionInfo(vps_cluster.host, vps_cluster.port, VPS_SUPERUSER, vps_superuser_only, "disable",
                            env.pgpassfile)
    supabase = ConnectionInfo(target_project.host, target_project.port, APP_OWNER, "postgres", "disable",
                              env.pgpassfile)

    with pytest.raises(MigrationRefused) as refused:
        plan_migration(source, supabase, tmp_path, secrets_dir=tmp_path, overwrite=True, app_schemas=[],
                       excluded_tables=[], extra_bindirs=[], jobs=1, log=print)

    problems = refused.value.problems
    missing = [name for name in SUPERUSER_ONLY.values() if not any(name in problem for problem in problems)]
    assert not missing, problems
    assert catalog_snapshot(target_project) == before

