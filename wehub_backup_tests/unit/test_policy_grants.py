"""How the migration reads supautils' policy grants: which tables the login may write policies on."""

from __future__ import annotations

from wehub_backup.migration import managed_tables


def test_policy_grants_are_read_as_supautils_reads_them() -> None:
    setting = '{"postgres": ["auth.users", "storage.objects", 7], "other": ["public.x"]}'

    assert managed_tables.policy_grant_tables(setting, "postgres") == {"auth.users", "storage.objects"}
    assert managed_tables.policy_grant_tables(setting, "anon") == frozenset()
    assert managed_tables.policy_grant_tables("not json", "postgres") == frozenset()
    assert managed_tables.policy_grant_tables(None, "postgres") == frozenset()
    assert managed_tables.policy_grant_tables('["postgres"]', "postgres") == frozenset()
