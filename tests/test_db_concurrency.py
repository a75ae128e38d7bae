"""Concurrency drill (small): 8 processes label at once on SQLite (WAL) and on PostgreSQL.

Afterwards exactly the judgements the processes wrote exist, none duplicated or lost, no
"database is locked" reached a labeller, and with overlap 1 no item was handed to two labellers.
The full-size run (10,000 judgements) is ``benchmarks/bench_db.py``.
"""

from __future__ import annotations

import pytest

from tests.support import drill


def test_eight_labellers_at_once_lose_nothing(backend_url):
    report = drill.run(backend_url, procs=8, per_proc=75, undo_prob=0.1, seed=1)
    assert report["problems"] == []
    assert report["judgements_in_db"] == report["judgements_expected"] == 8 * 75
    assert report["lost"] == report["duplicated"] == report["unexpected"] == 0
    assert report["served_to_two"] == 0 and report["locked_errors_surfaced"] == 0
    assert report["undos"] > 0  # the drill really exercised undo/re-label


@pytest.mark.parametrize("procs", [4])
def test_concurrent_first_connect_migrates_once(tmp_path, procs):
    """Several processes opening a brand-new SQLite file at once all succeed (migration serialised)."""
    import multiprocessing as mp

    url = f"sqlite:///{tmp_path / 'fresh' / 'f.sqlite'}"
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        revs = pool.map(_connect_and_report, [url] * procs)
    assert len(set(revs)) == 1 and revs[0] is not None


def _connect_and_report(url: str) -> str | None:
    import db

    engine = db.connect(url)
    try:
        return db.current_revision(engine)
    finally:
        engine.dispose()


WRITER = """
import sys, db
engine = db.connect(sys.argv[1])
lab = db.get_or_create_labeler(engine, "killed")
while True:
    item = db.next_item(engine, lab, session_key="s")
    if item is None:
        break
    db.record_judgement(engine, labeler_id=lab, completion_id=item.completion_id, label="good")
    print(item.completion_id, flush=True)  # acknowledged only after the commit returned
"""


def test_sigkill_during_writes_loses_no_acknowledged_judgement(tmp_path):
    """A labeller process killed with SIGKILL mid-stream: the SQLite file passes integrity_check and
    holds every judgement whose write had returned."""
    import signal
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    import db

    path = tmp_path / "crash.sqlite"
    url = f"sqlite:///{path}"
    drill.prepare(url, 2000)
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(repo)},
    )
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) == 40:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    engine = db.connect(url)
    stored = {r["completion_id"] for r in db.judgement_rows(engine)}
    assert set(acked) <= stored and len(stored) <= len(acked) + 1  # at most the one in flight
    engine.dispose()


def test_two_tabs_per_labeller_never_share_an_item(backend_url):
    """4 labellers x 2 tabs (8 processes): no item is handed to two tabs or two labellers."""
    report = drill.run(backend_url, procs=8, per_proc=20, tabs=2, seed=2)
    assert report["problems"] == []
    assert report["judgements_in_db"] == report["judgements_expected"] == 8 * 20
    assert report["served_to_two"] == 0
