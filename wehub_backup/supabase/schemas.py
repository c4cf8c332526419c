"""Supabase's schemas, service tables and ports, as the platform sets them up."""

from __future__ import annotations

# Supabase-internal schemas: platform state a VPS copy neither needs nor can run.
DEFAULT_EXCLUDED_SCHEMAS = (
    "_analytics", "_realtime", "_supavisor", "graphql", "graphql_public", "pgbouncer",
    "pgsodium", "pgsodium_masks", "pgtle", "realtime", "vault",
)

# Every schema Supabase's platform, services and features create and manage. A migration to
# Supabase never writes them: the project's own auth, storage, ... stay as they are.
MANAGED_SCHEMAS = DEFAULT_EXCLUDED_SCHEMAS + (
    "auth", "cron", "extensions", "net", "pgmq", "storage", "supabase_functions", "supabase_migrations",
)

# Migration bookkeeping of Supabase's services, unreadable by ``postgres`` since 2025.
DEFAULT_EXCLUDED_TABLES = ("auth.schema_migrations", "storage.migrations", "supabase_functions.migrations")

# Extensions a copy database cannot hold even where the package is installed.
EXTENSIONS_NOT_IN_A_COPY = {
    "pg_cron": "runs only in the database cron.database_name names, and only when preloaded; "
               "the copy has no scheduled jobs (cron.job)",
}
TRANSACTION_POOLER_PORT = 6543
