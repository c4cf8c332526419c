"""Real PostgreSQL clusters for tests: a Supabase-like source and a vanilla VPS target."""

from .cluster import PostgresCluster, find_local_bindir, find_newer_postgres_bindir

__all__ = ["PostgresCluster", "find_local_bindir", "find_newer_postgres_bindir"]
