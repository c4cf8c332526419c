"""The benchmark report's memory target: peak RSS of each engine of the job at two database sizes."""

from __future__ import annotations

from bench.report import Summary, memory_target_of

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
