"""``python -m bench.run`` (``make bench``): build the source, run the contenders alternating, write BENCHMARKS.md.

Contenders run in turn (A B C D A B C D ...), so a slow phase of the machine hits all of
them alike; each run writes into a fresh database that is checked against the source
(row counts every time, full fingerprints on the last repetition) before it counts.
The incremental contenders run after them, since they change the source: per repetition a
full run into a target of their own, then each incremental run into that copy (fingerprinted
every time), the source changed before it as an application would change it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from bench import diagnostics, report
from bench.changes import apply_changes
from bench.contenders import (
    CONTENDERS,
    INCREMENT_BASE,
    INCREMENTAL_CONTENDERS,
    Attempt,
    Contender,
    IncrementalContender,
    missing_programs,
)
from bench.dataset import BenchServers, CopyPlan, prepare_copy, start_servers
from bench.incremental_report import OVER_LINK
from bench.link import LimitedLinkRelay
from bench.measure import RunMeasurement, Sampler
from wehub_backup.pg.clients import PgClient, choose_client
from wehub_backup.pg.databases import drop_database
from wehub_backup.pg.fingerprint import DatabaseFingerprint, compare_fingerprints, fingerprint_database
from wehub_backup.pg.relay import ByteCountingRelay
from wehub_backup.run.targets import previous_name

REPO = Path(__file__).resolve().parent.parent
MIN_SCALE_MB, MAX_SCALE_MB = 100, 10240
ALL_CONTENDERS = [*CONTENDERS, *INCREMENTAL_CONTENDERS]
# A VPS's link to Supabase: the benchmark's servers share a machine, where a transfer costs next to nothing.
DEFAULT_LINK_MBIT = 100.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def scale_argument(value: str) -> int:
    scale = int(value)
    if not MIN_SCALE_MB <= scale <= MAX_SCALE_MB:
        raise argparse.ArgumentTypeError(f"--scale must be between {MIN_SCALE_MB} and {MAX_SCALE_MB} (MB)")
    return scale


def contender_list(value: str) -> list[str]:
    keys = [key.strip() for key in value.split(",") if key.strip()]
    unknown = [key for key in keys if key not in ALL_CONTENDERS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown contender(s) {unknown}; choose from {', '.join(ALL_CONTENDERS)}")
    return keys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=scale_argument, default=1024, help="source size in MB (100..10240, default 1024)")
    parser.add_argument("--repetitions", type=int, default=3, help="runs of each contender (default 3)")
    parser.add_argument("--contenders", type=contender_list, default=list(ALL_CONTENDERS),
                        help=f"comma-separated, from {','.join(ALL_CONTENDERS)} (default all; the incremental "
                             "ones run last, after a full run of their own, and change the source)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md", help="report to write")
    parser.add_argument("--keep", action="store_true",
                        help="keep the clusters (stopped) in --base-dir; a later run at the same scale reuses the source")
    parser.add_argument("--base-dir", type=Path, default=None,
                        help="where the clusters live (default /var/tmp/wehub-bench-SCALE)")
    parser.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results",
                        help="raw results as JSON, one file per scale (BENCHMARKS.md compares scales from here)")
    parser.add_argument("--link-mbit", type=float, default=DEFAULT_LINK_MBIT,
                        help="after the incremental runs, their chain once more with the source behind a link of "
                             f"this many Mbit/s shared by its connections (default {DEFAULT_LINK_MBIT:g}; 0: not)")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the untimed cost breakdown")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite --output from the results of --scale already in --results-dir")
    return parser


@dataclass
class Session:
    """One benchmark invocation: the servers, the copy scope and what has been measured."""

    servers: BenchServers
    plan: CopyPlan
    client: PgClient
    jobs: int
    workdir: Path
    dagster_home: Path
    source_fingerprint: DatabaseFingerprint
    passfile: Path

    def run(self, contender: Contender, repetition: int, database: str | None = None,
            backup_dir: Path | None = None, link_mbit: float = 0.0) -> RunMeasurement:
        """One timed run, then a row-count check of the copy: into a fresh database and working
        directory, or into ``database`` with ``backup_dir`` kept between runs (an incremental chain);
        with ``link_mbit``, the source's bytes cross a link of that many megabits a second."""
        database = database or f"bench_{contender.key}_{repetition}"
        workdir = backup_dir or self.workdir / f"{contender.key}-{repetition}"
        workdir.mkdir(mode=0o700, exist_ok=backup_dir is not None)
        source = self.servers.source
        relay = LimitedLinkRelay(source.host, source.port, link_mbit) if link_mbit \
            else ByteCountingRelay(source.host, source.port)
        with relay:
            passfile = self.servers.write_passfile(self.workdir / "relay.pgpass", relay.port)
            attempt = Attempt(
                database, workdir, self.servers.source_info(passfile).via_relay(relay.port),
                self.servers.target_info(passfile), passfile, self.client, self.jobs, self.plan.scope, self.dagster_home,
            )
            self.wait_until_idle()
            load_before = os.getloadavg()[0]
            with Sampler(workdir) as sampler:
                started = time.monotonic()
                details = contender.run(attempt)
                seconds = time.monotonic() - started
            received = relay.counters.received_from_server
        if backup_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        self.check_row_counts(database)
        details["load_before"] = load_before
        return RunMeasurement(contender.key, repetition, seconds, sampler.peaks, sampler.disk_bytes, received, details)

    def wait_until_idle(self, timeout_s: float = 300) -> None:
        """Start each run on a quiet machine: a fresh checkpoint, written data flushed to disk,
        no autovacuum worker and no other query running (what pgbench does before a run).

        A run writes gigabytes of WAL and tables: the checkpoint it makes due, and the pages
        it leaves for the kernel to flush, would slow the next run's writes. A fresh copy also
        draws autovacuum (the job leaves planner statistics to it). That work belongs to the
        run that caused it, not to whichever contender runs next.
        """
        for cluster in (self.servers.source, self.servers.target):
            cluster.execute("CHECKPOINT")
        os.sync()
        busy = """SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()
                  AND (backend_type = 'autovacuum worker' OR (backend_type = 'client backend' AND state = 'active'))"""
        deadline = time.monotonic() + timeout_s
        for cluster in (self.servers.source, self.servers.target):
            while cluster.query(busy)[0][0] and time.monotonic() < deadline:
                time.sleep(0.5)

    def target_connection(self, database: str) -> psycopg.Connection:
        return self.servers.target_info(self.passfile).connect(database)

    def check_row_counts(self, database: str) -> None:
        """Every table of the scope holds as many rows as in the source, or the run does not count."""
        with self.target_connection(database) as conn:
            for name, table in self.source_fingerprint.tables.items():
                schema, _, relname = name.partition(".")
                rows = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(relname))).fetchone()[0]
                if rows != table.rows:
                    raise RuntimeError(f"{database}: {name} has {rows} rows, the source {table.rows}")

    def compare_with_source(self, database: str) -> tuple[float, list[str]]:
        """Full fingerprint of a copy against the source: seconds taken and every difference."""
        started = time.monotonic()
        with self.target_connection(database) as conn:
            copy = fingerprint_database(conn, self.plan.kept_schemas, self.plan.scope.excluded_tables)
        return time.monotonic() - started, compare_fingerprints(self.source_fingerprint, copy)

    def drop(self, database: str) -> None:
        with self.target_connection("postgres") as conn:
            drop_database(conn, database)


