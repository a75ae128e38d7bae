"""Concurrency drill: N processes label at once through the db API, then we check nothing was lost.

Each process is one labeller with one browser session. It loops: ``next_item`` (sometimes twice,
like a page reload, which must return the same item), ``record_judgement`` (sometimes twice,
like a double click), and with probability ``undo_prob`` ``undo_last`` followed by a re-label of
the same item (which ``next_item`` hands back). It stops when it has ``per_proc`` judgements
standing. Afterwards :func:`check` compares the database with what the processes believe they
wrote: exactly those judgements, none duplicated, none lost, no error surfaced (in particular
no "database is locked"), and with overlap 1 no item handed to two labellers.

Used by ``tests/test_db_concurrency.py`` (small) and ``benchmarks/bench_db.py`` (10,000 judgements), and
from the shell: ``python -m tests.support.drill --url sqlite:///drill.sqlite --procs 8 --per-proc 100``.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
import traceback
from dataclasses import dataclass, field

import db


def labeller_name(index: int, tabs: int) -> str:
    """Process ``index`` is tab ``index % tabs`` of labeller ``index // tabs``."""
    return f"worker-{index // tabs}"


@dataclass
class WorkerResult:
    worker: int
    labeller: str = ""
    expected: dict[int, str] = field(default_factory=dict)  # completion id -> label standing
    served: list[int] = field(default_factory=list)  # ids next_item handed out (new ones only)
    write_latencies: list[float] = field(default_factory=list)  # seconds per record_judgement
    next_latencies: list[float] = field(default_factory=list)
    writes: int = 0
    undos: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def prepare(url: str, n_items: int) -> None:
    """Create the schema and ``n_items`` completions (over a handful of prompts)."""
    engine = db.connect(url)
    items = [db.NewCompletion(f"Prompt {i % 50}", f" completion {i}", None, {"i": i}) for i in range(n_items)]
    for start in range(0, n_items, 2000):
        db.add_completions(engine, items[start : start + 2000])
    engine.dispose()


