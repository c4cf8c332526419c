"""The Dagster layer: resources, one package per job (config, ops, job, schedule), sensors, assets."""
