"""A vanilla PostgreSQL dressed up as a Supabase database, plus realistic application data.

Reproduced: the reserved roles and their attributes, `postgres` as a non-superuser app owner,
managed schemas owned by their service roles, migration tables `postgres` cannot read (so a
whole-database `pg_dump` as `postgres` fails), extensions living in schema `extensions`, event
triggers and a publication owned by `supabase_admin`, default privileges for the API roles,
RLS policies calling `auth.uid()`.  Supabase-only extensions (`pg_graphql`, `supabase_vault`)
exist only on an install built by `build_supabase_flavoured_bindir`, which adds stand-in
extension files to a private copy of the share directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from psycopg import sql as pgsql

from .cluster import PostgresCluster

SQL_DIR = Path(__file__).parent / "sql"
STAND_IN_EXTENSIONS_DIR = Path(__file__).parent / "extensions"
SUPABASE_SUPERUSER = "supabase_admin"
APP_OWNER = "postgres"
SUPABASE_SETTINGS = {"shared_preload_libraries": "pg_stat_statements"}


def load_sql(name: str) -> str:
    """Text of one of the harness SQL scripts."""
    return (SQL_DIR / name).read_text()


# a PostgreSQL install that knows Supabase's extension names ------------------------------------


def pg_config_paths(bindir: Path) -> dict[str, Path]:
    """Where an install keeps binaries, shared files and modules, as its pg_config reports them."""
    keys = ["bindir", "sharedir", "pkglibdir", "libdir"]
    output = subprocess.run(
        [str(bindir / "pg_config"), *(f"--{key}" for key in keys)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return {key: Path(value.strip()) for key, value in zip(keys, output)}


def link_or_copy(source: Path, target: Path) -> None:
    """Hard link when possible: PostgreSQL finds its share directory from the resolved path of
    its own executable, so a symlink would lead it back to the original install."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_supabase_flavoured_bindir(prefix: Path, source_bindir: Path) -> Path:
    """Mirror an install under `prefix` whose extension directory also offers `pg_graphql` and
    `supabase_vault` stand-ins (and `uuid-ossp` where the install lacks it), and return its bin
    directory.

    Binaries are hard links (or copies), everything else is symlinked, so this takes well under a
    second; clusters created from the returned bindir can CREATE EXTENSION pg_graphql while
    clusters from `source_bindir` get `extension "pg_graphql" is not available`.
    """
    paths = pg_config_paths(source_bindir)
    common = Path(os.path.commonpath([paths["bindir"], paths["sharedir"]]))
    new_bindir = prefix / paths["bindir"].relative_to(common)
    new_sharedir = prefix / paths["sharedir"].relative_to(common)
    new_bindir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(paths["bindir"].iterdir()):
        if not (new_bindir / entry.name).exists():
            link_or_copy(entry.resolve(), new_bindir / entry.name)
    for key in ("pkglibdir", "libdir"):
        if paths[key].is_relative_to(common) and not paths[key].is_relative_to(paths["bindir"]):
            mirrored = prefix / paths[key].relative_to(common)
            if not mirrored.exists():
                mirrored.parent.mkdir(parents=True, exist_ok=True)
                mirrored.symlink_to(paths[key], target_is_directory=True)
    new_extension_dir = new_sharedir / "extension"
    new_extension_dir.mkdir(parents=True, exist_ok=True)
    for entry in paths["sharedir"].iterdir():
        if entry.name != "extension" and not (new_sharedir / entry.name).exists():
            (new_sharedir / entry.name).symlink_to(entry)
    for entry in (paths["sharedir"] / "extension").iterdir():
        if not (new_extension_dir / entry.name).exists():
            (new_extension_dir / entry.name).symlink_to(entry)
    for stand_in in STAND_IN_EXTENSIONS_DIR.iterdir():
        if not (new_extension_dir / stand_in.name).exists():
            shutil.copyfile(stand_in, new_extension_dir / stand_in.name)
    return new_bindir


# bootstrap ---------------------------------------------------------------------------------------


def available_extensions(cluster: PostgresCluster, dbname: str = "postgres") -> set[str]:
    """Extensions the cluster's install could create."""
    return {row[0] for row in cluster.query("SELECT name FROM pg_available_extensions", dbname=dbname)}


