"""The benchmark report's targets: peak RSS of each engine of the job at two database sizes, and
the targets of a run that measured the stream engine alone against one tool."""

from __future__ import annotations

from bench.report import Summary, memory_target_of, render_targets

MIB = 2**20


def results(scale_mb: int, source_mib: int, peaks: dict[str, tuple[int, int]]) -> dict:
    """A results file's figures that the memory target reads: per contender, main and child peaks in MiB."""
    return {"scale_mb": scale_mb, "source_bytes": source_mib * MIB, "measurements": [
        {"contender": key, "peaks": {"main_bytes": main * MIB, "child_bytes": child * MIB, "largest_child": "psql"}}
        for key, (main, child) in peaks.items()]}


def test_flat_peaks_meet_the_target_for_each_engine_measured_at_both_sizes() -> None:
    small = results(100, 100, {"job": (120, 12), "job_stream": (124, 9)})
    large = Summary(results(1024, 1000, {"job": (126, 13), "job_stream": (131, 9)}))
    archive, stream = memory_target_of("job", large, [small]), memory_target_of("job_stream", large, [small])
    assert archive.startswith("Peak RSS of wehub-backup (the Dagster job) does not grow with database size: **met** "
                              "(largest growth 1.08x for 10.0x the data; the main process 6.8 MiB more per GiB "
                              "of data)"), archive
    assert "stream engine does not grow with database size: **met** (largest growth 1.06x" in stream, stream
    assert "100 MB: main 124.0 MiB, largest child 9.0 MiB (psql); 1024 MB: main 131.0 MiB" in stream


def test_peaks_growing_with_the_data_miss_the_target() -> None:
    small = results(100, 100, {"job_stream": (120, 9)})
    large = Summary(results(1024, 1000, {"job_stream": (240, 9)}))
    assert "**missed** (largest growth 2.00x for 10.0x the data; the main process 136.5 MiB more per GiB" in memory_target_of("job_stream", large, [small])


def test_an_engine_measured_at_one_size_only_is_not_compared() -> None:
    small = results(100, 100, {"job": (120, 12)})
    large = Summary(results(1024, 1000, {"job": (126, 13), "job_stream": (131, 9)}))
    assert "stream engine does not grow with size: not compared" in memory_target_of("job_stream", large, [small])


def test_the_stream_engine_measured_without_the_archive_engine_gets_its_targets() -> None:
    steps = {"plan_supabase_backup": 0.5, "dump_supabase_database": 2.0, "restore_into_staging_database": 20.0,
             "verify_restored_database": 4.0, "promote_staging_database": 0.5}
    stream = {"contender": "job_stream", "repetition": 1, "seconds": 30.0, "source_bytes": 1002 * MIB,
              "temp_disk_bytes": MIB,
              "peaks": {"main_bytes": 150 * MIB, "child_bytes": 13 * MIB, "largest_child": "psql"},
              "details": {"step_s": steps, "load_phase_s": {"copy": 15.0, "post-data": 5.0}}}
    tool = {"contender": "directory_z0", "repetition": 1, "seconds": 20.0, "source_bytes": 1000 * MIB,
            "temp_disk_bytes": 900 * MIB, "peaks": {"main_bytes": 20 * MIB, "child_bytes": 0, "largest_child": ""},
            "details": {}}
    text = render_targets(Summary({"scale_mb": 1024, "source_bytes": 1000 * MIB, "jobs": 2,
                             "measurements": [tool, stream]}), [])
    assert text.startswith("## The targets"), text
    assert ("stream engine <= 1.05x the fastest other contender: **missed**: 30.0 s against 20.0 s (directory_z0), "
            "1.50x, 9.0 s over. Why: the steps run one after another (run 1, the median): the schema dump 2.0 s, "
            "the load step 20.0 s (copy 15.0 s, post-data 5.0 s)") in text
    assert "Bytes from the source of wehub-backup, stream engine <= 1.001x `pg_dump`'s: **missed**" in text
    assert "Temporary disk" not in text and "Command start" not in text, "targets of a contender that did not run"
