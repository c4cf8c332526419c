"""The backup job's Dagster layer: its config, ops, job and weekly schedule."""
