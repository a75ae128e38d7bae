"""benchmarks/bench_equal_effort.py: good/bad judgements against comparisons of equal effort, end to end on
a tiny labelled database (the smoke profile's simulated labellers and gold judge, a tiny random BERT as the
reward backbone), the split by prompt, the equal-effort mix, the policies trained from each reward model
(``--policy-seconds``, a tiny random GPT-2 as the start policy), and the one-line errors for bad input."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import db

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"
N_PROMPTS, PER_PROMPT = 30, 4


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_equal_effort", REPO / "benchmarks" / "bench_equal_effort.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # before it runs, as importlib's recipe does: its dataclasses look it up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def labelled_db(tmp_path_factory) -> dict:
    """A database of N_PROMPTS prompts x PER_PROMPT completions (IMDB snippets cut after three words), judged
    good/bad and in comparisons by the smoke profile's simulated labellers; the gold cache beside it."""
    from common.config import load_config
    from common.gold import GoldJudge
    from common.imdb import DataConfig, load_imdb
    from labeling_app.simulate import load_simulate_config, simulate, simulate_comparisons
    from reward_training import data as D

    folder = tmp_path_factory.mktemp("equal_effort")
    artifacts = folder / "artifacts"
    url = f"sqlite:///{folder / 'feedback.sqlite'}"
    dd = load_imdb(load_config(DataConfig, "data", profile=SMOKE))
    snippets = D.imdb_snippets(
        dd["train"]["text"], dd["train"]["label"], N_PROMPTS * PER_PROMPT, prompt_words=(3, 5), span_words=(8, 16),
        follow_fraction=1.0, seed=3,
    )  # fmt: skip
    rows = []
    for i in range(N_PROMPTS):
        group = [e.text.split() for e in snippets[i * PER_PROMPT : (i + 1) * PER_PROMPT]]
        prompt = f"Prompt {i}: " + " ".join(group[0][:3])
        rows += [db.NewCompletion(prompt=prompt, text=" " + " ".join(words[3:])) for words in group]
    engine = db.connect(url)
    db.add_completions(engine, rows)
    scfg, gcfg = load_simulate_config(SMOKE, ["n_labels=200", "seed=1"])
    judge = GoldJudge.load_or_fit(gcfg, cache_dir=artifacts / "gold")
    labels = simulate(engine, scfg, judge.score, progress=False)
    assert db.make_comparisons(engine) == N_PROMPTS * PER_PROMPT // 2
    pairs = simulate_comparisons(engine, scfg, judge.score, n=110)
    engine.dispose()
    assert labels.n_recorded == 200 and pairs.n_recorded == 110
    return {"url": url, "artifacts": artifacts}


def bench_args(labelled_db, tiny_reward_dir, *extra: str) -> list[str]:
    over = {
        "backbone": tiny_reward_dir,
        "bf16": "false",
        "freeze_embeddings": "false",
        "seed_examples": 100,
        "seed_lr": 3e-3,
        "human_lr": 3e-3,
        "human_epochs": 2,
        "ensemble_size": 1,
    }
    sets = [a for k, v in over.items() for a in ("--set", f"{k}={v}")]
    return ["--db", labelled_db["url"], "--artifacts", str(labelled_db["artifacts"]), *sets, *extra]


