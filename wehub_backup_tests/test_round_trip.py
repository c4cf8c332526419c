"""The disaster-recovery cycle end to end: VPS -> Supabase, Supabase -> VPS backup, failover writes
on the VPS, and back to Supabase, with nothing lost and Supabase's own schemas untouched."""

from __future__ import annotations

from typing import Iterator

import dagster as dg
import pytest

from wehub_backup.pg.fingerprint import fingerprint_database
from wehub_backup_tests.harness.cluster import PostgresCluster
from wehub_backup_tests.harness.supabase_like import APP_OWNER, SUPABASE_SUPERUSER
from wehub_backup_tests.support.backup_runs import run_backup
from wehub_backup_tests.support.environment import BackupEnv
from wehub_backup_tests.support.supabase_target import (
    APP_SCHEMAS,
    catalog_snapshot,
    failure_of,
    new_project_fixture,
    point_migration_at,
    run_migration,
)

VPS_COPY = "wehub"
SIGNUP = "9a3f0c52-5b1e-4c1d-8f00-00000000abcd"


supabase = new_project_fixture("supabase_round_trip")


@pytest.fixture
def vps_copy(vps_cluster: PostgresCluster) -> Iterator[str]:
    """The VPS database the backup fills and the migration back reads; removed afterwards."""
    yield VPS_COPY
    for name in (VPS_COPY, f"{VPS_COPY}__previous", f"{VPS_COPY}__staging"):
        vps_cluster.drop_database(name)


def auth_users(supabase: PostgresCluster) -> dict[str, object]:
    return catalog_snapshot(supabase)["rows"]["auth.users"]  # type: ignore[index]


def app_fingerprint(cluster: PostgresCluster, dbname: str) -> tuple[dict, dict, dict]:
    with cluster.connect(dbname) as conn:
        fingerprint = fingerprint_database(conn, list(APP_SCHEMAS), [])
    tables = {name: (t.rows, t.digest) for name, t in fingerprint.tables.items()}
    return tables, fingerprint.sequences, fingerprint.object_counts


def test_vps_to_supabase_and_back_after_a_failover(
    monkeypatch: pytest.MonkeyPatch, backup_env: BackupEnv, supabase: PostgresCluster,
    vps_cluster: PostgresCluster, vps_app_database: str, vps_copy: str,
) -> None:
    point_migration_at(monkeypatch, backup_env, supabase, vps_cluster, vps_app_database)
    users = auth_users(supabase)
    with dg.DagsterInstance.ephemeral() as instance:
        first = run_migration(instance)
        assert first.success, failure_of(first)
        assert auth_users(supabase) == users

        # The app runs on Supabase: new rows, a signup trigger on auth.users, a policy and a grant.
        supabase.execute("""
            INSERT INTO public.customers (email, full_name) VALUES ('on-supabase@example.test', 'Added on Supabase');
            UPDATE public.orders SET state = 'shipped' WHERE id <= 10;
            DELETE FROM public.import_log WHERE line LIKE E'row\\t1%';
            INSERT INTO public.orders (customer_id, total, placed_on)
              SELECT id, 99.5, date '2025-01-01' FROM public.customers WHERE email = 'on-supabase@example.test';
            CREATE FUNCTION public.handle_new_user() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
            BEGIN
              INSERT INTO public.customers (email) VALUES (NEW.email);
              RETURN NEW;
            END $$;
            CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
              FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();
            ALTER TABLE public.customers ENABLE ROW LEVEL SECURITY;
            CREATE POLICY "Customers read themselves" ON public.customers FOR SELECT TO authenticated
              USING (email = auth.email());
            GRANT SELECT ON public.customers TO authenticated;
        """, user=APP_OWNER)

        backed_up = run_backup(vps_copy, instance)
        assert backed_up.success, failure_of(backed_up)
        assert auth_users(supabase) == users

        # Supabase is down; the app writes to the VPS copy.
        vps_cluster.execute("""
            INSERT INTO public.orders (customer_id, total, placed_on)
              SELECT id, 12.25, date '2025-02-02' FROM public.customers ORDER BY email LIMIT 3;
            UPDATE public.customers SET notes = 'changed during the failover' WHERE email LIKE 'shopper1%';
            INSERT INTO inventory."Stock Items" ("SKU", "Unit Price") VALUES ('SKU-FAILOVER', 1.5);
            SELECT setval('public.invoice_number_seq', 7000);
        """, dbname=vps_copy)

        monkeypatch.setenv("LOCAL_DB_NAME", vps_copy)
        back = run_migration(instance, overwrite=True)
        assert back.success, failure_of(back)

    assert app_fingerprint(supabase, "postgres") == app_fingerprint(vps_cluster, vps_copy)
    # The copy's mark (its database comment) stays on the VPS: the migration's dump does not carry it.
    comment = "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s"
    assert vps_cluster.query(comment, (vps_copy,))[0][0].startswith("wehub_backup: verified copy of ")
    assert not supabase.query(comment, ("postgres",))[0][0].startswith("wehub_backup")
    assert auth_users(supabase) == users
    with supabase.connect(user=APP_OWNER) as conn:
        assert conn.execute("SELECT count(*) FROM public.orders WHERE total = 12.25").fetchone()[0] == 3
        assert conn.execute("SELECT has_table_privilege('authenticated', 'public.customers', 'SELECT'),"
                            " has_table_privilege('anon', 'public.customers', 'SELECT')").fetchone() == (True, False)
        policies = conn.execute("SELECT policyname, roles::text FROM pg_policies WHERE tablename = 'customers'")
        assert policies.fetchall() == [("Customers read themselves", "{authenticated}")]
        next_order = conn.execute("INSERT INTO public.orders (customer_id, total, placed_on) SELECT id, 1, now() "
                                  "FROM public.customers LIMIT 1 RETURNING id").fetchone()[0]
        assert next_order > conn.execute("SELECT max(id) FROM public.orders WHERE id <> %s", (next_order,)).fetchone()[0]
    with supabase.connect(user=SUPABASE_SUPERUSER) as conn:
        conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'signed-up@example.test')", (SIGNUP,))
        created = conn.execute("SELECT id FROM public.customers WHERE email = 'signed-up@example.test'").fetchall()
    assert len(created) == 1, "the signup trigger on auth.users must survive the migration back"
