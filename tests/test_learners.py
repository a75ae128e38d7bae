"""RLOO and GRPO beside PPO on a tiny policy: they raise a token-counting reward through the same loop
(rollout, reference, evaluation, reports), the rollout repeats each prompt k times, and bad settings are refused."""

from __future__ import annotations

import pytest
import torch

from common.config import load_config
from common.errors import ConfigError
from rl_finetune.ppo import PPOConfig, train
from tests.test_ppo_train import PROMPTS, count_chosen, load_tiny, tiny_config


@pytest.mark.parametrize(
    "algorithm, extra",
    [
        ("rloo", {}),  # the KL in the reward (k1)
        ("grpo", {"kl_penalty": "loss", "kl_estimator": "k3", "init_kl_coef": 0.01}),  # the KL as a loss term
    ],
)
def test_critic_free_learner_raises_a_token_counting_reward(tiny_policy_dir, tmp_path, algorithm, extra):
    model, tok = load_tiny(tiny_policy_dir)
    cfg = tiny_config(algorithm=algorithm, samples_per_prompt=4, total_steps=3, eval_interval=3, **extra)
    res = train((model, tok), count_chosen, PROMPTS, cfg, eval_prompts=PROMPTS, work_dir=tmp_path, progress=False)
    s = res.summary
    print(algorithm, s)
    assert s["eval/reward_after"] > s["eval/reward_before"] + 0.5, s
    assert res.metrics[-1]["reward_mean"] > res.metrics[1]["reward_mean"]
    row = res.metrics[1]
    assert "loss/value" not in row and "explained_variance" not in row  # no critic
    assert all(key in row for key in ("loss/policy", "loss/total", "clipfrac", "approx_kl", "kl", "kl_k3", "entropy"))
    if extra.get("kl_penalty") == "loss":
        assert "loss/kl_sampled" in row
    assert all(p.abs().sum() == 0 for p in res.policy.v_head.parameters())  # the value head never trained
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "summary.json").is_file()
    assert (tmp_path / "ppo_config.json").read_text().count(f'"algorithm": "{algorithm}"') == 1


def test_rollout_repeats_each_prompt_k_times(tiny_policy_dir):
    from rl_finetune.ppo import PPOTrainer
    from rl_finetune.ppo.report import Timer

    model, tok = load_tiny(tiny_policy_dir)
    cfg = tiny_config(algorithm="rloo", samples_per_prompt=4, total_steps=1)
    trainer = PPOTrainer((model, tok), count_chosen, PROMPTS, cfg, progress=False)
    rollout = trainer.rollout(0, Timer())
    assert len(rollout.prompts) == 16 and len(set(rollout.prompts)) == 4
    assert all(len(set(rollout.prompts[i : i + 4])) == 1 for i in range(0, 16, 4))  # side by side
    assert len(set(rollout.responses)) > 4  # k different samples, not k copies


def test_ppo_default_takes_one_sample_per_prompt():
    cfg = PPOConfig()
    assert (cfg.algorithm, cfg.k) == ("ppo", 1)
    assert PPOConfig(algorithm="grpo").k == 4


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["algorithm=rloo", "samples_per_prompt=1"], "no leave-one-out"),
        (["algorithm=grpo", "samples_per_prompt=1"], "advantage 0"),
        (["algorithm=rloo", "samples_per_prompt=3"], "multiple of ppo.samples_per_prompt"),
        (["samples_per_prompt=0"], "must be >= 1"),
        (["kl_penalty=loss"], "for algorithm=rloo or grpo"),
        (["algorithm=dpo"], "not allowed"),
    ],
)
def test_bad_learner_settings_are_refused_with_a_fix(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(PPOConfig, "ppo", None, overrides)
    assert err.value.fix and "\n" not in str(err.value)


# ------------------------------------------------------------------ best-of-n


def test_best_of_n_keeps_the_reward_models_best_and_reports_the_analytic_kl(tiny_policy_dir):
    import math

    from rl_finetune.ppo.best_of_n import best_of_n

    seen = []

    def reward_fn(texts):  # the token count, recording every score it gives
        scores = count_chosen(texts)
        seen.extend(scores)
        return scores

    cfg = tiny_config(generation_batch_size=8)
    row, samples = best_of_n(load_tiny(tiny_policy_dir), reward_fn, PROMPTS, n=4, config=cfg, gold_fn=count_chosen)
    all_scores = torch.tensor(seen[-4 * len(PROMPTS) :], dtype=torch.float32).reshape(len(PROMPTS), 4)
    assert [s["reward"] for s in samples] == all_scores.max(-1).values.tolist()  # the argmax of each prompt's 4
    assert [s["prompt"] for s in samples] == PROMPTS
    assert row["eval/kl"] == pytest.approx(math.log(4) - 3 / 4)
    assert row["eval/reward"] >= row["eval/reward_mean_of_n"] and row["eval/best_of_n"] == 4
    assert row["eval/gold"] == row["eval/reward"]  # gold_fn = reward_fn here
    assert 0 <= row["eval/distinct_2"] <= 1


def test_best_of_1_is_the_plain_eval(tiny_policy_dir):
    from rl_finetune.ppo import PPOTrainer
    from rl_finetune.ppo.best_of_n import evaluate_best_of_n

    cfg = tiny_config(generation_batch_size=8)
    trainer = PPOTrainer(load_tiny(tiny_policy_dir), count_chosen, PROMPTS, cfg, eval_prompts=PROMPTS, progress=False)
    plain_row, plain = trainer.evaluate()
    row, samples = evaluate_best_of_n(trainer.evaluator, trainer.unwrapped, 1)
    assert samples == plain  # same prompts, seed and sampler: the same responses and scores
    assert row["eval/kl"] == 0.0 and row["eval/reward"] == plain_row["eval/reward"]


def test_rloo_command_runs_the_stage_and_names_the_run(smoke_env, tiny_policy_dir, tiny_reward_dir, capsys):
    import json

    from common.paths import policies_dir, resolve_latest
    from rl_finetune.__main__ import main

    args = ["--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--no-db"]
    assert main(["rloo", *args, "--set", "samples_per_prompt=2"]) == 0
    run = resolve_latest(policies_dir())
    assert run is not None and run.name.startswith("rloo-") and (run / "model.safetensors").is_file()
    config = json.loads((run / "ppo_config.json").read_text())
    assert (config["algorithm"], config["samples_per_prompt"]) == ("rloo", 2)
    assert "saved" in capsys.readouterr().out
