"""make demo: the pure report helpers, the config, and the whole loop on the smoke profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.errors import ConfigError
from demo.config import DemoConfig, Profile
from demo.run import binned_means, finite_numbers, overopt_series, report_markdown, summarize_scores

REPO = Path(__file__).resolve().parent.parent


def test_completions_per_round_fits_the_overlap():
    cfg = DemoConfig(n_labels=1000)
    cfg.simulate.overlap = 2
    assert cfg.completions_per_round == 500
    cfg.simulate.overlap = 3
    assert cfg.completions_per_round == 334
    with pytest.raises(ConfigError):
        DemoConfig(n_labels=100, n_completions=10).validate()
    with pytest.raises(ConfigError):
        DemoConfig(rounds=0).validate()


def test_profile_holds_each_section_once_and_the_demo_its_budgets():
    from rl_finetune.ppo.config import PPOConfig

    profile = Profile.load(REPO / "configs" / "tiny.yaml", ["ppo.lr=1e-4", "rounds=2", "demo.n_labels=10"])
    assert isinstance(profile.ppo, PPOConfig) and profile.ppo.lr == pytest.approx(1e-4)
    assert profile.demo.rounds == 2 and profile.demo.n_labels == 10
    assert profile.demo.pretrain_minutes == 5 and profile.demo.ppo_minutes == 8
    assert profile.ppo.max_minutes == 15  # the stage's own budget is untouched ...
    from demo.run import demo_ppo_config

    assert demo_ppo_config(profile).max_minutes == 8  # ... the demo's PPO runs get the demo's
    assert demo_ppo_config(profile, total_steps=3).total_steps == 3
    with pytest.raises(ConfigError, match=r"does not use the label section \(override 'label.policy=x'\)"):
        Profile.load(REPO / "configs" / "smoke.yaml", ["label.policy=x"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo_set=[max_minutes=8]", r"'demo.ppo_set' was removed.*demo.ppo_minutes"),
        ("pretrain_set=[max_minutes=5]", r"'demo.pretrain_set' was removed.*demo.pretrain_minutes"),
        ("reward_set=[backbone=x]", r"'demo.reward_set' was removed.*reward.KEY=VALUE"),
        ("generate_set=[n=3]", r"'demo.generate_set' was removed.*generate.KEY=VALUE"),
        ("n_prompts=10", r"'demo.n_prompts' was renamed to 'demo.n_completions'"),
        ("ppo_minutes=0", r"demo.ppo_minutes=0.0 must be > 0"),
    ],
)
def test_old_demo_keys_name_the_new_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        Profile.load(REPO / "configs" / "smoke.yaml", [override])


@pytest.mark.parametrize(
    ("fast", "precision", "said"), [(False, "bf16", True), (True, "bf16", False), (False, '"no"', False)]
)
def test_a_cpu_without_bf16_kernels_is_told_what_to_expect(monkeypatch, fast, precision, said):
    import common.precision
    from demo.run import fp32_notice

    monkeypatch.setattr(common.precision, "cpu_bf16_fast", lambda: fast)
    profile = Profile.load(REPO / "configs" / "default.yaml", [f"ppo.mixed_precision={precision}"])
    notice = fp32_notice(profile)
    assert (notice is not None) == said
    if said:
        assert "no bf16 matmul kernels" in notice and "minutes" in notice


def test_overopt_series_keeps_eval_rows_only():
    rows = [
        {"step": 0, "eval/kl": 0.0, "eval/p_good": 0.5, "eval/gold": 0.5},
        {"step": 1, "kl": 0.3, "reward_mean": 1.0},
        {"step": 2, "eval/kl": 4.0, "eval/p_good": 0.9, "eval/gold": 0.6},
        {"step": 3, "eval/kl": -0.01, "eval/p_good": 0.9, "eval/gold": 0.6},
    ]
    s = overopt_series(rows)
    assert s["step"] == [0, 2, 3] and s["sqrt_kl"] == [0.0, 2.0, 0.0]
    assert s["proxy"] == [0.5, 0.9, 0.9] and s["gold"] == [0.5, 0.6, 0.6]


def test_binned_means():
    x, y = binned_means([0.0, 0.1, 1.2, 1.4, 3.0], [1, 3, 5, 7, 9], n_bins=3)
    assert x == pytest.approx([0.05, 1.3, 3.0]) and y == [2.0, 6.0, 9.0]
    assert binned_means([], []) == ([], [])


def test_summarize_scores():
    s = summarize_scores([0.9, 0.2, 0.7, 0.4], [0.8, 0.6, 0.4, 0.1])
    assert s["gold_positive_rate"] == 0.5 and s["rm_positive_rate"] == 0.5
    assert s["rm_gold_agreement"] == 0.5 and s["n"] == 4
    assert finite_numbers({"a": [1, 2.5, {"b": None, "c": True}], "d": "x"}) == [1.0, 2.5]


def test_reward_accuracy_line_shows_the_difference_with_its_interval():
    from demo.run import _acc_line, reward_accuracy

    metrics = {
        "model": {"human_heldout": {"accuracy": 0.78, "n": 1000}},
        "tfidf": {"human_heldout": {"accuracy": 0.72, "n": 1000}},
        "model_minus_tfidf": {"human_heldout": {"points": 6.0, "ci95": [2.6, 9.1], "n": 1000}, "imdb_snippets": None},
        "counts": {},
    }
    acc = reward_accuracy(metrics)
    assert acc["model_minus_tfidf/human_heldout"] == {"points": 6.0, "ci95_low": 2.6, "ci95_high": 9.1, "n": 1000}
    assert "model_minus_tfidf/imdb_snippets" not in acc
    line = _acc_line(acc)
    assert "accuracy 0.780 (TF-IDF 0.720, n=1000), model - TF-IDF +6.0 points (95% CI +2.6 to +9.1, n=1000)" in line
    older = reward_accuracy({k: v for k, v in metrics.items() if k != "model_minus_tfidf"})  # models trained before it
    assert _acc_line(older) == "human_heldout: accuracy 0.780 (TF-IDF 0.720, n=1000)"


def test_label_ledger_gives_each_rounds_gold_gain_per_100_labels():
    from demo.run import label_ledger

    def rnd(r, n, before, after, acc):
        return {
            "round": r,
            "labels": {"n_recorded": n},
            "ppo": {"summary": {"eval/gold_before": before, "eval/gold_after": after}},
            "reward_model": {"model/human_heldout": {"accuracy": acc}},
        }

    rows = label_ledger([rnd(1, 200, 0.30, 0.50, 0.7), rnd(2, 400, 0.50, 0.58, 0.8), rnd(3, 100, None, 0.6, None)])
    assert [r["labels_total"] for r in rows] == [200, 600, 700]
    assert rows[0]["points_per_100"] == pytest.approx(10.0) and rows[1]["points_per_100"] == pytest.approx(2.0)
    assert rows[1]["rm_accuracy"] == 0.8
    assert rows[2]["gold_gain"] is None and rows[2]["points_per_100"] is None and rows[2]["rm_accuracy"] is None


def test_the_analysis_uses_single_token_words_and_is_skipped_without_them(smoke_env, monkeypatch):
    import base_policy.loading
    from demo.config import Profile
    from demo.run import NEGATIVE_WORDS, analyse_policy, single_token_words

    class Splits:  # a small BPE: " good" and " great" are one token, every other word splits
        def encode(self, word, add_special_tokens=False):
            return [1] if word in (" good", " great") else [2, 3]

    assert single_token_words(Splits(), (" good", " bad", " great")) == [" good", " great"]
    assert single_token_words(Splits(), NEGATIVE_WORDS) == []
    loaded = []
    monkeypatch.setattr(base_policy.loading, "load_policy", lambda path: (loaded.append(path), (None, Splits()))[1])
    res = analyse_policy(Profile.load(), "base", "tuned", smoke_env["artifacts"], "t")
    assert res["folder"] is None and res["headline"][0].startswith("Skipped: no negative word")
    assert loaded == ["base"]  # the demo goes on to its report; the tuned policy is not even loaded


def test_smoke_demo_end_to_end(smoke_env, tiny_policy_dir, tiny_reward_dir, capsys):
    """Two rounds and the over-optimisation run on the smoke profile, from a tiny base policy with
    a tiny BERT reward backbone (`CONFIG=configs/smoke.yaml make demo` in CI covers pretraining)."""
    import db
    from demo.__main__ import main

    assert (
        main(
            [
                "--quiet",
                "--rounds",
                "2",
                "--overoptimization",
                "--set",
                f"base_policy={tiny_policy_dir}",
                "--set",
                f"reward.backbone={tiny_reward_dir}",
                "--run-id",
                "t",
            ]
        )
        == 0
    )
    out = smoke_env["artifacts"] / "demo" / "t"
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    assert "## Round 2" in md and "Reward hacking" in md and md in capsys.readouterr().out

    # the numbers are there and finite
    for side in ("before", "after"):
        for key in ("gold_mean", "gold_positive_rate", "rm_mean", "rm_gold_agreement"):
            assert math.isfinite(report[side][key])
    assert all(math.isfinite(x) for x in finite_numbers(report))
    assert all(report["fluency"][k] > 0 for k in ("before", "after", "real_imdb"))  # NLL per token, nats
    assert "fluency: NLL per token under the start policy" in md
    assert all(v is not None for v in report["kl"].values())
    assert [r["round"] for r in report["ledger"]] == [1, 2] and report["ledger"][1]["labels_total"] == 120
    assert "gold gain per 100 labels" in md
    # it ends with the analysis of what PPO changed, where the app's Analysis page finds it
    assert report["analysis"]["headline"] and "What PPO changed inside the policy" in md
    assert (smoke_env["artifacts"] / "analysis" / "demo-t" / "report.md").is_file()
    assert report["samples"] and report["samples"][0]["before"] is not None

    # labels went through the db: two rounds of 60, with overlap 2 and agreement statistics
    engine = db.connect()
    st = db.stats(engine)
    assert sum(r["labels"]["n_recorded"] for r in report["rounds"]) == 120
    assert report["rounds"][0]["labels"]["mean_kappa"] is not None
    assert len(db.list_model_versions(engine, "reward")) == 2
    assert len(db.list_model_versions(engine, "policy")) == 3  # base + one per round
    assert st  # the stats page has something to show
    # round 2 labelled the round-1 policy's completions
    assert report["rounds"][1]["policy_in"] == report["rounds"][0]["ppo"]["policy_out"]
    for png in report["plots"]:
        assert (out / png).stat().st_size > 1000
    assert "overoptimization.png" in report["plots"]
    assert report["overoptimization"]["curve"]["sqrt_kl"]
    assert report_markdown(report).splitlines()[:12] == md.splitlines()[:12]  # the table is rebuilt from the JSON


def test_overoptimization_run_is_found_by_id_and_a_missing_one_is_named(smoke_env):
    from common.errors import UserError
    from demo.run import overoptimization_only

    (smoke_env["artifacts"] / "demo" / "r7").mkdir(parents=True)  # a folder without report.json
    with pytest.raises(UserError, match=r"no demo report in .*demo/r7 "):
        overoptimization_only(Profile.load(), Path("r7"), progress=False)
    with pytest.raises(UserError, match="no demo report in nowhere"):
        overoptimization_only(Profile.load(), Path("nowhere"), progress=False)
