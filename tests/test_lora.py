"""LoRA through peft as an option of the PPO trainer (``lora_r > 0``), on a tiny GPT-2 and a tiny Llama: only the
adapters and the value head train, the reference is the start model (the adapters off, no copy kept) also with the
shared frozen trunk, PPO with LoRA learns, the saved policy is a plain causal LM with the merged weights, a LoRA
run resumes, and bad settings are refused in one line before anything is written."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from common.config import load_config
from common.errors import ConfigError, UserError
from rl_finetune.ppo import GenKwargs, PPOConfig, PPOTrainer, save_policy, train
from rl_finetune.ppo.report import Timer
from rl_finetune.value_head import LoraAdapters, PolicyWithValueHead, default_lora_targets
from tests.test_hydra import _tiny_pair
from tests.test_ppo_train import PROMPTS, count_chosen, load_tiny, tiny_config

FAMILY_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def lora_config(**kw) -> PPOConfig:
    """Two tiny PPO steps of 8 episodes x 5 tokens with rank-4 adapters on the top block (of 3)."""
    base = dict(
        total_steps=2, num_rollouts=8, generation_batch_size=8, minibatch_size=8, ppo_epochs=2, lr=1e-2,
        init_kl_coef=0.1, eval_interval=1, num_layers_unfrozen=1, lora_r=4, checkpoint_interval=0,
        mixed_precision="no", gen_kwargs=GenKwargs(max_new_tokens=5, stop_at_eos=False),
    )  # fmt: skip
    base.update(kw)
    return PPOConfig(**base)


def length_reward(texts):
    return [float(len(t) % 7) for t in texts]


def adapter_block(name: str) -> int:
    """The block index in a parameter name such as ``transformer.h.2.attn.c_attn.lora_A.default.weight``."""
    parts = name.split(".")
    return int(next(p for p in parts if p.isdigit()))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("unfrozen", [1, -1], ids=["top-1", "all"])
def test_only_the_adapters_and_the_value_head_train(kind, unfrozen):
    model, tok = _tiny_pair(kind)
    trainer = PPOTrainer(
        (model, tok), length_reward, PROMPTS, lora_config(num_layers_unfrozen=unfrozen), progress=False
    )
    policy = trainer.unwrapped
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    adapters = [n for n in trainable if not n.startswith("v_head.")]
    assert sorted(set(trainable) - set(adapters)) == ["v_head.bias", "v_head.weight"]
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters), adapters
    blocks = {adapter_block(n) for n in adapters}
    assert blocks == ({2} if unfrozen == 1 else {0, 1, 2})  # layers_to_transform: the trainable blocks only
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in adapters}
    assert adapted == set(FAMILY_TARGETS[kind]) and default_lora_targets(_tiny_pair(kind)[0]) == FAMILY_TARGETS[kind]
    optimised = sum(p.numel() for group in trainer.opt.param_groups for p in group["params"])
    assert optimised == sum(p.numel() for p in policy.parameters() if p.requires_grad)
    assert trainer.n_trainable == sum(p.numel() for n, p in policy.lm.named_parameters() if p.requires_grad)
    # no reference copy: with a shared trunk its top blocks are the policy's own, adapters off
    assert trainer.ref is None
    if unfrozen == 1:
        assert trainer.trunk is not None and trainer.trunk.ref_blocks == [] and trainer.trunk.ref_norm is None
    else:
        assert trainer.trunk is None


@pytest.mark.parametrize(
    "kind, unfrozen, precision",
    [("gpt2", 1, "no"), ("llama", 1, "no"), ("gpt2", -1, "no"), ("llama", 1, "bf16")],
    ids=["gpt2-top-1", "llama-top-1", "gpt2-all", "llama-top-1-bf16"],
)
def test_the_reference_stays_the_start_model_after_updates(kind, unfrozen, precision):
    model, tok = _tiny_pair(kind)
    start = PolicyWithValueHead(copy.deepcopy(model)).eval()
    cfg = lora_config(num_layers_unfrozen=unfrozen, mixed_precision=precision)
    trainer = PPOTrainer((model, tok), length_reward, PROMPTS, cfg, progress=False)
    for step in range(2):
        trainer.train_step(step)
    rollout = trainer.rollout(2, Timer())
    with torch.no_grad():
        ref = trainer.reference_logits(rollout).float()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        with autocast:
            expected = start(**rollout.model_inputs(), with_values=False)[0].float()
        policy = trainer.policy_forward(rollout)[0].float()
    tol = dict(rtol=0, atol=2e-2) if precision == "bf16" else {}
    torch.testing.assert_close(ref, expected, **tol)
    assert (policy - ref).abs().max() > 1e-3  # the adapters did train
    lm = trainer.unwrapped.lm
    adapters = [p for n, p in lm.named_parameters() if ".lora_" in n]
    assert all(p.requires_grad for p in adapters)  # switched back on after the reference pass
    # bf16 weight copies are cached for frozen weights only, never for the (briefly frozen) adapters
    assert not {id(p) for p in adapters} & set(trainer.bf16._frozen)
    # the weights the adapters sit on never change
    base = {k.replace(".base_layer.", "."): v for k, v in lm.state_dict().items() if ".lora_" not in k}
    assert all(torch.equal(v, base[k]) for k, v in start.lm.state_dict().items())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_lora_shared_trunk_run_equals_the_plain_one(kind):
    """With adapters in the top block only, the shared frozen trunk gives the metrics and weights of the plain
    path (every layer run, the reference the model with its adapters off)."""

    def run(shared: bool):
        model, tok = _tiny_pair(kind)
        cfg = lora_config(shared_trunk=shared)
        return train((model, tok), length_reward, PROMPTS[:3], cfg, eval_prompts=["A movie", "This"], progress=False)

    plain, shared = run(False), run(True)
    skip = {"elapsed_s", "step_time", "samples_per_s", "eval_time"}
    for a, b in zip(plain.metrics, shared.metrics):
        for key in a:
            if key not in skip and not key.startswith("time/"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    assert [s["response"] for s in plain.after] == [s["response"] for s in shared.after]
    for (name, p), q in zip(plain.policy.named_parameters(), shared.policy.parameters()):
        torch.testing.assert_close(q, p, msg=name)
    assert any(r.get("kl", 0) != 0 for r in shared.metrics)  # the adapters moved the policy off the reference


def test_ppo_with_lora_raises_the_token_counting_reward_and_saves_a_plain_merged_model(tiny_policy_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = load_tiny(tiny_policy_dir)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = tiny_config(lora_r=8, lr=3e-3, total_steps=3, eval_interval=3)
    res = train((model, tok), count_chosen, PROMPTS, cfg, eval_prompts=PROMPTS, work_dir=tmp_path / "w", progress=False)
    s = res.summary
    print(s)
    assert s["eval/reward_after"] > s["eval/reward_before"] + 0.5, s
    assert res.metrics[-1]["reward_mean"] > res.metrics[1]["reward_mean"]

    out = save_policy(res, tmp_path / "policy")
    assert not (out / "adapter_config.json").exists() and (out / "value_head.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()  # plain transformers, no peft
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    assert set(loaded.state_dict()) == set(start)  # the start model's keys: no lora_A/B, no base_layer
    assert any(not torch.equal(start[k], v) for k, v in loaded.state_dict().items())  # the adapters are merged in
    ids = torch.tensor([tok.encode("I think the movie was")])
    with torch.no_grad():
        logits = loaded(ids).logits
        torch.testing.assert_close(logits, res.model(ids).logits, rtol=0, atol=0)  # the merged model, exactly
        torch.testing.assert_close(logits, res.policy.lm(ids).logits, rtol=1e-5, atol=1e-5)  # = policy + adapters
    assert json.loads((out / "ppo_config.json").read_text())["lora_r"] == 8


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_merged_copy_is_a_plain_model_with_the_adapted_logits(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok = _tiny_pair(kind)
    lora = LoraAdapters(model, r=4, alpha=8.0, num_layers_unfrozen=2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.normal_(std=0.2)  # B is zero at the start: give the adapters something to merge
    ids = torch.tensor([tok.encode("The film was long and")])
    with torch.no_grad():
        adapted = model(ids).logits
        with lora.off():
            base = model(ids).logits
    merged = lora.merged()
    merged.save_pretrained(tmp_path / "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert not any(".lora_" in k or "base_layer" in k for k in loaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, merged(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(loaded(ids).logits, adapted, rtol=1e-5, atol=1e-5)
    assert (adapted - base).abs().max() > 1e-2
    assert any(".lora_" in n for n, _ in model.named_parameters())  # the trainer's model keeps its adapters


def test_a_lora_run_resumes_from_its_checkpoint(tiny_policy_dir, tmp_path):
    work = tmp_path / "work"
    small = dict(num_rollouts=4, generation_batch_size=4, minibatch_size=4, ppo_epochs=1, lora_r=4)
    cfg = tiny_config(total_steps=2, checkpoint_interval=1, **small)
    train(
        load_tiny(tiny_policy_dir), count_chosen, PROMPTS, cfg, eval_prompts=PROMPTS[:2], work_dir=work, progress=False
    )
    assert json.loads((work / "checkpoint" / "state.json").read_text())["step"] == 1
    weights = torch.load(work / "checkpoint" / "policy.pt", weights_only=True)
    assert any(".lora_B." in k for k in weights)
    res = train(
        load_tiny(tiny_policy_dir), count_chosen, PROMPTS, tiny_config(total_steps=3, checkpoint_interval=1, **small),
        eval_prompts=PROMPTS[:2], work_dir=work, resume=True, progress=False,
    )  # fmt: skip
    assert [r["step"] for r in res.metrics] == [0, 1, 2, 3] and res.summary["steps"] == 3


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["lora_r=-1"], "lora_r=-1 must be >= 0"),
        (["lora_r=4", "num_layers_unfrozen=0"], "adapters in no layer"),
        (["lora_r=4", "lora_alpha=0"], "lora_alpha=0"),
        (["lora_r=4", "lora_dropout=1.0"], "lora_dropout=1.0"),
        (["lora_r=4", "lora_target=[]"], "empty list"),
        (["lora_r=4", "lora_target=c_attn"], "lora_target"),  # a list, not a bare name
    ],
)
def test_bad_lora_settings_are_refused_with_a_fix(overrides, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(PPOConfig, "ppo", None, overrides)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kind, target, unfrozen",
    [("gpt2", ["c_attn", "q_proj"], -1), ("llama", ["c_attn"], 1), ("gpt2", ["lm_head"], -1)],
)
def test_lora_target_naming_no_layer_of_the_blocks_is_refused(kind, target, unfrozen):
    model, tok = _tiny_pair(kind)
    cfg = lora_config(lora_target=target, num_layers_unfrozen=unfrozen)
    with pytest.raises(UserError, match=r"ppo\.lora_target \[.*\] names no linear layer") as err:
        train((model, tok), length_reward, PROMPTS, cfg, progress=False)
    assert "\n" not in str(err.value) and FAMILY_TARGETS[kind][0] in err.value.fix
    assert not any(".lora_" in n for n, _ in model.named_parameters())  # refused before peft touched the model


@pytest.mark.parametrize(
    "sets, match", [(["lora_r=-2"], "lora_r=-2 must be >= 0"), (["lora_r=4", "lora_target=[nope]"], "names no linear")]
)
def test_the_cli_refuses_bad_lora_input_with_exit_2_and_writes_nothing(
    smoke_env, tiny_policy_dir, tiny_reward_dir, capsys, sets, match
):
    from common.paths import policies_dir
    from rl_finetune.ppo.cli import main

    args = ["--policy", str(tiny_policy_dir), "--reward", str(tiny_reward_dir), "--no-db"]
    with pytest.raises(SystemExit) as exc:
        main([*args, *[x for s in sets for x in ("--set", s)]])
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and match in lines[0], lines
    assert not policies_dir().exists() or not any(policies_dir().iterdir())  # no run folder claimed
