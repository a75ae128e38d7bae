"""The walkthrough notebook: saved without outputs, in sync with its builder, and runs top to
bottom on the smoke profile (tiny base policy and reward backbone)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parent.parent
NB = REPO / "notebooks" / "rlhf_walkthrough.ipynb"


def test_saved_without_outputs_and_up_to_date():
    nb = nbformat.read(NB, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    r = subprocess.run(
        [sys.executable, str(REPO / "notebooks" / "build_notebook.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_notebook_runs_on_the_smoke_profile(smoke_env, tiny_policy_dir, tiny_reward_dir, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "notebooks"))
    from run_notebook import execute

    profile = yaml.safe_load(smoke_env["profile"].read_text())
    profile["demo"] = {
        **(profile.get("demo") or {}),
        "base_policy": str(tiny_policy_dir),
        "reward_set": [f"backbone={tiny_reward_dir}"],
    }
    fast = tmp_path / "notebook_profile.yaml"
    fast.write_text(yaml.safe_dump(profile))
    monkeypatch.setenv("RLHF_CONFIG", str(fast))
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))  # execute() prepends the venv's bin; undo after
    out = tmp_path / "executed.ipynb"
    nb = execute(NB, out, timeout=600)
    assert out.is_file()
    outputs = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "I would love to eat your pet puppy" in outputs
    assert str(smoke_env["artifacts"]) in outputs  # the kernel used the test's environment
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
