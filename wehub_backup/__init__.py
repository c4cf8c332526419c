"""Verified Supabase <-> VPS PostgreSQL backups and migrations, as a Dagster code location."""
