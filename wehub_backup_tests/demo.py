"""``make demo``: a whole backup on throwaway clusters, as a user would run it.

Starts a Supabase-like source (seeded with a small but realistic app) and a vanilla VPS
PostgreSQL, runs ``wehub-backup backup wehub_backup_test`` (a real Dagster run recorded in
``$DAGSTER_HOME``), prints its summary, and stops the clusters. Works as root and as a
normal user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from wehub_backup_tests.harness.cluster import PostgresCluster, find_local_bindir, hand_to_server_user, write_pgpass
from wehub_backup_tests.harness.supabase_like import APP_OWNER, new_supabase_like_cluster, prepare_supabase_like

DEMO_TARGET = "wehub_backup_test"


def demo_environment(source: PostgresCluster, vps: PostgresCluster, workdir: Path, pgpass: Path) -> dict[str, str]:
    """The variables an operator would put in the environment file, pointing at the demo clusters."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
        "SUPABASE_DB_HOST": source.host, "SUPABASE_DB_PORT": str(source.port),
        "SUPABASE_DB_USER": APP_OWNER, "SUPABASE_DB_NAME": "postgres", "SUPABASE_DB_SSLMODE": "disable",
        "LOCAL_DB_HOST": vps.host, "LOCAL_DB_PORT": str(vps.port), "LOCAL_DB_USER": "postgres",
        "LOCAL_DB_NAME": "wehub", "PGPASSFILE": str(pgpass),
        "WEHUB_BACKUP_DIR": str(workdir / "backups"), "WEHUB_BACKUP_LOG": str(workdir / "supabase_backup.log"),
        "WEHUB_MIGRATION_LOG": str(workdir / "supabase_migration.log"),
    }


def main() -> int:
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set: run `make demo`", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="wehub-demo-"))
    base.chmod(0o755)
    hand_to_server_user(base)
    source = new_supabase_like_cluster("supabase", base, find_local_bindir())
    vps = PostgresCluster("vps", base)
    try:
        print("starting a Supabase-like source and a VPS PostgreSQL ...", flush=True)
        passwords = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
        prepare_supabase_like(source.start(), passwords[0], large_rows=100_000)
        vps.start().set_password("postgres", passwords[1])
        pgpass = write_pgpass(base / "pgpass", [(source, APP_OWNER, passwords[0]), (vps, "postgres", passwords[1])])
        env = demo_environment(source, vps, base, pgpass)
        print(f"running: wehub-backup backup {DEMO_TARGET}\n", flush=True)
        done = subprocess.run([sys.executable, "-m", "wehub_backup.cli", "backup", DEMO_TARGET], env=env)
        if done.returncode == 0:
            rows = vps.query("SELECT count(*) FROM auth.users", dbname=DEMO_TARGET)[0][0]
            print(f"\nchecked independently: {DEMO_TARGET} on the VPS has {rows} rows in auth.users")
            print(f"plan log: {(base / 'supabase_backup.log').read_text().strip()}")
        print("\nsee the run in the Dagster UI: `make ui`, then open http://localhost:3000/runs")
        return done.returncode
    finally:
        source.destroy()
        vps.destroy()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
