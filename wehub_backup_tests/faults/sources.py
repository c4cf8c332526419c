"""Source databases of their own on the Supabase-like cluster, one per purpose, which tests may
write to or break without disturbing the session's seeded source."""

from __future__ import annotations

from pathlib import Path

from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.harness.supabase_like import APP_OWNER

NOTES_SQL = """CREATE TABLE public.notes (id serial PRIMARY KEY, body text NOT NULL);
INSERT INTO public.notes (body) SELECT 'note ' || i FROM generate_series(1, 300) i;"""
# A platform schema the copy leaves out (vault), and an application view that reads from it:
# the view cannot be created on a vanilla server.
VAULT_EXTENSION_SQL = """CREATE SCHEMA vault; CREATE EXTENSION supabase_vault SCHEMA vault;
GRANT USAGE ON SCHEMA vault TO postgres; GRANT SELECT ON vault.decrypted_secrets TO postgres;"""
VIEW_ON_VAULT_SQL = "CREATE VIEW public.webhook_keys AS SELECT name, decrypted_secret FROM vault.decrypted_secrets;"
# A check that reads Vault inside a function body: no catalog dependency records that, so the
# preflight cannot see it; the restore evaluates the check for each row and fails.
CHECK_READING_VAULT_SQL = """CREATE FUNCTION public.vault_reachable() RETURNS boolean LANGUAGE sql STABLE
AS 'SELECT count(*) >= 0 FROM vault.decrypted_secrets';
CREATE TABLE public.vault_checked (id int PRIMARY KEY CHECK (public.vault_reachable()));
INSERT INTO public.vault_checked VALUES (1);"""
AWKWARD_SQL = Path(__file__).with_name("awkward_source.sql")
# The platform's own realtime schema, which every copy leaves out, next to an application schema
# whose name begins the same way.
REALTIME_SCHEMA_SQL = "CREATE SCHEMA realtime; CREATE TABLE realtime.messages (id bigint PRIMARY KEY, topic text);"


def blobs_sql(rows: int, row_bytes: int) -> str:
    """A table of incompressible bytes (MD5 output), twice ``rows * row_bytes`` on the wire as COPY text."""
    return ("CREATE TABLE public.blobs (id integer PRIMARY KEY, data bytea NOT NULL);"
            "INSERT INTO public.blobs SELECT i, decode(string_agg(md5(i || ':' || j), '' ORDER BY j), 'hex')"
            f" FROM generate_series(1, {rows}) i, generate_series(1, {row_bytes // 16}) j GROUP BY i;")


def recreate_source(cluster: PostgresCluster, name: str, app_sql: str, platform_sql: str = "") -> str:
    """A fresh database owned by the app's login: ``platform_sql`` runs as the platform's
    superuser (extensions), ``app_sql`` as the app's login, as on Supabase."""
    cluster.fresh_database(name, owner=APP_OWNER)
    if platform_sql:
        cluster.execute(platform_sql, dbname=name)
    cluster.execute(app_sql, dbname=name, user=APP_OWNER)
    return name
