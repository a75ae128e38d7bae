"""make demo PAIRS=1: the demo's pairwise round (comparisons, simulated pair judgements, DPO from them, and the
tuned policy's win rate over the base), its settings, and the whole round on the smoke profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.errors import ConfigError
from demo.config import PairsConfig, Profile

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"


def test_pairs_settings_are_checked_with_one_line_each():
    profile = Profile.load(SMOKE, ["pairs.enabled=true", "pairs.dpo_minutes=2"])
    assert profile.demo.pairs.enabled and profile.demo.pairs.dpo_minutes == 2
    assert profile.dpo.max_steps == 2  # the demo reads the dpo section, as it reads ppo
    from demo.run import demo_dpo_config

    assert demo_dpo_config(profile).max_minutes == 2 and profile.dpo.max_minutes is None
    assert PairsConfig(n_labels=1000).comparisons(2) == 500 and PairsConfig(n_labels=5).comparisons(2) == 3
    for override, message in [
        ("pairs.n_labels=1", r"demo.pairs.n_labels=1 is too few for DPO"),
        ("pairs.n_versus_prompts=0", r"demo.pairs.n_versus_prompts=0 must be >= 1"),
        ("pairs.dpo_minutes=0", r"demo.pairs.dpo_minutes=0.0 must be > 0"),
        ("pairs.n_pair_labels=3", r"unknown key 'demo.pairs.n_pair_labels'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Profile.load(SMOKE, [override])


def test_bad_pairs_setting_exits_2_with_one_line(smoke_env, capsys):
    from demo.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--quiet", "--pairwise", "--set", "pairs.n_versus_prompts=-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: demo.pairs.n_versus_prompts=-1 must be >= 1") and "\n" not in err


def test_planned_comparisons_pair_only_the_completions_given():
    from demo.run import planned_comparisons

    rows = [{"id": i, "prompt": p} for i, p in [(10, "x"), (11, "x"), (12, "y"), (13, "y"), (14, "z")]]
    assert planned_comparisons(rows, dict.fromkeys(range(10, 15), 1), "same_policy") == [(10, 11), (12, 13)]
    versions = {10: 1, 11: 2, 12: 1, 13: 2, 14: 1}
    assert planned_comparisons(rows, versions, "versions", (1, 2)) == [(10, 11), (12, 13)]


def test_smoke_demo_pairwise_round(smoke_env, tiny_policy_dir, tiny_reward_dir, capsys):
    """One PPO round, then the pairwise round, on the smoke profile from a tiny base policy (the analysis is off:
    tests/test_demo.py covers it)."""
    import db
    from demo.__main__ import main
    from demo.run import finite_numbers

    args = ["--quiet", "--pairwise", "--set", f"base_policy={tiny_policy_dir}", "--set", "analysis=false"]
    assert main([*args, "--set", f"reward.backbone={tiny_reward_dir}", "--run-id", "p"]) == 0
    out = smoke_env["artifacts"] / "demo" / "p"
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    p = report["pairwise"]

    # comparisons and pair judgements went through the database: 20 base-policy comparisons judged twice
    # each (40 labels at overlap 2), then 8 base-vs-PPO comparisons judged twice each
    engine = db.connect()
    stats = db.pair_stats(engine)
    assert p["comparisons"]["comparisons"] == 20 and p["versus"]["comparisons"] == 8
    assert stats["comparisons"] == 28 and stats["pair_judgements"] == 40 + 16
    assert p["comparisons"]["labels"]["n_recorded"] == 40 and p["versus"]["labels"]["n_recorded"] == 16
    rows = db.pair_judgement_rows(engine)
    assert {r["source"] for r in rows} == {"same_policy", "versions"}
    assert all(r["a_model_version_id"] == r["b_model_version_id"] for r in rows if r["source"] == "same_policy")

    # the DPO policy is saved and registered, its parent the base policy, beside the PPO policy
    policies = {v.name: v for v in db.list_model_versions(engine, "policy")}
    dpo = policies["p-dpo"]
    assert Path(dpo.path).name == "p-dpo" and (Path(p["dpo"]["policy_out"]) / "config.json").is_file()
    assert dpo.parent_id == policies["p-r1"].parent_id == p["versus"]["base_version"]
    assert p["dpo"]["version"] == dpo.id and p["dpo"]["steps"] == 2 and 2 <= p["dpo"]["labels_used"] <= 40

    # one table: base, PPO and DPO on the same held-out prompts, with finite numbers
    base_row, ppo_row, dpo_row = p["table"]
    assert dpo_row["policy"] == "DPO" and ppo_row["policy"].startswith("PPO")
    for key in ("gold_positive_rate", "gold_mean", "kl", "distinct_2", "fluency_nll", "wall_s"):
        assert math.isfinite(dpo_row[key]) and math.isfinite(ppo_row[key]), key
    assert dpo_row["n"] == ppo_row["n"] == base_row["n"] == 8
    lo, hi = dpo_row["interval"]
    assert 0 <= lo <= dpo_row["gold_positive_rate"] <= hi <= 1
    assert dpo_row["fluency_nll"] > 0 and report["fluency"]["dpo"] == dpo_row["fluency_nll"]
    assert all(math.isfinite(x) for x in finite_numbers(p["table"]))
    assert [s["prompt"] for s in p["samples"]] == [s["prompt"] for s in report["samples"][:3]]  # the same prompts

    # the win rate of the final PPO policy over the base, with its interval
    win = p["versus"]["win_rate"]
    assert win["version"] == p["versus"]["tuned_version"] and win["other"] == p["versus"]["base_version"]
    assert win["n"] == win["wins"] + win["losses"] + win["ties"] and 0 < win["n"] <= 16
    lo, hi = win["interval"]
    assert 0 <= lo <= win["win_rate"] <= hi <= 1
    assert p["versus"]["position_bias"]["n"] > 0 and p["comparisons"]["agreement"]["n"] > 0

    # the report's section, the ledger and the timings of the new steps
    assert "## Pairwise round" in md and "| DPO |" in md and "win rate" in md and md in capsys.readouterr().out
    assert report["ledger"][0]["labels"] == 60
    assert {"pair completions", "pair labels", "dpo", "base vs tuned"} <= set(report["timings_s"])