@pytest.fixture
def env(labelled_db, monkeypatch, tmp_path):
    monkeypatch.setenv("RLHF_CONFIG", str(SMOKE))
    monkeypatch.setenv("RLHF_ARTIFACTS", str(labelled_db["artifacts"]))
    monkeypatch.delenv("RLHF_DB_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lines(out: str) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for line in out.splitlines():
        rec = json.loads(line)
        by.setdefault(rec["figure"], []).append(rec)
    return by


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_runs_end_to_end_and_prints_each_model_and_the_differences(env, labelled_db, tiny_reward_dir, capsys):
    bench = load_bench()
    assert bench.main(bench_args(labelled_db, tiny_reward_dir, "--labels", "60", "--pairs", "30")) == 0
    by = lines(capsys.readouterr().out)
    split = by["split"][0]
    assert split["train"]["judgements"] == 60 and split["train"]["pair_judgements"] == 30
    assert split["heldout_prompts"] == round(0.2 * N_PROMPTS) and split["prompts"] == N_PROMPTS
    # every completion of a held-out prompt is scored; each of its comparisons once
    assert split["heldout"]["completions"] == PER_PROMPT * split["heldout_prompts"]
    assert split["heldout"]["comparisons"] == PER_PROMPT // 2 * split["heldout_prompts"]
    assert split["heldout"]["within_prompt_pairs"] == 6 * split["heldout_prompts"]
    assert 0.5 < split["labels_agree_with_gold"] <= 1 and 0.5 < split["pair_choices_agree_with_gold"] <= 1

    models = {m["model"]: m for m in by["model"]}
    assert list(models) == ["labels", "pairs", "mix", "mix-half"]
    assert models["labels"]["trained_on"] == {"judgements": 60, "pair_judgements": 0, "texts_read": 60}
    assert models["pairs"]["trained_on"] == {"judgements": 0, "pair_judgements": 30, "texts_read": 60}
    assert models["mix"]["trained_on"] == {"judgements": 60, "pair_judgements": 30, "texts_read": 120}
    # mix-half: half of each by default, as much reading as either alone
    assert models["mix-half"]["trained_on"] == {"judgements": 30, "pair_judgements": 15, "texts_read": 60}
    assert split["train"]["mix_half"] == models["mix-half"]["trained_on"]
    for m in models.values():
        for kind in ("single", "pairs", "within_prompt"):
            fig = m[kind]
            assert fig["n"] > 0 and 0 <= fig["points"] <= 100, (m["model"], kind, fig)
            lo, hi = fig["ci95"]
            assert finite(lo) and finite(hi) and lo <= fig["points"] <= hi
        assert finite(m["train_seconds"])
    diff = by["difference"][0]
    assert set(diff) >= {
        "labels_minus_pairs", "mix_minus_labels", "mix_minus_pairs", "mix_half_minus_labels", "mix_half_minus_pairs",
    }  # fmt: skip
    d = diff["labels_minus_pairs"]
    for kind in ("single", "pairs", "within_prompt"):
        assert finite(d[kind]["points"]) and d[kind]["ci95"][0] <= d[kind]["points"] <= d[kind]["ci95"][1]
    # a paired difference is the difference of the two agreements, on the same items
    assert d["single"]["points"] == pytest.approx(
        models["labels"]["single"]["points"] - models["pairs"]["single"]["points"], abs=0.02
    )
    assert by["time"][0]["seconds"] > 0 and "policy" not in by  # --policy-seconds 0: no policies
    # the scratch artifacts are gone, and nothing was written beside the caches
    assert sorted(p.name for p in labelled_db["artifacts"].iterdir()) == ["gold"]


def test_the_split_holds_out_whole_prompts():
    bench = load_bench()
    data = {
        "completions": {i: (f"p{i // 3}", f" c{i}") for i in range(30)},
        "judgements": [{"completion_id": i, "prompt": f"p{i // 3}", "label": "good"} for i in range(30)],
        "pair_rows": [
            {"prompt": f"p{i // 3}", "a_id": i, "b_id": i + 1, "choice": "a", "comparison_id": i}
            for i in range(0, 30, 3)
        ],
    }
    held = bench.heldout_prompts([p for p, _ in data["completions"].values()], 0.2, seed=0)
    assert len(held) == 2
    labels, pairs = bench.training_data(data, held, 10, 3, seed=0)
    assert not {r["prompt"] for r in labels + pairs} & held
    test = bench.heldout_sets(data, held)
    assert {data["completions"][i][0] for i in test["texts"]} == held and len(test["texts"]) == 6
    assert len(test["comparisons"]) == 2 and len(test["within_prompt"]) == 6
    # gold orders each pair, ties out; the arrays are (gold-higher, gold-lower) scores
    gold = {0: 0.9, 1: 0.1, 2: 0.5, 3: 0.5}
    assert bench.gold_ordered([(0, 1), (1, 2), (2, 3)], gold) == [(0, 1), (2, 1)]
    chosen, rejected = bench.pair_arrays([(0, 1), (2, 1)], {0: 2.0, 1: 1.0, 2: 0.0})
    assert chosen.tolist() == [2.0, 0.0] and rejected.tolist() == [1.0, 1.0]
    assert bench.pair_agreement(chosen, rejected, seed=0)["points"] == 50.0
    y = np.array([1.0, 0.0, 1.0, 0.0])
    assert bench.single_agreement(y, np.array([0.9, 0.2, 0.4, 0.1]), seed=0)["points"] == 75.0


def test_majority_drops_ties_within_the_sample():
    bench = load_bench()
    rows = [
        {"completion_id": 1, "prompt": "A", "completion": " x", "label": "good", "labeler": "u"},
        {"completion_id": 1, "prompt": "A", "completion": " x", "label": "bad", "labeler": "v"},
        {"completion_id": 2, "prompt": "A", "completion": " y", "label": "bad", "labeler": "u"},
    ]
    assert bench.combine_judgements(rows, "majority") == [{"completion_id": 2, "text": "A y", "label": 0.0}]
    assert [r["label"] for r in bench.combine_judgements(rows, "soft")] == [0.5, 0.0]


def in_unit(lo_hi, lo: float, hi: float) -> bool:
    return all(finite(x) for x in lo_hi) and lo <= lo_hi[0] <= lo_hi[1] <= hi


def test_policies_from_each_reward_model_and_dpo_on_exactly_the_pairs_sample(
    env, labelled_db, tiny_reward_dir, tiny_policy_dir, capsys, monkeypatch
):
    """--policy-seconds: PPO against each reward model and DPO on the pairs model's sample, all scored by one
    harness; mix-half trains on --mix-labels and --mix-pairs."""
    import rl_finetune.offline

    bench = load_bench()
    real_dpo, seen = rl_finetune.offline.train_dpo, []

    def spy(policy_dir, pairs, *args, **kwargs):
        seen.append(list(pairs))
        return real_dpo(policy_dir, pairs, *args, **kwargs)

    monkeypatch.setattr(rl_finetune.offline, "train_dpo", spy)
    extra = ["--labels", "40", "--pairs", "20", "--models", "labels", "pairs", "mix-half", "--mix-labels", "16"]
    extra += ["--mix-pairs", "6", "--policy-seconds", "3", "--policy", str(tiny_policy_dir)]
    assert bench.main(bench_args(labelled_db, tiny_reward_dir, *extra)) == 0
    by = lines(capsys.readouterr().out)
    models = {m["model"]: m for m in by["model"]}
    assert models["mix-half"]["trained_on"] == {"judgements": 16, "pair_judgements": 6, "texts_read": 28}

    runs = {r["run"]: r for r in by["policy"]}
    assert list(runs) == ["start", "ppo:labels", "ppo:pairs", "ppo:mix-half", "dpo:pairs"]
    start = runs["start"]
    for name, r in runs.items():
        assert 0 <= r["gold_rate"] <= 1 and in_unit(r["gold_ci95"], 0, 1), (name, r)
        assert r["gold_ci95"][0] <= r["gold_rate"] <= r["gold_ci95"][1] and r["n_prompts"] == 4  # compare.eval_prompts
        assert finite(r["gain_points"]) and in_unit(r["gain_ci95"], -100, 100)
        assert r["gain_points"] == pytest.approx(100 * (r["gold_rate"] - start["gold_rate"]), abs=0.01)
        assert finite(r["kl"]) and 0 <= r["distinct_2"] <= 1
        if name != "start":
            assert r["steps"] >= 1 and finite(r["wall_seconds"]) and r["budget_seconds"] == 3
    assert start["gain_points"] == 0 and abs(start["kl"]) < 1e-4
    assert runs["ppo:labels"]["labels_used"] == models["labels"]["trained_on"]
    assert runs["ppo:mix-half"]["labels_used"] == models["mix-half"]["trained_on"]

    # DPO read the pairs model's 20 sampled judgements, not the database's 110
    sampled = by["split"][0]["train"]["pair_judgements"]
    assert sampled == 20 and models["pairs"]["trained_on"]["pair_judgements"] == 20
    assert runs["dpo:pairs"]["labels_used"] == {
        "judgements": 0, "pair_judgements": 20, "texts_read": 40, "sampled": 20, "left_out": 0,
    }  # fmt: skip
    engine = db.connect(labelled_db["url"])
    data = bench.read_database(engine)
    engine.dispose()
    held = bench.heldout_prompts([p for p, _ in data["completions"].values()], 0.2, seed=0)
    _, pair_rows = bench.training_data(data, held, 40, 20, seed=0)
    assert len(seen) == 1 and seen[0] == bench.preference_records(pair_rows)

    diff = {k: v for k, v in by["policy_difference"][0].items() if k not in ("figure", "command")}
    assert set(diff) == {
        "ppo_labels_minus_ppo_pairs", "ppo_labels_minus_dpo_pairs", "ppo_mix_half_minus_ppo_labels",
        "ppo_mix_half_minus_ppo_pairs",
    }  # fmt: skip
    for d in diff.values():
        assert finite(d["points"]) and in_unit(d["ci95"], -100, 100) and d["ci95"][0] <= d["points"] <= d["ci95"][1]
        assert d["n"] == 4
    a, b = runs["ppo:labels"]["gold_rate"], runs["dpo:pairs"]["gold_rate"]
    assert diff["ppo_labels_minus_dpo_pairs"]["points"] == pytest.approx(100 * (a - b), abs=0.01)
    assert by["time"][0]["policy_seconds"] == 3
    assert sorted(p.name for p in labelled_db["artifacts"].iterdir()) == ["gold"]


def test_dpo_records_leave_out_empty_and_equal_sides_and_policy_differences_are_paired():
    bench = load_bench()
    rows = [
        {"prompt": "P", "a": " x", "b": " y", "choice": "b", "comparison_id": 1, "labeler": "u"},
        {"prompt": "P", "a": "", "b": " y", "choice": "a", "comparison_id": 2, "labeler": "u"},
        {"prompt": "P", "a": " z", "b": " z", "choice": "a", "comparison_id": 3, "labeler": "u"},
    ]
    records, left_out = bench.dpo_records(rows)
    assert left_out == 2 and [(r.chosen, r.rejected, r.comparison_id) for r in records] == [(" y", " x", 1)]
    # the eval prompts' 0/1 gold outcomes, paired: 3 of 4 prompts better, none worse
    outcomes = {"ppo:labels": np.array([1.0, 1, 1, 1]), "ppo:pairs": np.array([0.0, 0, 0, 1])}
    d = bench.policy_differences(outcomes, seed=0)
    assert list(d) == ["ppo_labels_minus_ppo_pairs"] and d["ppo_labels_minus_ppo_pairs"]["points"] == 75.0
    assert d["ppo_labels_minus_ppo_pairs"]["ci95"][0] >= 0  # no prompt went the other way
    # mix-half: a sub-sample of the labels and pairs samples
    budgets = bench.model_budgets(list(range(10)), list(range(100, 106)), 4, 2, seed=0)
    lab, prs = budgets["mix-half"]
    assert len(lab) == 4 and len(prs) == 2 and set(lab) <= set(range(10)) and set(prs) <= set(range(100, 106))
    assert budgets["mix"] == (list(range(10)), list(range(100, 106))) and budgets["pairs"][0] == []


@pytest.mark.parametrize(
    ("extra", "fix"),
    [
        (["--labels", "100000", "--pairs", "10"], "python -m labeling_app.simulate --n-labels"),
        (["--labels", "10", "--pairs", "100000"], "python -m db pairs make"),
        (["--labels", "10", "--pairs", "10", "--mix-labels", "11"], "--mix-labels 500 --mix-pairs 250"),
        (["--policy-seconds", "-1"], "or 0 for no policies"),
    ],
)
def test_too_few_labels_or_pairs_is_one_line_naming_the_fix(env, labelled_db, tiny_reward_dir, capsys, extra, fix):
    bench = load_bench()
    with pytest.raises(SystemExit) as err:
        bench.main(bench_args(labelled_db, tiny_reward_dir, *extra))
    assert err.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and fix in out.err and len(out.err.strip().splitlines()) == 1
