"""The OpenMP wait policy each command picks before torch loads (common/runtime.py). Each case runs in a fresh
interpreter, since the choice is made once per process and only means something before ``import torch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

PROBE = textwrap.dedent(
    """
    import json, os, sys
    from common import runtime as omp
    {setup}
    env = omp.wait_policy_env(seconds=0.3)
    os.environ.update(env)
    print(json.dumps({{"env": env, "policy": os.environ.get("OMP_WAIT_POLICY"), "why": omp.wait_policy(),
                      "again": omp.wait_policy_env(), "torch": "torch" in sys.modules}}))
    """
)


def probe(setup: str = "", **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "RLHF_OMP_WAIT")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)],
        cwd=REPO,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_explicit_policy_wins_and_is_left_alone():
    got = probe(OMP_WAIT_POLICY="ACTIVE")
    assert got["env"] == {} and got["policy"] == "ACTIVE"
    assert got["why"] == "OMP_WAIT_POLICY=ACTIVE (set by you)"


@pytest.mark.parametrize(("forced", "policy"), [("sleep", "PASSIVE"), ("spin", None)])
def test_rlhf_omp_wait_forces_either_way(forced, policy):
    got = probe(RLHF_OMP_WAIT=forced)
    assert got["policy"] == policy
    assert f"RLHF_OMP_WAIT={forced}" in got["why"]
    assert got["again"] == got["env"]  # asked twice, the same answer


def test_busy_machine_sleeps():
    """With a process spinning on every core, idle threads must sleep (spinning ones would steal the core)."""
    n = os.cpu_count() or 1
    hogs = [
        subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
        for _ in range(n)
    ]
    try:
        got = probe()
    finally:
        for h in hogs:
            h.kill()
    assert got["policy"] == "PASSIVE" and got["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert "cores busy" in got["why"]
    assert not got["torch"]  # the probe itself loads no torch


def test_busy_cores_measures_other_processes():
    from common.runtime import busy_cores

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = busy_cores(0.5)
    finally:
        hog.kill()
    if busy is None:
        pytest.skip("no /proc/stat on this system")
    assert busy >= 0.7  # one core spinning (plus whatever else ran)


def test_torch_already_loaded_changes_nothing():
    got = probe(setup="import torch")
    assert got["env"] == {} and got["policy"] is None
    assert "already loaded" in got["why"]


FAULTS = textwrap.dedent(
    """
    import json, resource, sys
    from common import runtime
    said = runtime.keep_freed_memory()
    import torch
    n = 64 * (1 << 20) // 4  # 64 MB of float32: above glibc's largest default mmap threshold (32 MB)
    faults = []
    for _ in range(18):  # the heap settles at its working size within a few allocations, not always the same few
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(n).sum()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"said": said, "faults": faults[2:], "again": runtime.keep_freed_memory()}))
    """
)


def faults_per_alloc(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("RLHF_MALLOC_KEEP",)}
    out = subprocess.run(
        [sys.executable, "-c", FAULTS], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_without_page_faults():
    """A 64 MB tensor allocated again and again faults its 16k pages in every time under glibc's default; once
    freed memory is kept, most allocations reuse it without a fault (measured on an idle machine: 2 of 16 fault
    while the heap settles; with another job allocating beside it, up to about half)."""
    kept = faults_per_alloc()
    default = faults_per_alloc(RLHF_MALLOC_KEEP="0")
    if "not glibc" in kept["said"]:
        pytest.skip(kept["said"])
    assert kept["said"] == "freed blocks up to 1024 MB kept for reuse" and kept["again"] == kept["said"]
    assert default["said"] == "glibc's default (RLHF_MALLOC_KEEP=0)"
    pages = 64 * (1 << 20) / 4096
    assert min(default["faults"]) > 0.5 * pages  # every allocation is a fresh mapping
    assert min(kept["faults"]) < 0.05 * pages  # freed memory is reused
    assert sum(kept["faults"]) < 0.7 * sum(default["faults"])


ARROW = textwrap.dedent(
    """
    import gc, json
    from common import runtime
    runtime.keep_freed_memory()
    import pyarrow as pa
    from common.imdb import DataConfig, _local_frame, imdb_texts, make_prompts
    from common.memory import current_rss_mb, release_freed_memory
    _local_frame()  # the CSV, cached for the process's life: not what is measured
    start = current_rss_mb()
    prompts = make_prompts(imdb_texts(DataConfig())["train"], 500)
    gc.collect()
    freed = current_rss_mb() - start
    release_freed_memory()
    print(json.dumps({"pool": pa.default_memory_pool().backend_name, "freed": freed,
                      "released": current_rss_mb() - start}))
    """
)


def arrow_probe(**env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("RLHF_MALLOC_KEEP", "ARROW_DEFAULT_MEMORY_POOL")}
    out = subprocess.run(
        [sys.executable, "-c", ARROW], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize("pool", ["kept heap", "mimalloc"])
def test_memory_freed_by_reading_imdb_goes_back(pool):
    """pandas 3 keeps IMDB's strings in Arrow buffers. Freed, they stay mapped (about 200 MB: glibc's raised trim
    threshold keeps them for the next tensors; pyarrow's own mimalloc pool keeps them for Arrow alone) until
    release_freed_memory, which the demo calls between steps, gives both back."""
    got = arrow_probe(**({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"} if pool == "mimalloc" else {}))
    if pool == "kept heap":
        assert got["pool"] == "system"  # keep_freed_memory put Arrow on glibc's heap
        assert arrow_probe(RLHF_MALLOC_KEEP="0")["pool"] != "system"  # glibc's default: Arrow left alone
    else:
        assert got["pool"] == "mimalloc"  # a variable of the user's own wins
    assert got["freed"] > 100, got  # what the texts left behind
    assert got["released"] < 60, got
