"""`make compare` (python -m rl_finetune compare) on the smoke profile: every method within seconds, one report
with the table and both plots, skipped methods listed with the reason; bad input refused in one line with
nothing written; the best-of-n command; and the pure pieces of the report (Wilson interval, the winners)."""

from __future__ import annotations

import json
import math

import pytest

from rl_finetune.compare.results import MethodResult, report_markdown, verdict, wilson_interval, winners


def gold_counting_good(texts):
    """A cheap stand-in for the gold judge: 0.9 for a text with " good" or " great" in it, else 0.2."""
    return [0.9 if (" good" in t or " great" in t) else 0.2 for t in texts]


@pytest.fixture
def labelled_db(smoke_env):
    """The smoke database with 12 good/bad judgements of 12 completions (both classes)."""
    import db
    from db.types import NewCompletion

    engine = db.connect()
    items = [
        NewCompletion(prompt=f"This movie {i} was", text=(" good fun" if i % 2 else " dull and long"))
        for i in range(12)
    ]
    ids = db.add_completions(engine, items)
    ann = db.get_or_create_labeler(engine, "ann")
    for i, cid in enumerate(ids):
        db.record_judgement(engine, labeler_id=ann, completion_id=cid, label="good" if i % 2 else "bad")
    return engine


@pytest.fixture
def cheap_gold(monkeypatch):
    monkeypatch.setattr("rl_finetune.compare.cli.load_gold", lambda: gold_counting_good)


def run_main(*argv) -> int:
    from rl_finetune.__main__ import main

    return main(list(argv))


def test_compare_on_the_smoke_profile_writes_the_table_and_both_plots(
    labelled_db, cheap_gold, tiny_policy_dir, tiny_reward_dir, tmp_path, capsys
):
    out = tmp_path / "report"
    assert (
        run_main("compare", "--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--out", str(out)) == 0
    )
    for name in ("report.md", "frontier.png", "gold_vs_time.png", "compare.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "compare.json").read_text())
    table = {row["method"]: row for row in summary["table"]}
    assert list(table) == ["start", "ppo", "rloo", "grpo", "best_of_n", "kto", "dpo"]
    for m in ("ppo", "rloo", "grpo", "best_of_n"):
        row = table[m]
        assert row["status"] == "ok", row
        assert 0 <= row["gold_rate"] <= 1 and row["gold_ci95"][0] <= row["gold_rate"] <= row["gold_ci95"][1]
        assert row["n_prompts"] == 4 and row["labels_used"] == 12
        assert row["fluency_nll"] > 0 and row["wall_s"] >= 0
    # every RL method's eval points over its run, from the start policy (KL 0) on; best-of-n one point per n
    for m in ("ppo", "rloo", "grpo"):
        evals = summary["methods"][m]["evals"]
        assert len(evals) >= 2 and evals[0]["step"] == 0 and evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4)
        assert (out / "runs" / m / "metrics.jsonl").is_file()
    bon = summary["methods"]["best_of_n"]["evals"]
    assert [int(r["eval/best_of_n"]) for r in bon] == [1, 2, 4]
    assert [r["eval/kl"] for r in bon] == pytest.approx([0.0, math.log(2) - 0.5, math.log(4) - 0.75])
    # the pairs DPO needs do not exist: listed as skipped, with the reason
    assert table["dpo"]["status"].startswith("skipped:") and "pair" in table["dpo"]["status"]
    assert table["kto"]["status"] == "ok" or table["kto"]["status"].startswith("skipped:")
    report = (out / "report.md").read_text()
    assert "| method | gold positive rate (95% interval)" in report and "| dpo |" in report and "skipped" in report
    assert "gold positive rate ≥ 0.85" in report.lower() or "No method reached" in report
    assert "report:" in capsys.readouterr().out


def test_a_missing_offline_learner_is_listed_as_skipped(labelled_db, monkeypatch):
    import sys

    from rl_finetune.compare.run import offline_learner

    monkeypatch.setitem(sys.modules, "rl_finetune.offline", None)  # as if the package were not there
    found, why = offline_learner("kto")
    assert found is None and "rl_finetune.offline.train_kto is not available" in why


def test_a_database_without_labels_is_refused_and_nothing_written(
    smoke_env, cheap_gold, tiny_policy_dir, tiny_reward_dir, tmp_path, capsys
):
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exc:
        run_main("compare", "--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--out", str(out))
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "no labels" in err and "label some" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--methods", "ppo,sft"], "unknown method 'sft'"),
        (["--set", "methods=[ppo, sft]"], "compare.methods[1]='sft' is not allowed"),
        (["--methods", "rloo", "--set", "ppo.samples_per_prompt=1"], "no leave-one-out baseline"),
        (["--set", "gold_target=2"], "gold_target"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    labelled_db, cheap_gold, tiny_policy_dir, tiny_reward_dir, tmp_path, capsys, args, words
):
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exc:
        run_main(
            "compare", "--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--out", str(out), *args
        )
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_best_of_n_command_reports_the_analytic_kl(smoke_env, cheap_gold, tiny_policy_dir, tiny_reward_dir, tmp_path):
    out = tmp_path / "bon.json"
    argv = ["best-of-n", "--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--n", "1,4", "--out"]
    assert run_main(*argv, str(out)) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["eval/kl"] for r in rows] == pytest.approx([0.0, math.log(4) - 0.75])
    assert all(r["eval/reward"] >= r["eval/reward_mean_of_n"] - 1e-6 for r in rows)  # the kept one is the best
    assert all(r["eval/gold_ci95_low"] <= r["eval/gold_positive"] <= r["eval/gold_ci95_high"] for r in rows)


# ------------------------------------------------------------------ pure pieces


def test_wilson_interval_matches_hand_values():
    lo, hi = wilson_interval(8, 10)  # p = 0.8, n = 10: (0.4902, 0.9433)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(4, 4)[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def _result(method, points, status="ok"):
    evals = [{"step": i, "elapsed_s": t, "eval/kl": kl, "eval/gold_positive": g} for i, (kl, t, g) in enumerate(points)]
    return MethodResult(method, status=status, evals=evals)


def test_winners_take_the_lowest_kl_and_the_least_time_over_every_eval_point():
    results = [
        _result("start", [(0.0, 0.0, 0.9)]),  # the start policy is the baseline, not a contender
        _result("ppo", [(0.0, 0, 0.5), (2.0, 30, 0.86), (3.0, 60, 0.9)]),
        _result("grpo", [(0.0, 0, 0.5), (1.5, 50, 0.88)]),
        _result("kto", [(0.0, 0, 0.5), (0.5, 80, 0.7)]),
    ]
    w = winners(results, 0.85)
    assert w["lowest_kl"]["method"] == "grpo" and w["lowest_kl"]["kl"] == 1.5
    assert w["least_time"]["method"] == "ppo" and w["least_time"]["elapsed_s"] == 30
    assert "**grpo**" in verdict(w) and "**ppo**" in verdict(w)
    none = winners([_result("kto", [(0.5, 80, 0.7)])], 0.85)
    assert none["lowest_kl"] is None and verdict(none).startswith("No method reached")
    md = report_markdown([*results, MethodResult("dpo", status="skipped", reason="no pairs")], 0.85, {})
    assert "| dpo |" in md and "skipped: no pairs" in md
