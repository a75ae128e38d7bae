"""The TRL side of the PPO throughput comparison: TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer``
at batch 16, response 32, 4 PPO epochs, 1 minibatch, on the same policy and a MiniLM reward.

TRL is never a project dependency: this script runs in a throwaway venv, and
``benchmarks/bench_ppo.py --trl`` starts it there with the same policy, reward and prompts::

    python3 -m venv /tmp/trl-venv && /tmp/trl-venv/bin/pip install torch==2.13.0 trl==1.12.0
    flock /tmp/rlhf-cpu.lock python benchmarks/bench_ppo.py --trl

TRL's reward model must be a sequence classifier on the policy's own tokenizer; the adapter below
decodes the policy's tokens to text, re-tokenises it for MiniLM and returns its score (logit
difference, the same reward our side uses) at every position, so TRL's ``get_reward`` picks it up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

import torch
from torch import nn


class _ScoreEverywhere(nn.Module):
    """TRL calls ``getattr(rm, rm.base_model_prefix)(input_ids=..., attention_mask=...)`` and then
    ``rm.score(hidden_states[-1])``; this backbone returns the text's score as a (B, L, 1) "hidden state"."""

    def __init__(self, policy_tok, rm, rm_tok):
        super().__init__()
        self.policy_tok, self.rm, self.rm_tok = policy_tok, rm, rm_tok

    @torch.no_grad()
    def forward(self, input_ids, attention_mask, **_):
        texts = [
            self.policy_tok.decode(ids[m.bool()].tolist(), skip_special_tokens=True)
            for ids, m in zip(input_ids, attention_mask)
        ]
        enc = self.rm_tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = self.rm(**enc).logits.float()
        score = (logits[:, 1] - logits[:, 0])[:, None, None].expand(-1, input_ids.shape[1], 1)
        return types.SimpleNamespace(hidden_states=[score])


class RewardAdapter(nn.Module):
    base_model_prefix = "backbone"

    def __init__(self, policy_tok, rm_dir):
        super().__init__()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=2).eval()
        self.backbone = _ScoreEverywhere(policy_tok, rm, AutoTokenizer.from_pretrained(rm_dir))
        self.score = nn.Identity()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--policy", required=True)
    p.add_argument("--reward", required=True, help="a sequence-classifier folder (MiniLM or our reward model)")
    p.add_argument("--prompts", required=True, help="a text file, one prompt per line")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bf16", action="store_true")
    args = p.parse_args()

    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(args.policy)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    policy = AutoModelForCausalLM.from_pretrained(args.policy)
    ref = AutoModelForCausalLM.from_pretrained(args.policy)
    value = AutoModelForSequenceClassification.from_pretrained(args.policy, num_labels=1)
    value.config.pad_token_id = tok.pad_token_id
    reward = RewardAdapter(tok, args.reward)
    prompts = [line.strip() for line in open(args.prompts, encoding="utf-8") if line.strip()]
    ds = Dataset.from_dict({"input_ids": [tok(p_)["input_ids"][-24:] for p_ in prompts]})
    steps = args.warmup + args.steps
    out = f"/tmp/trl-bench-{os.getpid()}"
    cfg = PPOConfig(
        output_dir=out,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=4,
        response_length=32,
        total_episodes=16 * steps,
        kl_coef=0.05,
        learning_rate=1e-4,
        temperature=1.0,
        stop_token=None,
        missing_eos_penalty=None,
        num_sample_generations=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=args.bf16,
        local_rollout_forward_batch_size=16,
        seed=0,
        dataloader_num_workers=0,
    )

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    trainer = PPOTrainer(
        args=cfg,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        train_dataset=ds,
        value_model=value,
        callbacks=[Clock()],
    )
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][max(args.warmup - 1, 0) :]
    med = statistics.median(gaps) if gaps else float("nan")
    print(
        json.dumps(
            {
                "bench": "ppo_trl",
                "trl": trl.__version__,
                "precision": "bf16" if args.bf16 else "no",
                "batch": 16,
                "response_tokens": 32,
                "ppo_epochs": 4,
                "minibatches": 1,
                "steps_timed": len(gaps),
                "s_per_step_median": round(med, 3),
                "episodes_per_s": round(16 / med, 2),
                "s_per_step_mean": round(statistics.mean(gaps), 3) if gaps else None,
                "wall_s_incl_setup": round(wall, 1),
                "policy": args.policy,
                "reward": f"{args.reward} (re-tokenising adapter)",
                "command": " ".join([sys.executable] + sys.argv),
                "nproc": os.cpu_count(),
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
