"""Failure and freshness alerts: classify what went wrong, word it, and deliver it.

An operator reading an alert at night needs one line that says what broke (wrong password,
unreachable host, pg_dump too old, a table that did not verify...) and a link to the run.
Everything here is plain Python, testable without a Dagster run.
"""
