"""PPO throughput of our trainer: episodes/s and s/step at batch 16, response 32, 4 PPO epochs, 1 minibatch.

    flock /tmp/rlhf-cpu.lock python benchmarks/bench_ppo.py [--steps 12] [--policy DIR] [--reward DIR]

Every layer trains unless ``--set num_layers_unfrozen=2`` (the default profile's SmolLM2 setting; TRL
trains every layer, so the side-by-side is like for like without it). Other ``--set`` keys change the
batch (``num_rollouts``, ``generation_batch_size``, ``minibatch_size``); the figures use the batch run.

Policy: ``--policy`` or the base policy (``$RLHF_ARTIFACTS/base_policy``) when it exists, else a randomly
initialised 4-layer d=256 GPT-2 with the project's 8k IMDB BPE (cached under
``$RLHF_ARTIFACTS/cache/tokenizers``) or GPT-2's tokenizer. Reward: ``--reward`` or the latest reward
model, else all-MiniLM-L6-v2 with an untrained 2-way head (the same cost as a trained one).
Prints one JSON line per precision with the figures, the command, ``nproc`` and the torch version.
The TRL 1.12 side-by-side is ``benchmarks/bench_ppo_trl.py`` (a throwaway venv).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common.runtime import configure_cpu, malloc_setting, wait_policy

os.environ.update(configure_cpu())  # as the PPO CLI does (before torch loads); TRL inherits it

import torch

from common.precision import resolve_mixed_precision, use_bf16


def random_policy():
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from common.paths import artifacts_root

    cached = sorted((artifacts_root() / "cache" / "tokenizers").glob("bpe8192-*/tokenizer.json"))
    if cached:
        tok = AutoTokenizer.from_pretrained(cached[-1].parent)
        source = f"random 4-layer d=256 GPT-2, 8k BPE ({cached[-1].parent.name})"
    else:
        from common.assets import gpt2_tokenizer

        tok = gpt2_tokenizer()
        source = "random 4-layer d=256 GPT-2, GPT-2 tokenizer (no cached 8k BPE)"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=256, n_layer=4, n_head=4, bos_token_id=eos, eos_token_id=eos
    )
    return (GPT2LMHeadModel(cfg), tok), source


def minilm_reward():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from common.assets import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2).eval()

    @torch.no_grad()
    def reward_fn(texts):
        enc = tok(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(True)):
            logits = model(**enc).logits.float()
        return logits[:, 1] - logits[:, 0]

    return reward_fn, "all-MiniLM-L6-v2 + untrained 2-way head (bf16 where the CPU has bf16 kernels)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="PPO steps timed (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--policy", default=None)
    p.add_argument("--reward", default=None)
    p.add_argument("--precision", nargs="+", default=["bf16", "no"], choices=["bf16", "no"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--trl", action="store_true", help="also run TRL 1.12's PPOTrainer (in --trl-python's venv) on the same setup"
    )
    p.add_argument("--trl-python", default="/tmp/trl-venv/bin/python")
    p.add_argument("--trl-only", action="store_true", help="only the TRL side")
    args = p.parse_args()

    from common.assets import offline_env
    from common.config import from_dict
    from common.paths import base_policy_dir, resolve_latest, reward_models_dir
    from rl_finetune.ppo import PPOConfig, train

    offline_env()
    import logging

    logging.basicConfig(level=logging.WARNING)
    policy_path = args.policy or (str(base_policy_dir()) if (base_policy_dir() / "config.json").is_file() else None)
    reward_path = args.reward or resolve_latest(reward_models_dir())
    if reward_path is not None:
        from reward_training import load_reward_fn

        reward_fn, reward_source = load_reward_fn(reward_path, kind="logit_diff"), f"reward model {reward_path}"
    else:
        reward_fn, reward_source = minilm_reward()
    from common.imdb import DataConfig, imdb_texts, make_prompts

    prompts = make_prompts(imdb_texts(DataConfig())["train"], 512, DataConfig())

    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    if policy_path:
        source = f"policy {policy_path}"
    else:  # save the random policy once, so both sides (and both precisions) start from the same weights
        (model, tok), source = random_policy()
        policy_path = str(tmp / "policy")
        model.save_pretrained(policy_path)
        tok.save_pretrained(policy_path)
    results = {}
    for precision in [] if args.trl_only else args.precision:
        from base_policy.loading import load_policy

        policy = load_policy(policy_path)
        raw = {
            "total_steps": args.warmup + args.steps,
            "num_rollouts": 16,
            "generation_batch_size": 16,
            "minibatch_size": 16,
            "ppo_epochs": 4,
            "gen_kwargs": {"max_new_tokens": 32, "stop_at_eos": False},
            "mixed_precision": precision,
            "eval_interval": 10**9,
            "checkpoint_interval": 0,
        }
        for item in args.overrides:
            k, v = item.split("=", 1)
            import yaml

            raw[k] = yaml.safe_load(v)
        cfg = from_dict(PPOConfig, raw)
        t0 = time.perf_counter()
        res = train(policy, reward_fn, prompts, cfg, progress=False)
        wall = time.perf_counter() - t0
        rows = [r for r in res.metrics if "step_time" in r][args.warmup :]
        med = {
            k: statistics.median(r[k] for r in rows)
            for k in ("step_time", "time/rollout", "time/reward", "time/forward", "time/optimise")
        }
        batch = cfg.num_rollouts
        results[precision] = batch / med["step_time"]
        print(
            json.dumps(
                {
                    "bench": "ppo_ours",
                    "precision": precision,
                    # what make_accelerator ran: fp32 on a CPU without bf16 kernels
                    "runs_in": resolve_mixed_precision(precision, "cuda" if torch.cuda.is_available() else "cpu"),
                    "batch": batch,
                    "response_tokens": cfg.gen_kwargs.max_new_tokens,
                    "ppo_epochs": cfg.ppo_epochs,
                    "minibatches": cfg.minibatches_per_epoch,
                    "num_layers_unfrozen": cfg.num_layers_unfrozen,
                    "lora_r": cfg.lora_r,
                    "shared_trunk": cfg.shared_trunk,
                    "steps_timed": len(rows),
                    "s_per_step_median": round(med["step_time"], 3),
                    "episodes_per_s": round(batch / med["step_time"], 2),
                    "s_per_step_mean": round(statistics.mean(r["step_time"] for r in rows), 3),
                    "breakdown_s": {k.split("/")[-1]: round(v, 3) for k, v in med.items() if k != "step_time"},
                    "wall_s_incl_setup": round(wall, 1),
                    "policy": source,
                    "reward": reward_source,
                    "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
                    "nproc": os.cpu_count(),
                    "omp_wait": wait_policy(),
                    "malloc": malloc_setting(),
                    "torch": torch.__version__,
                    "machine": platform.processor() or platform.machine(),
                }
            ),
            flush=True,
        )

    if args.trl or args.trl_only:
        import subprocess

        from common.assets import minilm_dir

        prompt_file = tmp / "prompts.txt"
        prompt_file.write_text("\n".join(prompts) + "\n")
        trl_reward = str(reward_path) if reward_path is not None else str(minilm_dir())
        trl_results = {}
        for precision in args.precision:
            cmd = [
                args.trl_python,
                str(Path(__file__).with_name("bench_ppo_trl.py")),
                "--policy",
                policy_path,
                "--reward",
                trl_reward,
                "--prompts",
                str(prompt_file),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
            ] + (["--bf16"] if precision == "bf16" else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(
                    json.dumps({"bench": "ppo_trl", "precision": precision, "error": proc.stderr[-1500:]}), flush=True
                )
                continue
            row = json.loads(lines[-1])
            trl_results[precision] = row["episodes_per_s"]
            print(json.dumps(row), flush=True)
        if results and trl_results:
            best_ours, best_trl = max(results.values()), max(trl_results.values())
            print(
                json.dumps(
                    {
                        "bench": "ppo_ratio",
                        "ours_best_episodes_per_s": round(best_ours, 2),
                        "trl_best_episodes_per_s": round(best_trl, 2),
                        "ratio_ours_over_trl": round(best_ours / best_trl, 2),
                        "per_precision": {
                            p_: round(results[p_] / trl_results[p_], 2) for p_ in results if p_ in trl_results
                        },
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