def fingerprint_source(servers: BenchServers, plan: CopyPlan, passfile: Path) -> tuple[DatabaseFingerprint, float]:
    """The source's fingerprint in one snapshot, and how long it took alone."""
    started = time.monotonic()
    with servers.source_info(passfile).connect(autocommit=False) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        fingerprint = fingerprint_database(conn, plan.kept_schemas, plan.scope.excluded_tables)
        conn.rollback()
    return fingerprint, time.monotonic() - started


def check_copy(session: Session, key: str, database: str) -> dict[str, object]:
    """A contender's last copy against the source's fingerprint (untimed)."""
    seconds, problems = session.compare_with_source(database)
    log(f"{key}: copy {'identical to the source' if not problems else 'differs: ' + '; '.join(problems[:3])}")
    return {"fingerprint_s": seconds, "differences": problems}


def prepare_dagster_home(path: Path) -> Path:
    """A Dagster instance like the demo's (SQLite storage), created before the first timed run."""
    import dagster as dg

    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", path / "dagster.yaml")
    dg.DagsterInstance.from_config(str(path)).dispose()
    return path


def run_benchmark(args: argparse.Namespace) -> dict:
    """Everything between starting the servers and writing the report."""
    base_dir = args.base_dir or Path(f"/var/tmp/wehub-bench-{args.scale}")
    servers = start_servers(base_dir, args.scale, log)
    try:
        return measure_all(servers, args)
    finally:
        servers.stop(keep=args.keep)
        if not args.keep:
            shutil.rmtree(base_dir, ignore_errors=True)


