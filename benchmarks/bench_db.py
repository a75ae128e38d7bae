"""Benchmark the feedback database under a team of labellers (issue 8's concurrency drill, full size).

8 processes label at once (10,000 judgements in total, random undo and re-label, double clicks,
page reloads) against SQLite (WAL, synchronous=FULL) and against a private PostgreSQL server
with its default durability (fsync on). Prints one JSON line per backend with judgements/s,
the write latency of one judgement (p50/p95) under that load, the next-item latency, and the
correctness checks (lost / duplicated / served to two / "database is locked" surfaced); plus one
line per backend with the uncontended single-process write latency.

Run under the CPU lock:  flock /tmp/rlhf-cpu.lock python benchmarks/bench_db.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import db
from tests.support import drill


def machine() -> dict:
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    return {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "nproc": os.cpu_count(),
        "torch": torch_version,
        "sqlalchemy": version("SQLAlchemy"),
        "python": platform.python_version(),
    }


def single_writer_latency(url: str, n: int = 300) -> dict:
    """Uncontended: one process, next_item + record_judgement, n times."""
    drill.prepare(url, n + 10)
    engine = db.connect(url, upgrade=False)
    lab = db.get_or_create_labeler(engine, "solo")
    writes, nexts = [], []
    for i in range(n):
        t = time.perf_counter()
        item = db.next_item(engine, lab, session_key="solo")
        nexts.append(time.perf_counter() - t)
        t = time.perf_counter()
        db.record_judgement(engine, labeler_id=lab, completion_id=item.completion_id, label="good" if i % 2 else "bad")
        writes.append(time.perf_counter() - t)
    engine.dispose()
    return {
        "judgements": n,
        "write_latency_p50_ms": 1000 * drill._pct(writes, 0.5),
        "write_latency_p95_ms": 1000 * drill._pct(writes, 0.95),
        "next_item_latency_p50_ms": 1000 * drill._pct(nexts, 0.5),
        "next_item_latency_p95_ms": 1000 * drill._pct(nexts, 0.95),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=8, help="labeller processes at once")
    ap.add_argument("--judgements", type=int, default=10_000, help="judgements standing at the end, in total")
    ap.add_argument("--undo-prob", type=float, default=0.1, help="chance of undo + re-label after a judgement")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    per_proc = args.judgements // args.procs
    ok = True
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-db-") as tmp:
            server = None
            try:
                if backend == "sqlite":
                    url, solo_url = f"sqlite:///{tmp}/drill.sqlite", f"sqlite:///{tmp}/solo.sqlite"
                else:
                    from tests.support.postgres import TempPostgres

                    server = TempPostgres(durable=True).start()
                    url, solo_url = server.create_database("drill"), server.create_database("solo")
                solo = single_writer_latency(solo_url)
                print(json.dumps({"bench": "db_single_writer", "backend": backend, **solo, **machine()}), flush=True)
                report = drill.run(url, procs=args.procs, per_proc=per_proc, undo_prob=args.undo_prob, seed=args.seed)
                ok &= not report["problems"]
                print(
                    json.dumps({"bench": "db_concurrency_drill", "backend": backend, **report, **machine()}), flush=True
                )
            finally:
                if server is not None:
                    server.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
