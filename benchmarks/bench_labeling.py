"""Labelling speed in a real browser (Debian's chromium through Playwright) and db write latency.

Figures (one JSON line each):
- ``next_item_ms``: key press -> next item rendered, p50/p95/max over ``--items`` judgements
  (keydown timed in the page's capture phase; "rendered" = the completion caption in the DOM changed);
- ``judgements_per_minute``: a scripted labeller that presses the next key as soon as the item shows;
- ``db_write_ms``: ``db.record_judgement`` alone (one committed upsert), p50/p95 over ``--writes``;
- ``db_next_item_ms``: ``db.next_item`` alone (lease the next item), p50/p95;
- ``streamlit_floor_ms``: the key-to-render time of a one-button Streamlit app on the same machine
  and server settings, i.e. what Streamlit, the websocket and the browser cost before this app does anything.

With ``--mode compare``, the Compare page instead (the same budget, 100 ms p95):
- ``next_pair_ms``: key press (1, 2 alternately) -> next pair rendered, p50/p95/max over ``--items`` choices;
- ``db_pair_write_ms`` / ``db_next_pair_ms``: ``db.record_pair_judgement`` / ``db.next_pair`` alone.

Run: ``flock /tmp/rlhf-cpu.lock python benchmarks/bench_labeling.py [--mode compare]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import harness  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    import numpy as np

    return round(float(np.percentile(np.asarray(xs), q)), 2)


def machine() -> dict:
    try:
        import torch

        tv = torch.__version__
    except ImportError:
        tv = None
    import streamlit

    return {
        "nproc": os.cpu_count(),
        "torch": tv,
        "streamlit": streamlit.__version__,
        "python": platform.python_version(),
    }


def review_pieces(n: int) -> list[tuple[str, str]]:
    """``n`` (prompt, completion) pairs cut from real IMDB reviews: the first 6 words, then the next 40
    (reused with a number appended when the sample holds fewer long reviews than ``n``)."""
    from common.imdb import DataConfig, load_imdb

    texts = load_imdb(DataConfig(max_reviews=2 * n + 100))["train"]["text"]
    pieces = []
    for t in texts:
        words = t.split()
        if len(words) >= 46:
            pieces.append((" ".join(words[:6]), " " + " ".join(words[6:46])))
    return [
        (p, c if i < len(pieces) else f"{c} ({i})") for i, (p, c) in ((i, pieces[i % len(pieces)]) for i in range(n))
    ]


def seed(url: str, n: int) -> None:
    import db

    engine = db.connect(url)
    db.add_completions(
        engine, [db.NewCompletion(prompt=p, text=c, model_version_id=None, gen_params={}) for p, c in review_pieces(n)]
    )


def bench_browser(tmp: Path, n_items: int) -> dict:
    url = f"sqlite:///{tmp / 'browser.sqlite'}"
    seed(url, n_items + 30)
    env = {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp / "artifacts"),
    }
    with harness.running_app(env, log_path=tmp / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "bench")
        current = harness.current_completion_id(page)
        for _ in range(5):  # warm-up (imports, first fragment runs)
            current = harness.press_and_wait_next(page, "g", current)
        page.evaluate(harness.LATENCY_PROBE, [harness.COMPLETION_CAPTION])
        t0 = time.perf_counter()
        for i in range(n_items):
            current = harness.press_and_wait_next(page, "gb"[i % 2], current)
        elapsed = time.perf_counter() - t0
        lat = page.evaluate("window.__lat")
        page.screenshot(path=str(tmp / "bench.png"))
    return {"latencies": lat, "elapsed_s": elapsed, "n": n_items}


FLOOR_APP = """
import streamlit as st
st.session_state.setdefault("n", 0)
def inc():
    st.session_state.n += 1
@st.fragment
def f():
    st.button("Good", key="good", on_click=inc, shortcut="G")
    with st.container(key="completion_box"):
        st.caption(f"COMPLETION #{st.session_state.n}")