def bootstrap_supabase_like(cluster: PostgresCluster, dbname: str = "postgres") -> None:
    """Turn a fresh cluster initdb'ed with superuser supabase_admin into a Supabase-like one."""
    if cluster.superuser != SUPABASE_SUPERUSER:
        raise ValueError(f"a Supabase-like cluster needs bootstrap superuser {SUPABASE_SUPERUSER!r}")
    cluster.execute(load_sql("supabase_roles.sql"))
    cluster.execute(load_sql("supabase_database.sql"), dbname=dbname)
    extensions = available_extensions(cluster, dbname)
    if "pg_graphql" in extensions:
        cluster.execute(load_sql("supabase_graphql_extension.sql"), dbname=dbname)
    else:
        cluster.execute(load_sql("supabase_graphql_placeholder.sql"), dbname=dbname)
    if "supabase_vault" in extensions:
        cluster.execute(load_sql("supabase_vault_extension.sql"), dbname=dbname)
    cluster.execute(load_sql("supabase_auth_data.sql"), dbname=dbname)


def enable_extensions(cluster: PostgresCluster, names: tuple[str, ...], dbname: str = "postgres") -> None:
    """Enable extensions as Supabase's dashboard does: in schema `extensions`, by the platform's superuser."""
    cluster.execute("".join(pgsql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA extensions;").format(
        pgsql.Identifier(name)).as_string() for name in names), dbname=dbname)


# application data ---------------------------------------------------------------------------------


def seed_app(cluster: PostgresCluster, dbname: str = "postgres", large_rows: int = 100_000) -> None:
    """Build the application a Supabase user would have, as `postgres` (not a superuser).

    Content is deterministic (derived from md5 of counters), so copies can be compared.
    """
    cluster.execute(load_sql("app_schema.sql"), dbname=dbname, user=APP_OWNER)
    cluster.execute(load_sql("app_data.sql"), dbname=dbname, user=APP_OWNER)
    with cluster.connect(dbname, user=APP_OWNER) as conn:
        conn.execute(load_sql("app_events.sql"), {"rows": large_rows})  # type: ignore[arg-type]
        conn.execute("REFRESH MATERIALIZED VIEW content.post_stats")
    cluster.execute("ANALYZE", dbname=dbname)


def add_app_auth_hooks(cluster: PostgresCluster, dbname: str = "postgres", user: str | None = None) -> None:
    """The app's trigger on auth.users, its bucket and its storage policies (see app_auth_hooks.sql)."""
    cluster.execute(load_sql("app_auth_hooks.sql"), dbname=dbname, user=user)


def grant_policy_management(cluster: PostgresCluster) -> None:
    """Let `postgres` create policies on storage.objects, which it does not own.

    Supabase allows it through supautils (`supautils.policy_grants` names storage.objects and
    the auth tables for `postgres`); a plain server has no such grant, so `postgres` becomes a
    member of the table's owner instead.
    """
    cluster.execute(f"GRANT supabase_storage_admin TO {APP_OWNER}")


def seed_vps_app(cluster: PostgresCluster, dbname: str, owner: str = "wehub_app") -> None:
    """A vanilla VPS application database owned by a local role, with uuid-ossp in `public`:
    its defaults say `public.uuid_generate_v4()`, which does not exist on Supabase."""
    names = {"owner": pgsql.Identifier(owner), "db": pgsql.Identifier(dbname)}
    if not cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)):
        cluster.execute(pgsql.SQL("CREATE ROLE {owner} LOGIN").format(**names).as_string())
    cluster.execute(pgsql.SQL("CREATE DATABASE {db} OWNER {owner}").format(**names).as_string())
    cluster.execute(
        'CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public;'
        "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;",
        dbname=dbname,
    )
    cluster.execute(load_sql("vps_app.sql"), dbname=dbname, user=owner)


def new_supabase_like_cluster(name: str, base: Path, source_bindir: Path) -> PostgresCluster:
    """An unstarted cluster on a Supabase-flavoured copy of `source_bindir`'s install."""
    bindir = build_supabase_flavoured_bindir(base / f"{name}-install", source_bindir)
    return PostgresCluster(name, base, bindir=bindir, superuser=SUPABASE_SUPERUSER, settings=SUPABASE_SETTINGS)


def prepare_supabase_like(cluster: PostgresCluster, password: str, large_rows: int = 100_000) -> PostgresCluster:
    """Bootstrap and seed a started cluster, and let `postgres` log in over TCP with `password`."""
    bootstrap_supabase_like(cluster)
    seed_app(cluster, large_rows=large_rows)
    cluster.set_password(APP_OWNER, password)
    return cluster
