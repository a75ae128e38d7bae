"""The walkthrough notebook: saved without outputs, in sync with its builder, and runs top to
bottom on the smoke profile (tiny base policy and reward backbone)."""

from __future__ import annotations

import ast
import os
import shutil
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


# What the notebook may import: the packages' public APIs, never the demo's internals or a page module.
NOTEBOOK_IMPORTS = {
    "common",
    "db",
    "base_policy",
    "base_policy.generate",
    "base_policy.loading",
    "base_policy.registry",
    "labeling_app.simulate",
    "reward_training",
    "rl_finetune.ppo",
    "rl_finetune.ppo.core",
    "rl_finetune.analysis",
}
THIRD_PARTY = {"os", "sys", "json", "logging", "math", "dataclasses", "pathlib", "numpy", "pandas", "matplotlib"}
THIRD_PARTY |= {"torch", "transformers"}


def test_notebook_imports_only_public_apis():
    nb = nbformat.read(NB, as_version=4)
    source = "\n".join(
        line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines() if not line.startswith("%")
    )
    modules, names = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    ours = {m for m in modules if m.split(".")[0] not in THIRD_PARTY}
    bad = {m for m in ours if m not in NOTEBOOK_IMPORTS and m.split(".")[0] != "common"}
    assert not bad, f"the notebook imports internals: {sorted(bad)}"
    assert "rl_finetune.ppo.core" in ours | names  # the PPO step taught by hand


def test_notebook_runs_on_the_smoke_profile(smoke_env, tiny_policy_dir, tiny_reward_dir, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "notebooks"))
    from run_notebook import execute

    # the notebook reuses $RLHF_ARTIFACTS/base_policy when it exists: the tiny policy, not a pretraining run
    shutil.copytree(tiny_policy_dir, smoke_env["artifacts"] / "base_policy")
    profile = yaml.safe_load(smoke_env["profile"].read_text())
    profile["reward"] = {**(profile.get("reward") or {}), "backbone": str(tiny_reward_dir)}
    # the random-weight policy writes word salad, which the gold judge's coherence factor scores 0 (every
    # simulated label 'bad', nothing for a reward model to learn): judge its sentiment alone
    demo = profile.setdefault("demo", {})
    demo["gold"] = {**(demo.get("gold") or {}), "coherence": False}
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
    assert "approx_kl 0.097457" in outputs  # the PPO step by hand printed the unit tests' numbers
    assert str(smoke_env["artifacts"]) in outputs  # the kernel used the test's environment
    assert any(o.get("data", {}).get("image/png") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