def worker(
    url: str,
    index: int,
    per_proc: int,
    undo_prob: float,
    seed: int,
    barrier,
    out,
    tabs: int = 1,
) -> None:
    res = WorkerResult(index, labeller_name(index, tabs))
    try:
        engine = db.connect(url, upgrade=False)
        rng = random.Random(seed * 1000 + index)
        lab = db.get_or_create_labeler(engine, labeller_name(index, tabs))
        key = f"session-{index}"
        barrier.wait()
        t0 = time.perf_counter()
        relabel: int | None = None
        while len(res.expected) < per_proc:
            t = time.perf_counter()
            item = db.next_item(engine, lab, session_key=key)
            res.next_latencies.append(time.perf_counter() - t)
            if item is None:
                res.errors.append(f"queue ran dry after {len(res.expected)} judgements")
                break
            if relabel is not None:
                if item.completion_id != relabel:
                    res.errors.append(f"after undo got {item.completion_id}, expected {relabel} again")
                relabel = None
            elif item.completion_id not in res.expected:
                res.served.append(item.completion_id)
            if rng.random() < 0.05:  # a page reload resumes the same item
                again = db.next_item(engine, lab, session_key=key)
                if again is None or again.completion_id != item.completion_id:
                    res.errors.append(f"reload gave {again} instead of {item.completion_id}")
            label = rng.choice(("good", "bad"))
            t = time.perf_counter()
            db.record_judgement(
                engine, labeler_id=lab, completion_id=item.completion_id, label=label, seconds=rng.random() * 5
            )
            res.write_latencies.append(time.perf_counter() - t)
            res.writes += 1
            if rng.random() < 0.05:  # a double click
                db.record_judgement(engine, labeler_id=lab, completion_id=item.completion_id, label=label)
                res.writes += 1
            res.expected[item.completion_id] = label
            if rng.random() < undo_prob:
                undone = db.undo_last(engine, lab, session_key=key)
                res.undos += 1
                if undone != item.completion_id:
                    res.errors.append(f"undo returned {undone}, expected {item.completion_id}")
                res.expected.pop(undone, None)
                relabel = undone
        res.seconds = time.perf_counter() - t0
        engine.dispose()
    except BaseException as err:  # every error is a finding of the drill
        res.errors.append(f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
    out.put(res)


def run(
    url: str,
    *,
    procs: int = 8,
    per_proc: int = 150,
    undo_prob: float = 0.1,
    seed: int = 0,
    spare: float = 0.1,
    tabs: int = 1,
) -> dict:
    """Prepare, run ``procs`` processes at once, check; returns the report (see :func:`check`).

    With ``tabs`` > 1 every labeller works in that many processes at once (browser tabs, one
    session each); undo is then off, since "undo my last judgement" may concern the other tab."""
    if tabs > 1:
        undo_prob = 0.0
    n_items = int(procs * per_proc * (1 + spare)) + 20
    prepare(url, n_items)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    ps = [
        ctx.Process(target=worker, args=(url, i, per_proc, undo_prob, seed, barrier, out, tabs)) for i in range(procs)
    ]
    for p in ps:
        p.start()
    # Wait until every worker has imported, connected and signed in; a worker that dies on the
    # way (its error is on stderr) ends the drill at once instead of leaving the barrier waiting.
    deadline = time.monotonic() + 600
    while barrier.n_waiting < procs:
        dead = [p.exitcode for p in ps if p.exitcode is not None]
        if dead or time.monotonic() > deadline:
            for p in ps:
                p.kill()
            raise RuntimeError(
                f"drill workers did not start (exit codes {dead or 'none yet, timed out'}); "
                "their error is on stderr above"
            )
        time.sleep(0.05)
    try:
        barrier.wait(timeout=60)
    except threading.BrokenBarrierError:
        for p in ps:
            p.kill()
        raise RuntimeError("drill workers did not start; run a worker alone to see its error") from None
    t0 = time.perf_counter()
    results = [out.get(timeout=3600) for _ in ps]
    wall = time.perf_counter() - t0
    for p in ps:
        p.join(timeout=60)
    return check(url, results, wall=wall)


def count_drift(engine) -> int:
    """Completions whose maintained ``n_labels`` differs from a recount of their judgements (should be 0)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from db.models import Completion
    from db.queue import n_labels_expr

    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(Completion).where(Completion.n_labels != n_labels_expr())) or 0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def check(url: str, results: list[WorkerResult], *, wall: float) -> dict:
    """Compare the database with what the workers wrote; returns counts, problems and figures."""
    engine = db.connect(url, upgrade=False)
    rows = db.judgement_rows(engine)
    drift = count_drift(engine)
    engine.dispose()
    actual = [(r["labeler"], r["completion_id"], r["label"]) for r in rows]
    expected = {(r.labeller, cid, lab) for r in results for cid, lab in r.expected.items()}
    problems: list[str] = [f"worker {r.worker}: {e}" for r in results for e in r.errors]
    if len(actual) != len(set(actual)):
        problems.append(f"{len(actual) - len(set(actual))} duplicated judgements")
    lost = expected - set(actual)
    extra = set(actual) - expected
    if lost:
        problems.append(f"{len(lost)} judgements lost, e.g. {sorted(lost)[:3]}")
    if extra:
        problems.append(f"{len(extra)} unexpected judgements, e.g. {sorted(extra)[:3]}")
    owner: dict[int, int] = {}
    shared = 0
    for r in results:
        for cid in set(r.served):
            if cid in owner and owner[cid] != r.worker:
                shared += 1
            owner[cid] = r.worker
    if shared:
        problems.append(f"{shared} items served to two labellers with overlap 1")
    if drift:
        problems.append(f"{drift} completions whose n_labels differs from their judgements")
    locked = sum("locked" in e.lower() for r in results for e in r.errors)
    writes = [x for r in results for x in r.write_latencies]
    nexts = [x for r in results for x in r.next_latencies]
    return {
        "processes": len(results),
        "judgements_expected": len(expected),
        "judgements_in_db": len(actual),
        "record_calls": sum(r.writes for r in results),
        "undos": sum(r.undos for r in results),
        "lost": len(lost),
        "duplicated": len(actual) - len(set(actual)),
        "unexpected": len(extra),
        "served_to_two": shared,
        "locked_errors_surfaced": locked,
        "problems": problems,
        "wall_s": wall,
        "judgements_per_s": len(expected) / wall if wall else float("nan"),
        "write_latency_p50_ms": 1000 * _pct(writes, 0.5),
        "write_latency_p95_ms": 1000 * _pct(writes, 0.95),
        "next_item_latency_p50_ms": 1000 * _pct(nexts, 0.5),
        "next_item_latency_p95_ms": 1000 * _pct(nexts, 0.95),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.drill --url sqlite:///... --procs 8 --per-proc 100``: run the drill, print its report."""
    import argparse
    import json

    p = argparse.ArgumentParser(
        prog="python -m tests.support.drill",
        description="N labeller processes write at once through the db API; prints the check as JSON "
        "(exit 1 when anything was lost, duplicated or served twice).",
    )
    p.add_argument("--url", required=True, help="database URL (sqlite:///drill.sqlite or postgresql+psycopg://...)")
    p.add_argument("--procs", type=int, default=8, help="labeller processes at once")
    p.add_argument("--per-proc", type=int, default=150, help="judgements each process leaves standing")
    p.add_argument("--undo-prob", type=float, default=0.1, help="probability of an undo and re-label after a judgement")
    p.add_argument("--tabs", type=int, default=1, help="processes (browser tabs) per labeller; >1 turns undo off")
    p.add_argument("--seed", type=int, default=0, help="seed of the labellers' choices")
    args = p.parse_args(argv)
    report = run(
        args.url, procs=args.procs, per_proc=args.per_proc, undo_prob=args.undo_prob, seed=args.seed, tabs=args.tabs
    )
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