def measure_all(servers: BenchServers, args: argparse.Namespace) -> dict:
    workdir = servers.base_dir / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(mode=0o700)
    plan = prepare_copy(servers)
    passfile = servers.write_passfile(workdir / "pgpass")
    client = choose_client(servers.source.major)
    source_fingerprint, source_fingerprint_s = fingerprint_source(servers, plan, passfile)
    session = Session(servers, plan, client, os.cpu_count() or 1, workdir,
                      prepare_dagster_home(workdir / "dagster_home"), source_fingerprint, passfile)
    source_bytes = servers.source_bytes()
    log(f"source: {source_bytes / 2**20:.0f} MiB, {source_fingerprint.total_rows:,} rows in "
        f"{len(source_fingerprint.tables)} tables; contenders {', '.join(args.contenders)}; "
        f"{args.repetitions} repetitions; {session.jobs} jobs")
    # Copies are checked and dropped as soon as they are made (a copy left behind draws autovacuum
    # into later runs); the job's last one stays for the untimed diagnostics.
    alternating = [key for key in args.contenders if key in CONTENDERS]
    kept = f"bench_{'job' if 'job' in alternating else alternating[-1]}_{args.repetitions}" if alternating else ""
    copies: dict[str, dict] = {}
    measurements: list[RunMeasurement] = []
    for repetition in range(1, args.repetitions + 1):
        for key in alternating:
            measurement = session.run(CONTENDERS[key], repetition)
            measurements.append(measurement)
            log(f"{key} #{repetition}: {measurement.seconds:.1f} s, {measurement.source_bytes / 2**20:.1f} MiB from source, "
                f"temp disk {measurement.temp_disk_bytes / 2**20:.1f} MiB")
            database = f"bench_{key}_{repetition}"
            if repetition == args.repetitions:
                copies[key] = check_copy(session, key, database)
            if database != kept:
                session.drop(database)
    found = {} if args.no_diagnostics or not kept else diagnostics.run_all(session, kept, log)
    if kept:
        session.drop(kept)
    # Last: the incremental runs change the source every other contender copies.
    incremental = [INCREMENTAL_CONTENDERS[k] for k in INCREMENTAL_CONTENDERS if k in args.contenders]
    increments = measure_increments(session, incremental, args.repetitions) if incremental else None
    over_link = measure_increments(session, incremental, 1, args.link_mbit) if incremental and args.link_mbit else None
    return {
        "scale_mb": args.scale,
        "repetitions": args.repetitions,
        "contenders": args.contenders,
        "jobs": session.jobs,
        "source_bytes": source_bytes,
        "source_rows": source_fingerprint.total_rows,
        "source_tables": len(source_fingerprint.tables),
        "source_fingerprint_s": source_fingerprint_s,
        "left_out": [str(item) for item in plan.scope.left_out],
        "measurements": [asdict(m) for m in measurements],
        "copies": copies,
        **({"incremental": increments} if increments else {}),
        **({OVER_LINK: over_link} if over_link else {}),
        "diagnostics": found,
        "environment": report.environment(servers, client),
    }


