"""PPO end to end on a tiny policy: it learns, saves a plain HF model, resumes, rejects bad input,
and the CLI writes, points `latest` at and registers a policy version."""

from __future__ import annotations

import json

import pytest
import torch

from common.errors import UserError
from rl_finetune.ppo import GenKwargs, PPOConfig, save_policy, train

CHOSEN = " good"


def tiny_config(**kw) -> PPOConfig:
    base = dict(
        total_steps=4,
        num_rollouts=16,
        generation_batch_size=16,
        minibatch_size=16,
        ppo_epochs=4,
        lr=1e-3,
        init_kl_coef=0.0,
        eval_interval=2,
        checkpoint_interval=0,
        mixed_precision="no",
        gen_kwargs=GenKwargs(max_new_tokens=6, stop_at_eos=False),
    )
    base.update(kw)
    return PPOConfig(**base)


def load_tiny(path, boost: bool = True):
    """The tiny random policy, with the chosen token given a prior of a few percent (a random
    50k-vocabulary model would almost never sample it, and PPO can only reinforce what it samples)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    if boost:
        (token,) = tok.encode(CHOSEN)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            v = torch.randn(model.config.n_embd, generator=g)
            v = v / v.norm()
            model.transformer.ln_f.bias.copy_(v)
            model.transformer.wte.weight[token] = 3.0 * v
    return model, tok


def count_chosen(texts):
    return [t.count(CHOSEN) for t in texts]


PROMPTS = ["I think", "The movie was", "This is", "Well", "My", "It", "A film", "The"]


def test_tiny_policy_learns_the_chosen_token_and_saves_a_plain_model(tiny_policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = load_tiny(tiny_policy_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train(
        (model, tok),
        count_chosen,
        PROMPTS,
        tiny_config(total_steps=3, eval_interval=3),
        eval_prompts=PROMPTS,
        work_dir=tmp_path / "work",
        progress=False,
    )
    s = res.summary
    print(s)
    assert s["eval/reward_after"] > s["eval/reward_before"] + 0.5, s
    assert res.metrics[-1]["reward_mean"] > res.metrics[1]["reward_mean"]
    assert any(not torch.equal(before[k], v) for k, v in res.model.state_dict().items())
    for key in (
        "reward_mean",
        "reward_std",
        "kl",
        "entropy",
        "loss/policy",
        "loss/value",
        "clipfrac",
        "approx_kl",
        "kl_coef",
        "samples_per_s",
    ):
        assert key in res.metrics[1], key

    out = save_policy(res, tmp_path / "policy")
    loaded = AutoModelForCausalLM.from_pretrained(out)  # a normal causal LM, no value head inside
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    assert torch.equal(loaded.lm_head.weight, res.model.lm_head.weight)
    for name in (
        "value_head.safetensors",
        "metrics.jsonl",
        "samples.md",
        "reward_kl.png",
        "reward_vs_kl.png",
        "summary.json",
        "ppo_config.json",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "distinct-2" in (out / "samples.md").read_text()


def test_resume_continues_from_the_checkpoint(tiny_policy_dir, tmp_path):
    work = tmp_path / "work"
    cfg = tiny_config(
        total_steps=2, checkpoint_interval=1, num_rollouts=4, generation_batch_size=4, minibatch_size=4, ppo_epochs=1
    )
    train(
        load_tiny(tiny_policy_dir), count_chosen, PROMPTS, cfg, eval_prompts=PROMPTS[:2], work_dir=work, progress=False
    )
    state = json.loads((work / "checkpoint" / "state.json").read_text())
    assert state["step"] == 1
    cfg.total_steps = 3
    res = train(
        load_tiny(tiny_policy_dir),
        count_chosen,
        PROMPTS,
        cfg,
        eval_prompts=PROMPTS[:2],
        work_dir=work,
        resume=True,
        progress=False,
    )
    assert [r["step"] for r in res.metrics] == [0, 1, 2, 3]
    assert res.summary["steps"] == 3


def test_adaptive_kl_moves_the_coefficient(tiny_policy_dir):
    cfg = tiny_config(
        total_steps=2,
        init_kl_coef=0.1,
        kl_target=0.01,
        kl_horizon=10,
        num_rollouts=4,
        generation_batch_size=4,
        minibatch_size=2,
        ppo_epochs=1,
        gen_kwargs=GenKwargs(max_new_tokens=4, stop_at_eos=True),
    )
    res = train(load_tiny(tiny_policy_dir, boost=False), count_chosen, PROMPTS, cfg, progress=False)
    coefs = [r["kl_coef"] for r in res.metrics]
    assert coefs[0] == pytest.approx(0.1) and coefs[1] != pytest.approx(0.1)


def test_exact_kl_loss_is_logged_and_holds_the_policy_nearer_the_reference(tiny_policy_dir):
    common = dict(
        total_steps=3,
        init_kl_coef=0.0,
        num_rollouts=4,
        generation_batch_size=4,
        minibatch_size=4,
        ppo_epochs=2,
        lr=3e-3,
        gen_kwargs=GenKwargs(max_new_tokens=6, stop_at_eos=False),
    )
    free = train(load_tiny(tiny_policy_dir), count_chosen, PROMPTS, tiny_config(**common), progress=False)
    held = train(
        load_tiny(tiny_policy_dir), count_chosen, PROMPTS, tiny_config(kl_loss_coef=5.0, **common), progress=False
    )
    rows = [r for r in held.metrics if "loss/kl" in r]
    assert rows and all(r["loss/kl"] >= 0 for r in rows)
    assert not any("loss/kl" in r for r in free.metrics)
    last = [[r for r in res.metrics if "kl_k3" in r][-1]["kl_k3"] for res in (free, held)]
    assert last[1] < last[0]


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda texts: [float("nan")] * len(texts), "NaN/inf .* at step 0, rollout chunk 0"),
        (lambda texts: [1.0] * (len(texts) + 1), "returned 5 scores for 4 texts at step 0, rollout chunk 0"),
    ],
)
def test_bad_reward_fn_names_the_batch(tiny_policy_dir, bad, match):
    cfg = tiny_config(total_steps=1, num_rollouts=4, generation_batch_size=4, minibatch_size=4)
    with pytest.raises(UserError, match=match):
        train(load_tiny(tiny_policy_dir, boost=False), bad, PROMPTS, cfg, progress=False)


def test_policy_path_that_does_not_load_is_named(tmp_path):
    from base_policy.loading import load_policy

    missing = tmp_path / "no_such_policy"
    with pytest.raises(UserError, match="no_such_policy"):
        train(load_policy(str(missing)), count_chosen, PROMPTS, tiny_config(total_steps=1), progress=False)


def test_train_takes_one_shape_of_policy(tiny_policy_dir):
    # a folder name is not a policy: train() says to load it first, in one line
    with pytest.raises(UserError, match=r"\(model, tokenizer\) pair.*load_policy") as info:
        train(str(tiny_policy_dir), count_chosen, PROMPTS, tiny_config(total_steps=1), progress=False)
    assert "\n" not in str(info.value)


def test_cli_saves_points_latest_and_registers_with_parent(smoke_env, tiny_policy_dir, tiny_reward_dir, capsys):
    import db
    from common.paths import policies_dir, resolve_latest
    from rl_finetune.ppo.cli import main

    with pytest.raises(SystemExit) as exc:  # kl_target without kl_horizon: a clear error, exit 2
        main(["--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--set", "kl_target=6"])
    assert exc.value.code == 2
    assert "kl_horizon" in capsys.readouterr().err

    assert main(["--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir)]) == 0
    run = resolve_latest(policies_dir())
    assert run is not None and (run / "model.safetensors").is_file() and (run / "value_head.safetensors").is_file()
    assert not list(policies_dir().glob(".work-*"))  # the work folder is gone after the save
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and "eval/p_good_after" in summary
    engine = db.connect()
    versions = {v.id: v for v in db.list_model_versions(engine, kind="policy")}
    new = [v for v in versions.values() if v.name == run.name]
    assert len(new) == 1 and new[0].parent_id is not None
    assert versions[new[0].parent_id].path == str(tiny_policy_dir.resolve())


def test_eval_metrics_give_the_gold_positive_rate():
    """With the gold judge, an eval row has its mean and the share it calls good (score > 0.5)."""
    from rl_finetune.ppo.report import eval_metrics

    samples = [
        {"prompt": "a", "response": "x y", "reward": 1.0, "gold": 0.9},
        {"prompt": "b", "response": "y z", "reward": 0.0, "gold": 0.2},
        {"prompt": "c", "response": "z w", "reward": 0.5, "gold": 0.6},
    ]
    row = eval_metrics([1.0, 2.0, 3.0], samples)
    assert row["eval/kl"] == 2.0 and row["eval/gold"] == pytest.approx(1.7 / 3)
    assert row["eval/gold_positive"] == pytest.approx(2 / 3)
    assert "eval/gold_positive" not in eval_metrics([0.0], [{"prompt": "a", "response": "x", "reward": 1.0}])
    # compare scores the positive rate itself: its value is kept, not recomputed
    given = [{**s, "gold_positive": 1.0} for s in samples]
    assert eval_metrics([0.0] * 3, given)["eval/gold_positive"] == 1.0
