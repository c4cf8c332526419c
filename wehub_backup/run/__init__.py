"""A run's life without Dagster: the databases it may write, its working directory, its locks, its log line."""
