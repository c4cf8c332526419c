"""Hostile and wrong input: refused with one clear line before anything is changed.

Every refused run is checked the same way: it failed in its preflight step (an object only a
restore can find fails the restore into staging instead), its cause is one line naming the
problem, no database appeared, vanished or was renamed on either server, the existing copy is
untouched, and the run left no working files. Data that is merely awkward is copied exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from wehub_backup import cli
from wehub_backup.defs.lifecycle import default_jobs
from wehub_backup.pg import clients
from wehub_backup.pg.passfile import PassEntry, write_private_passfile
from wehub_backup.run.marks import MARK_PREFIX, Mark, MarkState, read_marks
from wehub_backup.run.targets import previous_name, retired_name, staging_name
from wehub_backup.supabase.schemas import TRANSACTION_POOLER_PORT
from wehub_backup_tests.faults.evidence import (
    DatabaseState,
    database_oids,
    database_state,
    step_failure,
)
from wehub_backup_tests.faults.sources import (
    AWKWARD_SQL,
    NOTES_SQL,
    REALTIME_SCHEMA_SQL,
    VAULT_EXTENSION_SQL,
    VIEW_ON_VAULT_SQL,
    recreate_source,
)
from wehub_backup_tests.harness.cluster import PostgresCluster, find_local_bindir, free_tcp_port
from wehub_backup_tests.harness.supabase_like import APP_OWNER
from wehub_backup_tests.support.backup_runs import run_backup, step_errors
from wehub_backup_tests.support.environment import VPS_SUPERUSER, BackupEnv, SessionPasswords, start_for_session
from wehub_backup_tests.support.supabase_target import run_migration

HOSTILE_SOURCE = "hostile_source"
GUARDED = "wehub_guarded"
PREFLIGHT = "plan_supabase_backup"
NOT_AN_IDENTIFIER = "use lower-case letters, digits and underscores"


@pytest.fixture(scope="module")
def hostile_source(supabase_cluster: PostgresCluster) -> Iterator[str]:
    """A small source of its own, which the guarded copy is made from."""
    yield recreate_source(supabase_cluster, HOSTILE_SOURCE, NOTES_SQL)
    supabase_cluster.drop_database(HOSTILE_SOURCE)


@dataclass
class Guarded:
    """Both servers as they were before a refused run, and the copy that must stay untouched."""

    env: BackupEnv
    instance: dg.DagsterInstance
    source: PostgresCluster
    vps: PostgresCluster
    passwords: SessionPasswords
    monkeypatch: pytest.MonkeyPatch
    source_databases: dict[str, int]
    vps_databases: dict[str, int]
    copy: DatabaseState

    def refused(self, target: str, expected: str, step_expected: str = PREFLIGHT) -> str:
        """Run against ``target``; assert a one-line refusal in ``step_expected`` containing ``expected``."""
        result = run_backup(target, self.instance)
        step, cause = step_failure(result)
        assert step == step_expected, step_errors(result)
        assert expected in cause, cause
        assert cause and "\n" not in cause and "Traceback" not in cause, cause
        assert database_oids(self.vps) == self.vps_databases
        assert database_oids(self.source) == self.source_databases
        assert database_state(self.vps, GUARDED) == self.copy
        assert not list(self.env.backup_dir.glob("run-*")), "the refused run left working files"
        last_line = self.env.backup_log.read_text(encoding="utf-8").split("\n")[-2]
        assert "FAILURE target=" in last_line and f"step={step_expected} cause=" in last_line
        assert last_line.isprintable(), f"the plain-text log got control characters: {last_line!r}"
        return cause

    def passfile(self, name: str, logins: list[tuple[str, int, str, str]]) -> Path:
        """A password file with the given (host, port, user, password) lines, used from now on."""
        path = write_private_passfile(self.env.dagster_home.parent / name,
                                      [PassEntry(host, str(port), "*", user, pw) for host, port, user, pw in logins])
        self.monkeypatch.setenv("PGPASSFILE", str(path))
        return path

    def source_login(self, password: str | None = None, host: str | None = None,
                     port: int | None = None) -> tuple[str, int, str, str]:
        return (host or self.source.host, port or self.source.port, APP_OWNER,
                password or self.passwords.supabase_postgres)

    def vps_login(self, password: str | None = None) -> tuple[str, int, str, str]:
        return (self.vps.host, self.vps.port, VPS_SUPERUSER, password or self.passwords.vps_postgres)


@pytest.fixture(scope="module")
def hostile_instance() -> dg.DagsterInstance:
    """In memory: a refused run writes a dozen events, and SQLite commits would triple its cost."""
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def guarded(backup_env: BackupEnv, hostile_source: str, hostile_instance: dg.DagsterInstance,
            supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster, session_passwords: SessionPasswords,
            monkeypatch: pytest.MonkeyPatch) -> Guarded:
    monkeypatch.setenv("SUPABASE_DB_NAME", hostile_source)
    copy = database_state(vps_cluster, GUARDED)
    if copy is None:
        made = run_backup(GUARDED, hostile_instance)
        assert made.success, step_errors(made)
        copy = database_state(vps_cluster, GUARDED)
    assert copy is not None
    return Guarded(backup_env, hostile_instance, supabase_cluster, vps_cluster, session_passwords, monkeypatch,
                   database_oids(supabase_cluster), database_oids(vps_cluster), copy)


# --- target database names ----------------------------------------------------------------------

HOSTILE_NAMES = {
    "single-quote": ("it's", NOT_AN_IDENTIFIER),
    "double-quote": ('wehub"copy', NOT_AN_IDENTIFIER),
    "semicolon": ("wehub;", NOT_AN_IDENTIFIER),
    "injection-drop": ("x; DROP DATABASE postgres; --", NOT_AN_IDENTIFIER),
    "injection-or": ("wehub' OR '1'='1", NOT_AN_IDENTIFIER),
    "injection-identifier": ('wehub" WITH (FORCE); DROP DATABASE "postgres', NOT_AN_IDENTIFIER),
    "space": ("wehub backup", NOT_AN_IDENTIFIER),
    "trailing-space": ("wehub ", NOT_AN_IDENTIFIER),
    "whitespace-only": ("   ", NOT_AN_IDENTIFIER),
    "newline-tab": ("wehub\n\tcopy", NOT_AN_IDENTIFIER),
    "nul-byte": ("wehub\x00copy", NOT_AN_IDENTIFIER),
    "unicode": ("wehüb", NOT_AN_IDENTIFIER),
    "fullwidth": ("ｗｅｈｕｂ", NOT_AN_IDENTIFIER),
    "emoji": ("backup_😀", NOT_AN_IDENTIFIER),
    "right-to-left-override": ("wehub\u202ebd", NOT_AN_IDENTIFIER),
    "overlong": ("w" * 54, "longer than 53 bytes"),
    "truncated-by-postgres": ("w" * 70, "longer than 53 bytes"),
    "overlong-multibyte": ("é" * 30, "longer than 53 bytes"),
    "empty": ("", "the name is empty"),
    "postgres": ("postgres", "postgres is a system database"),
    "template0": ("template0", "template0 is a system database"),
    "template1": ("template1", "template1 is a system database"),
    "staging-suffix": ("wehub__staging", "are reserved"),
    "previous-suffix": ("wehub__previous", "are reserved"),
    "upper-case": ("Wehub", NOT_AN_IDENTIFIER),
    "leading-digit": ("1wehub", NOT_AN_IDENTIFIER),
    "hyphen": ("wehub-copy", NOT_AN_IDENTIFIER),
    "dot": ("wehub.copy", NOT_AN_IDENTIFIER),
    "path": ("../../etc/passwd", NOT_AN_IDENTIFIER),
    "shell": ("$(reboot)", NOT_AN_IDENTIFIER),
    "like-wildcard": ("wehub%", NOT_AN_IDENTIFIER),
    "dagster-storage": ("dagster", "it is Dagster's storage database"),
}


@pytest.mark.parametrize("case", list(HOSTILE_NAMES))
def test_hostile_target_name_is_refused(guarded: Guarded, case: str) -> None:
    name, expected = HOSTILE_NAMES[case]
    cause = guarded.refused(name, expected)
    assert cause.startswith("invalid target database ")


def test_configured_dagster_storage_database_is_refused(guarded: Guarded) -> None:
    guarded.monkeypatch.setenv("DAGSTER_PG_DB", "wehub_dagster_store")
    guarded.refused("wehub_dagster_store", "it is Dagster's storage database")


@pytest.mark.parametrize("vps_host", ["127.0.0.1", "localhost"])
def test_source_database_itself_is_refused_when_vps_is_the_source_server(guarded: Guarded, vps_host: str) -> None:
    guarded.monkeypatch.setenv("LOCAL_DB_HOST", vps_host)
    guarded.monkeypatch.setenv("LOCAL_DB_PORT", str(guarded.source.port))
    guarded.monkeypatch.setenv("LOCAL_DB_USER", APP_OWNER)
    guarded.refused(HOSTILE_SOURCE, "it is the source database itself")


# --- databases the project did not make -----------------------------------------------------------

STRANGER_SQL = "CREATE TABLE public.customers (id int PRIMARY KEY, name text); INSERT INTO public.customers VALUES (1, 'ACME');"
SOURCE_IDENTITY = "postgres@127.0.0.1/" + HOSTILE_SOURCE
NOT_MADE_BY_US = "was not made by wehub_backup"


def create_stranger(vps: PostgresCluster, name: str) -> DatabaseState:
    """An unrelated database with data of its own, as another application on the VPS has it."""
    vps.fresh_database(name)
    vps.execute(STRANGER_SQL, dbname=name)
    state = database_state(vps, name)
    assert state is not None
    return state


def marks_of(vps: PostgresCluster, *names: str) -> dict[str, Mark | None]:
    with vps.connect() as conn:
        return read_marks(conn, names)


@pytest.fixture
def stranger_names(vps_cluster: PostgresCluster) -> Iterator[list[str]]:
    """Names of strangers a test creates; dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        vps_cluster.drop_database(name)


