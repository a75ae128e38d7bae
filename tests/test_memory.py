"""common.memory: the figures the demo's report prints per step."""

from __future__ import annotations

import sys

import pytest

from common.memory import current_rss_mb, peak_rss_mb, release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_and_current_rss_follow_a_large_allocation_and_its_release():
    before = peak_rss_mb()
    block = bytearray(200 * 1024 * 1024)  # 200 MiB, touched (zero-filled)
    during = current_rss_mb()
    assert peak_rss_mb() >= before and peak_rss_mb() >= during - 1
    assert during > 150
    del block
    release_freed_memory()
    assert current_rss_mb() < during - 150  # the pages went back to the system
    assert peak_rss_mb() >= during - 1  # the peak remembers
