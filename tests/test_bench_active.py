"""benchmarks/bench_active.py: which items each order labels next, and labels-to-accuracy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_active  # noqa: E402


def test_each_order_picks_its_items():
    spread = np.array([0.1, 0.4, 0.0, 0.3, 0.2])
    mean = np.array([0.9, 0.1, 0.48, 0.7, 0.55])
    pool = list(range(5))
    rng = np.random.default_rng(0)
    assert bench_active.pick_next("uncertain", pool, spread, 2, rng, mean=mean) == [1, 3]
    assert bench_active.pick_next("margin", pool, spread, 2, rng, mean=mean) == [2, 4]
    mixed = bench_active.pick_next("mixed", pool, spread, 4, np.random.default_rng(2), mean=mean)
    assert mixed[:2] == [1, 3] and len(set(mixed)) == 4  # half by spread, half at random from the rest
    picked = bench_active.pick_next("random", pool, spread, 3, np.random.default_rng(1), mean=mean)
    assert len(set(picked)) == 3 and set(picked) <= set(pool)
    # balanced: 3 of 5 predicted good, so 1 of a batch of 2 from each side, the largest spread within it
    assert bench_active.pick_next("balanced", pool, spread, 2, rng, mean=mean) == [3, 1]
    # no spread (one model): uncertain cannot rank, and falls back to a random batch
    assert len(set(bench_active.pick_next("uncertain", pool, None, 3, rng))) == 3


def test_labels_to_accuracy_is_the_first_budget_reaching_each_target():
    rows = [
        {"order": "random", "labels": 100, "accuracy": 70.0},
        {"order": "random", "labels": 200, "accuracy": 74.0},
        {"order": "uncertain", "labels": 100, "accuracy": 70.0},
        {"order": "uncertain", "labels": 200, "accuracy": 76.0},
    ]
    got = bench_active.labels_to_accuracy(rows, [70.0, 74.0, 75.0])
    assert got["random"] == {"70.0": 100, "74.0": 200, "75.0": None}
    assert got["uncertain"] == {"70.0": 100, "74.0": 200, "75.0": 200}


def test_uncertain_without_an_ensemble_is_a_one_line_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_active.py"), "--db", str(tmp_path / "none.sqlite")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "RLHF_ARTIFACTS": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "ensemble_size=3" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "none.sqlite").exists()