@pytest.mark.parametrize("generation", ["target", "staging", "previous", "retired"])
def test_database_not_made_by_the_project_is_refused(
    guarded: Guarded, stranger_names: list[str], generation: str
) -> None:
    """``crm`` (an unrelated VPS database) as the target is refused before anything changes, and so
    is a stranger under any name the backup would rename or drop next to a real copy."""
    target = "crm" if generation == "target" else GUARDED
    name = {"target": target, "staging": staging_name(target), "previous": previous_name(target),
            "retired": retired_name(target)}[generation]
    stranger_names.append(name)
    guarded.vps.drop_database(name)  # a real older copy, if a test made one
    stranger = create_stranger(guarded.vps, name)
    guarded.vps_databases = database_oids(guarded.vps)
    cause = guarded.refused(target, f"VPS database {name} {NOT_MADE_BY_US}")
    assert "this run changed nothing" in cause
    assert f"adopt_existing_target: true, or wehub-backup backup --adopt {target}" in cause
    assert database_state(guarded.vps, name) == stranger


def test_copy_of_another_source_is_refused(guarded: Guarded) -> None:
    guarded.monkeypatch.setenv("SUPABASE_DB_NAME", "postgres")
    cause = guarded.refused(GUARDED, f"VPS database {GUARDED} is a copy of {SOURCE_IDENTITY}, "
                                     "not of this run's source postgres@127.0.0.1/postgres")
    assert "--adopt" in cause


