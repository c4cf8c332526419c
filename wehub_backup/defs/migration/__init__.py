"""The migration job's Dagster layer: its config, ops and job."""