f()
"""


def bench_floor(tmp: Path, n_items: int) -> list[float]:
    """The same measurement on a one-button Streamlit app: what Streamlit and the browser cost alone."""
    import subprocess
    import urllib.request

    app = tmp / "floor_app.py"
    app.write_text(FLOOR_APP)
    port = harness.free_port()
    from labeling_app.__main__ import streamlit_args

    cmd = streamlit_args(port, "127.0.0.1", app=app)  # the app's own server settings
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        with harness.chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator(harness.COMPLETION_CAPTION).wait_for()
            page.locator("button").first.wait_for()
            time.sleep(0.5)
            current = harness.current_completion_id(page)
            for _ in range(5):
                current = harness.press_and_wait_next(page, "g", current)
            page.evaluate(harness.LATENCY_PROBE, [harness.COMPLETION_CAPTION])
            for _ in range(n_items):
                current = harness.press_and_wait_next(page, "g", current)
            return page.evaluate("window.__lat")
    finally:
        proc.terminate()
        proc.wait(10)


def bench_db(tmp: Path, n_writes: int) -> dict:
    import db

    url = f"sqlite:///{tmp / 'writes.sqlite'}"
    seed(url, n_writes)
    engine = db.connect(url)
    lid = db.get_or_create_labeler(engine, "writer")
    writes, fetches = [], []
    for _ in range(n_writes):
        t = time.perf_counter()
        item = db.next_item(engine, lid, session_key="benchsession", overlap=1)
        fetches.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        db.record_judgement(engine, labeler_id=lid, completion_id=item.completion_id, label="good", seconds=1.0)
        writes.append((time.perf_counter() - t) * 1000)
    return {"writes": writes, "fetches": fetches}


def seed_pairs(url: str, n: int) -> None:
    """``n`` comparisons of two real review continuations of one prompt each."""
    import db

    engine = db.connect(url)
    pieces = review_pieces(2 * n)
    db.add_completions(
        engine,
        [db.NewCompletion(prompt=pieces[2 * i][0], text=pieces[2 * i + k][1]) for i in range(n) for k in (0, 1)],
    )
    db.make_comparisons(engine)


def bench_compare_browser(tmp: Path, n_items: int) -> dict:
    from tests.test_browser_compare import PAIR_CAPTION, current_pair_id, press_and_wait_next, sign_in_to_compare

    url = f"sqlite:///{tmp / 'compare.sqlite'}"
    seed_pairs(url, n_items + 30)
    env = {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp / "artifacts"),
    }
    with harness.running_app(env, log_path=tmp / "streamlit.log") as base, harness.chromium_page() as page:
        sign_in_to_compare(page, base, "bench")
        current = current_pair_id(page)
        for _ in range(5):  # warm-up
            current = press_and_wait_next(page, "1", current)
        page.evaluate(harness.LATENCY_PROBE, [PAIR_CAPTION])
        t0 = time.perf_counter()
        for i in range(n_items):
            current = press_and_wait_next(page, "12"[i % 2], current)
        elapsed = time.perf_counter() - t0
        lat = page.evaluate("window.__lat")
        page.screenshot(path=str(tmp / "bench.png"))
    return {"latencies": lat, "elapsed_s": elapsed, "n": n_items}


def bench_pair_db(tmp: Path, n_writes: int) -> dict:
    import db

    url = f"sqlite:///{tmp / 'pair_writes.sqlite'}"
    seed_pairs(url, n_writes)
    engine = db.connect(url)
    lid = db.get_or_create_labeler(engine, "writer")
    writes, fetches = [], []
    for _ in range(n_writes):
        t = time.perf_counter()
        pair = db.next_pair(engine, lid, session_key="benchsession")
        fetches.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        db.record_pair_judgement(
            engine, labeler_id=lid, comparison_id=pair.comparison_id, choice="a", left_side="b", seconds=1.0
        )
        writes.append((time.perf_counter() - t) * 1000)
    return {"writes": writes, "fetches": fetches}


def main_compare(args, base: dict) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        d_res = bench_pair_db(tmp, args.writes)
        for figure, key in (("db_pair_write_ms", "writes"), ("db_next_pair_ms", "fetches")):
            xs = d_res[key]
            print(
                json.dumps(
                    {
                        **base,
                        "figure": figure,
                        "backend": "sqlite",
                        "n": len(xs),
                        "p50": pct(xs, 50),
                        "p95": pct(xs, 95),
                    }
                )
            )
        b = bench_compare_browser(tmp, args.items)
        lat = b["latencies"]
        print(
            json.dumps(
                {
                    **base,
                    "figure": "next_pair_ms",
                    "n": len(lat),
                    "p50": pct(lat, 50),
                    "p95": pct(lat, 95),
                    "max": round(max(lat), 2),
                    "goal_p95": 100.0,
                    "goal_met": pct(lat, 95) <= 100.0,
                    "comparisons_per_minute": round(b["n"] / b["elapsed_s"] * 60, 1),
                }
            )
        )
        if args.screenshot:
            args.screenshot.write_bytes((tmp / "bench.png").read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode", choices=["label", "compare"], default="label", help="the Label page, or the Compare page"
    )
    parser.add_argument("--items", type=int, default=100, help="judgements timed in the browser")
    parser.add_argument("--writes", type=int, default=300, help="db writes timed")
    parser.add_argument("--screenshot", type=Path, default=None, help="also save the last page as PNG here")
    args = parser.parse_args()
    if not harness.CHROMIUM.exists():
        raise SystemExit("error: /usr/bin/chromium is missing. Fix: apt-get install -y chromium")
    command = "python " + " ".join([str(Path(sys.argv[0]))] + sys.argv[1:])
    base = {"command": command, **machine()}
    if args.mode == "compare":
        main_compare(args, base)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        d_res = bench_db(tmp, args.writes)
        print(
            json.dumps(
                {
                    **base,
                    "figure": "db_write_ms",
                    "backend": "sqlite",
                    "n": args.writes,
                    "p50": pct(d_res["writes"], 50),
                    "p95": pct(d_res["writes"], 95),
                }
            )
        )
        print(
            json.dumps(
                {
                    **base,
                    "figure": "db_next_item_ms",
                    "backend": "sqlite",
                    "n": args.writes,
                    "p50": pct(d_res["fetches"], 50),
                    "p95": pct(d_res["fetches"], 95),
                }
            )
        )
        b = bench_browser(tmp, args.items)
        lat = b["latencies"]
        print(
            json.dumps(
                {
                    **base,
                    "figure": "next_item_ms",
                    "n": len(lat),
                    "p50": pct(lat, 50),
                    "p95": pct(lat, 95),
                    "max": round(max(lat), 2),
                    "goal_p95": 100.0,
                    "goal_met": pct(lat, 95) <= 100.0,
                }
            )
        )
        print(
            json.dumps(
                {
                    **base,
                    "figure": "judgements_per_minute",
                    "n": b["n"],
                    "value": round(b["n"] / b["elapsed_s"] * 60, 1),
                }
            )
        )
        floor = bench_floor(tmp, args.items)
        print(
            json.dumps(
                {
                    **base,
                    "figure": "streamlit_floor_ms",
                    "n": len(floor),
                    "p50": pct(floor, 50),
                    "p95": pct(floor, 95),
                    "note": "one-button Streamlit app, same measurement",
                }
            )
        )
        if args.screenshot:
            args.screenshot.write_bytes((tmp / "bench.png").read_bytes())


if __name__ == "__main__":
    main()