def test_copy_carries_the_mark_of_its_source_through_the_swaps(guarded: Guarded) -> None:
    result = run_backup(GUARDED, guarded.instance)
    assert result.success, step_errors(result)
    marks = marks_of(guarded.vps, GUARDED, previous_name(GUARDED))
    assert marks == {GUARDED: Mark(MarkState.VERIFIED, SOURCE_IDENTITY),
                     previous_name(GUARDED): Mark(MarkState.VERIFIED, SOURCE_IDENTITY)}
    comment = guarded.vps.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                                (GUARDED,))[0][0]
    assert comment == f"{MARK_PREFIX}verified copy of {SOURCE_IDENTITY}"


def test_adopted_stranger_is_kept_as_previous_and_dropped_only_by_a_later_run(
    guarded: Guarded, stranger_names: list[str]
) -> None:
    target = "crm_adopted"
    stranger_names.extend(["crm_adopted", previous_name(target)])
    stranger = create_stranger(guarded.vps, target)

    adopting = run_backup(target, guarded.instance, adopt=True)
    assert adopting.success, step_errors(adopting)
    assert database_state(guarded.vps, previous_name(target)) == stranger
    assert marks_of(guarded.vps, target, previous_name(target)) == {
        target: Mark(MarkState.VERIFIED, SOURCE_IDENTITY), previous_name(target): Mark(MarkState.ADOPTED, SOURCE_IDENTITY)}

    # Handed over: later runs need no flag, and the adopted database ages out like any older copy.
    assert run_backup(target, guarded.instance).success
    assert set(database_oids(guarded.vps)) & {target, previous_name(target), retired_name(target)} == {
        target, previous_name(target)}
    assert database_oids(guarded.vps)[previous_name(target)] != stranger.oid