def measure_increments(session: Session, contenders: list[IncrementalContender], repetitions: int,
                       link_mbit: float = 0.0) -> dict:
    """Per repetition, a full run into a fresh target, then each incremental run into that copy, the
    source changed before it as an app would (untimed); every copy is fingerprinted against the source.
    With ``link_mbit``, every run reads the source over a link of that bandwidth."""
    measurements: list[RunMeasurement] = []
    copies: dict[str, dict] = {}
    changes: list[dict] = []
    chain = "incremental_link" if link_mbit else "incremental"
    for repetition in range(1, repetitions + 1):
        database, backup_dir = f"bench_{chain}_{repetition}", session.workdir / f"{chain}-{repetition}"
        for contender in [INCREMENT_BASE, *contenders]:
            if contender.changed_share:
                done = apply_changes(session.servers, contender.changed_share, len(changes) + 1)
                changes.append({"contender": contender.key, "repetition": repetition, "tables": done})
                session.source_fingerprint = fingerprint_source(session.servers, session.plan, session.passfile)[0]
                log(f"{contender.key}: changed " + ", ".join(
                    f"{name} +{d['inserts']} ~{d['updates']} -{d['deletes']}" for name, d in done.items()))
            measurement = session.run(contender, repetition, database, backup_dir, link_mbit)
            measurements.append(measurement)
            egress = measurement.details["egress_bytes"]
            log(f"{contender.key} #{repetition}{f' over {link_mbit:g} Mbit/s' if link_mbit else ''}: "
                f"{measurement.seconds:.1f} s, {measurement.details['mode']} run, "
                f"egress {egress / 2**20:.2f} MiB, {measurement.details.get('chunks_copied')} of "
                f"{measurement.details.get('chunks_compared')} chunks fetched")
            if contender is not INCREMENT_BASE and measurement.details["mode"] != "incremental":
                raise RuntimeError(f"{contender.key}: the run was {measurement.details['mode']}, "
                                   f"not incremental: {measurement.details['mode_reason']}")
            checked = check_copy(session, contender.key, database)
            if not copies.get(contender.key, {}).get("differences"):  # a copy that differed once stays on record
                copies[contender.key] = checked
        for name in (database, previous_name(database)):
            session.drop(name)
        shutil.rmtree(backup_dir, ignore_errors=True)
    return {"measurements": [asdict(m) for m in measurements], "copies": copies, "changes": changes,
            "source_bytes_after": session.servers.source_bytes(), "link_mbit": link_mbit}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repetitions < 1:
        print("--repetitions must be at least 1", file=sys.stderr)
        return 2
    results_file = args.results_dir / f"scale-{args.scale}.json"
    if args.report_only:
        results = json.loads(results_file.read_text())
    else:
        problems = missing_programs(args.contenders)
        if problems:
            for problem in problems:
                print(f"bench: {problem}", file=sys.stderr)
            print("bench: or leave it out, e.g. --contenders plain,directory,job", file=sys.stderr)
            return 2
        results = run_benchmark(args)
        args.results_dir.mkdir(parents=True, exist_ok=True)
        results_file.write_text(json.dumps(results, indent=1, default=str))
    existing = args.output.read_text() if args.output.exists() else None
    args.output.write_text(report.render(results, report.load_other_scales(args.results_dir, args.scale), existing))
    log(f"wrote {args.output} (raw figures in {results_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