def test_copies_made_before_marks_are_adopted_with_the_command_line_flag(
    guarded: Guarded, stranger_names: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Copies from a version that did not mark them: the first run is refused, ``--adopt`` takes them over."""
    target = "wehub_unmarked"
    stranger_names.extend([target, previous_name(target)])
    for _ in range(2):
        assert run_backup(target, guarded.instance).success
    for name in (target, previous_name(target)):
        guarded.vps.execute(f"COMMENT ON DATABASE {name} IS NULL")
    older, newer = database_oids(guarded.vps)[previous_name(target)], database_oids(guarded.vps)[target]

    assert cli.main(["backup", target]) == 1
    refused = capsys.readouterr().out
    assert f"VPS database {target} {NOT_MADE_BY_US}" in refused and f"--adopt {target}" in refused
    assert database_oids(guarded.vps)[target] == newer

    assert cli.main(["backup", "--adopt", target]) == 0, capsys.readouterr().out
    now = database_oids(guarded.vps)
    assert now[previous_name(target)] == newer and older not in now.values()
    assert marks_of(guarded.vps, previous_name(target))[previous_name(target)] == Mark(MarkState.ADOPTED, SOURCE_IDENTITY)


# --- wrong settings -----------------------------------------------------------------------------

def _wrong_source_password(g: Guarded) -> None:
    g.passfile("wrong-source.pgpass", [g.source_login(password="not-the-password"), g.vps_login()])


def _wrong_vps_password(g: Guarded) -> None:
    g.passfile("wrong-vps.pgpass", [g.source_login(), g.vps_login(password="not-the-password")])


def _missing_password_file(g: Guarded) -> None:
    g.monkeypatch.setenv("PGPASSFILE", str(g.env.dagster_home.parent / "no-such.pgpass"))


def _world_readable_password_file(g: Guarded) -> None:
    g.passfile("readable.pgpass", [g.source_login(), g.vps_login()]).chmod(0o644)


def _nothing_listening(g: Guarded) -> None:
    port = free_tcp_port()
    g.passfile("closed-port.pgpass", [g.source_login(port=port), g.vps_login()])
    g.monkeypatch.setenv("SUPABASE_DB_PORT", str(port))


def _unknown_host(g: Guarded) -> None:
    g.passfile("dns.pgpass", [g.source_login(host="db.wehub-test.invalid", port=5432), g.vps_login()])
    g.monkeypatch.setenv("SUPABASE_DB_HOST", "db.wehub-test.invalid")
    g.monkeypatch.setenv("SUPABASE_DB_PORT", "5432")


def _tls_required_without_tls(g: Guarded) -> None:
    g.monkeypatch.setenv("SUPABASE_DB_SSLMODE", "require")


def _transaction_pooler(g: Guarded) -> None:
    g.monkeypatch.setenv("SUPABASE_DB_PORT", str(TRANSACTION_POOLER_PORT))


def _no_client_programs(g: Guarded) -> None:
    empty = g.env.dagster_home.parent / "empty-bin"
    empty.mkdir()
    g.monkeypatch.setenv("WEHUB_PG_BINDIRS", str(empty))
    g.monkeypatch.setattr(clients, "candidate_bindirs", lambda extra=(): [empty])


def _vps_login_not_superuser(g: Guarded) -> None:
    g.vps.execute("DO $$ BEGIN CREATE ROLE wehub_plain LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    g.vps.set_password("wehub_plain", g.passwords.vps_postgres)
    g.passfile("plain.pgpass", [g.source_login(), (g.vps.host, g.vps.port, "wehub_plain", g.passwords.vps_postgres)])
    g.monkeypatch.setenv("LOCAL_DB_USER", "wehub_plain")


def _backup_dir_is_a_file(g: Guarded) -> None:
    not_a_directory = g.env.dagster_home.parent / "backups-file"
    not_a_directory.write_text("not a directory")
    g.monkeypatch.setenv("WEHUB_BACKUP_DIR", str(not_a_directory))


WRONG_SETTINGS: dict[str, tuple[Callable[[Guarded], None], str]] = {
    "wrong-source-password": (_wrong_source_password, 'password authentication failed for user "postgres"'),
    "wrong-vps-password": (_wrong_vps_password, 'password authentication failed for user "postgres"'),
    "missing-password-file": (_missing_password_file, "no-such.pgpass does not exist"),
    "password-file-mode-0644": (_world_readable_password_file, "has group or world access (mode 644); run: chmod 600"),
    "nothing-listening": (_nothing_listening, "Connection refused"),
    "dns-failure": (_unknown_host, "db.wehub-test.invalid"),
    "sslmode-require-without-tls": (_tls_required_without_tls, "server does not support SSL"),
    "transaction-pooler-6543": (_transaction_pooler, "transaction pooler"),
    "missing-pg_dump": (_no_client_programs, "no pg_dump/pg_restore/psql found"),
    "vps-login-not-superuser": (_vps_login_not_superuser, "VPS user wehub_plain must be a superuser"),
    "backup-dir-is-a-file": (_backup_dir_is_a_file, "backups-file exists and is not a directory"),
}


@pytest.mark.parametrize("case", list(WRONG_SETTINGS))
def test_wrong_setting_is_refused_before_any_change(guarded: Guarded, case: str) -> None:
    break_setting, expected = WRONG_SETTINGS[case]
    break_setting(guarded)
    guarded.refused(GUARDED, expected)


def test_pg_dump_older_than_the_source_is_refused(
    guarded: Guarded, backup_env_pg17: BackupEnv, supabase17_cluster: PostgresCluster
) -> None:
    guarded.monkeypatch.setenv("SUPABASE_DB_NAME", "postgres")
    guarded.monkeypatch.setenv("WEHUB_PG_BINDIRS", "")
    guarded.monkeypatch.setattr(clients, "candidate_bindirs", lambda extra=(): [find_local_bindir()])
    cause = guarded.refused(GUARDED, "server version mismatch: the server is PostgreSQL 17")
    assert "install postgresql-client-17" in cause


# Values with a line break or another control character, named with the variable and the character.
CONTROL_CHARACTERS = {
    "newline-in-SUPABASE_DB_NAME": ("SUPABASE_DB_NAME", HOSTILE_SOURCE + "\n",
                                    "SUPABASE_DB_NAME holds a line feed (\\n) at character 15 of 'hostile_source\\n'"),
    "newline-in-LOCAL_DB_HOST": ("LOCAL_DB_HOST", "127.0.0.1\nevil.example",
                                 "LOCAL_DB_HOST holds a line feed (\\n) at character 10"),
    "carriage-return-in-SUPABASE_DB_HOST": ("SUPABASE_DB_HOST", "127.0.0.1\r",
                                            "SUPABASE_DB_HOST holds a carriage return (\\r) at character 10"),
    "tab-in-LOCAL_DB_USER": ("LOCAL_DB_USER", "post\tgres", "LOCAL_DB_USER holds a tab (\\t) at character 5"),
    "escape-in-LOCAL_DB_NAME": ("LOCAL_DB_NAME", "wehub\x1b[2J",
                                "LOCAL_DB_NAME holds the control character U+001B at character 6"),
    "right-to-left-override-in-SUPABASE_DB_USER": (
        "SUPABASE_DB_USER", "postgres\u202e", "SUPABASE_DB_USER holds the control character U+202E "
                                              "(RIGHT-TO-LEFT OVERRIDE) at character 9"),
    "byte-not-utf8-in-SUPABASE_DB_NAME": ("SUPABASE_DB_NAME", "hostile\udcff",
                                          "SUPABASE_DB_NAME holds a byte that is not UTF-8 (0xff) at character 8"),
}


@pytest.mark.parametrize("case", list(CONTROL_CHARACTERS))
def test_control_character_in_a_setting_is_refused_by_name(guarded: Guarded, case: str) -> None:
    variable, value, expected = CONTROL_CHARACTERS[case]
    guarded.monkeypatch.setenv(variable, value)
    cause = guarded.refused(GUARDED, expected)
    assert cause.endswith(": set it without line breaks or control characters"), cause


def test_control_character_in_a_setting_is_refused_by_the_migration_too(
        guarded: Guarded, hostile_instance: dg.DagsterInstance) -> None:
    guarded.monkeypatch.setenv("LOCAL_DB_NAME", "wehub\n")
    step, cause = step_failure(run_migration(hostile_instance))
    assert step == "plan_vps_migration"
    assert cause.startswith("LOCAL_DB_NAME holds a line feed (\\n) at character 6 of 'wehub\\n'"), cause
    last_line = guarded.env.migration_log.read_text(encoding="utf-8").splitlines()[-1]
    assert "FAILURE target=(unknown) step=plan_vps_migration cause=LOCAL_DB_NAME holds a line feed" in last_line
    assert database_oids(guarded.vps) == guarded.vps_databases
    assert database_oids(guarded.source) == guarded.source_databases


# --- connection slots ---------------------------------------------------------------------------

JOBS = default_jobs()  # parallel_jobs 0: what the run sizes the dump and the restore to


@pytest.mark.parametrize("limited", ["DATABASE hostile_source", "ROLE postgres"])
def test_source_without_connection_slots_for_the_dump_is_refused(
        guarded: Guarded, supabase_cluster: PostgresCluster, limited: str) -> None:
    """pg_dump --jobs=N opens N + 1 sessions, the run's snapshot one more; a limit of N + 1 is too few."""
    supabase_cluster.execute(f"ALTER {limited} CONNECTION LIMIT {JOBS + 1}")
    try:
        cause = guarded.refused(GUARDED, "the Supabase source has too few free connection slots: ")
    finally:
        supabase_cluster.execute(f"ALTER {limited} CONNECTION LIMIT -1")
    kind, name = limited.lower().split()
    assert f"{kind} {name}'s connection limit {JOBS + 1}, 0 in use), and the run needs {JOBS + 2} there" in cause
    assert cause.endswith("lower parallel_jobs (Supabase's free session pooler allows 15 clients)"), cause


@pytest.fixture(scope="module")
def small_vps(pg_base_dir: Path, session_passwords: SessionPasswords) -> Iterator[PostgresCluster]:
    """A VPS server with 10 connection slots, 3 of them reserved for superusers."""
    cluster = start_for_session(PostgresCluster("smallvps", pg_base_dir, superuser=VPS_SUPERUSER,
                                                settings={"max_connections": "10"}))
    cluster.set_password(VPS_SUPERUSER, session_passwords.vps_postgres)
    yield cluster
    cluster.destroy()


def test_vps_without_connection_slots_for_the_restore_is_refused(guarded: Guarded, small_vps: PostgresCluster) -> None:
    """Eight of ten slots in use: the run's lock and the staging database would still fit, its
    pg_restore would not, after the dump's egress was paid. The plan step refuses first."""
    vps_login = (small_vps.host, small_vps.port, VPS_SUPERUSER, guarded.passwords.vps_postgres)
    guarded.passfile("small-vps.pgpass", [guarded.source_login(), vps_login])
    guarded.monkeypatch.setenv("LOCAL_DB_PORT", str(small_vps.port))
    before = database_oids(small_vps)
    sessions = [small_vps.connect() for _ in range(8)]
    try:
        cause = guarded.refused(GUARDED, "the VPS server has too few free connection slots: 0 (max_connections 10, "
                                         f"3 reserved, 8 in use), and the run needs {JOBS + 2} there")
    finally:
        for session in sessions:
            session.close()
    assert cause.endswith("close sessions there, raise its max_connections, or lower parallel_jobs"), cause
    assert database_oids(small_vps) == before


# --- what the source holds ---------------------------------------------------------------------

UNRESTORABLE = {
    "view on Vault": (VIEW_ON_VAULT_SQL, VAULT_EXTENSION_SQL,
                      "rule _RETURN on view public.webhook_keys depends on view vault.decrypted_secrets"),
    "default calling pg_graphql": (
        "CREATE TABLE public.gql_cache (q jsonb DEFAULT graphql.resolve('{ x }'));",
        "CREATE SCHEMA graphql; CREATE EXTENSION pg_graphql SCHEMA graphql; GRANT USAGE ON SCHEMA graphql TO postgres;",
        "default value for column q of table public.gql_cache depends on function graphql.resolve("),
    "check calling pg_jsonschema": (
        "CREATE TABLE public.settings (doc jsonb CHECK (extensions.jsonb_matches_schema('{\"type\": \"object\"}', doc)));",
        "CREATE SCHEMA extensions; GRANT USAGE ON SCHEMA extensions TO postgres;"
        "CREATE EXTENSION pg_jsonschema SCHEMA extensions;",
        "constraint settings_doc_check on table public.settings depends on function "
        "extensions.jsonb_matches_schema(json,jsonb)"),
}


@pytest.mark.parametrize("case", UNRESTORABLE)
def test_object_needing_a_left_out_one_is_refused_before_the_dump(
    guarded: Guarded, supabase_cluster: PostgresCluster, case: str
) -> None:
    """An app object that needs something every copy leaves out (Vault, pg_graphql) cannot be
    created on the VPS: the preflight names it, before any egress is spent."""
    app_sql, platform_sql, expected = UNRESTORABLE[case]
    source = recreate_source(supabase_cluster, "unrestorable_source", NOTES_SQL + app_sql, platform_sql)
    guarded.monkeypatch.setenv("SUPABASE_DB_NAME", source)
    try:
        guarded.source_databases = database_oids(supabase_cluster)
        cause = guarded.refused(GUARDED, expected)
        assert "which the copy leaves out" in cause, cause
    finally:
        supabase_cluster.drop_database(source)


@pytest.fixture(scope="module")
def awkward_source(supabase_cluster: PostgresCluster) -> Iterator[str]:
    yield recreate_source(supabase_cluster, "awkward_source", AWKWARD_SQL.read_text(), REALTIME_SCHEMA_SQL)
    supabase_cluster.drop_database("awkward_source")


_COLUMNS = """SELECT table_schema, table_name, column_name, data_type, ordinal_position
              FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
              ORDER BY 1, 2, 5"""


def test_awkward_names_types_and_bytes_are_copied_exactly(
    backup_env: BackupEnv, awkward_source: str, hostile_instance: dg.DagsterInstance,
    supabase_cluster: PostgresCluster, vps_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPABASE_DB_NAME", awkward_source)
    result = run_backup("wehub_awkward", hostile_instance)
    assert result.success, step_errors(result)

    source, copy = database_state(supabase_cluster, awkward_source), database_state(vps_cluster, "wehub_awkward")
    assert source is not None and copy is not None
    assert copy.tables == tuple(t for t in source.tables if t[0] != "realtime")
    assert ("realtime archive", "messages") in {t[:2] for t in copy.tables}
    assert vps_cluster.query(_COLUMNS, dbname="wehub_awkward") == [
        row for row in supabase_cluster.query(_COLUMNS, dbname=awkward_source) if row[0] != "realtime"]
    every_byte = "SELECT raw FROM public.every_byte WHERE id = 0"
    assert vps_cluster.query(every_byte, dbname="wehub_awkward")[0][0] == bytes(range(256))
    long_text = "SELECT length(body), md5(body), cardinality(ints), md5(words::text) FROM public.long_values"
    assert vps_cluster.query(long_text, dbname="wehub_awkward") == supabase_cluster.query(long_text, dbname=awkward_source)
    assert vps_cluster.query(long_text, dbname="wehub_awkward")[0][:1] == (10 * 2**20,)
