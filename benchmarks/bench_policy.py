"""Base-policy throughput: pretraining tokens/s with both tokenizers, generation new tokens/s
(16 prompts x 48 tokens, KV cache), and peak memory. Prints one JSON line per figure.

    flock /tmp/rlhf-cpu.lock python benchmarks/bench_policy.py [--steps 20] [--policy DIR|smollm2]
    flock /tmp/rlhf-cpu.lock python benchmarks/bench_policy.py --policy smollm2 --generate-only --show 5

Run it under the CPU lock: the figures are only meaningful when nothing else trains.
The load average printed with each line shows how busy the machine was.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.runtime import configure_cpu, malloc_setting, wait_policy

os.environ.update(configure_cpu())  # as the CLIs do, before torch loads (common/runtime.py)

import numpy as np
import torch


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def emit(**fields) -> None:
    fields.update(
        command=" ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        nproc=os.cpu_count(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=platform.machine(),
        loadavg_1min=round(os.getloadavg()[0], 2),
        omp_wait=wait_policy(),
        malloc=malloc_setting(),
        peak_rss_mib=round(peak_rss_mib(), 1),
    )
    print(json.dumps(fields), flush=True)


def bench_training(cfg, vocab: int, steps: int, warmup: int = 3) -> dict:
    """Optimisation steps of the profile's model at ``vocab`` entries on random tokens (tokens/s
    depends on shapes only)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from base_policy.pretrain import autocast, make_optimizer, maybe_compile

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=vocab,
            n_positions=cfg.n_ctx,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    opt = make_optimizer(model, cfg)
    fwd = maybe_compile(model, cfg.compile)  # as pretraining does (the warm-up steps include compiling)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(1, vocab, size=(cfg.batch_size, cfg.block_size)))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with autocast(cfg):
            loss = fwd(input_ids=x, attention_mask=torch.ones_like(x), labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    per_step = float(np.median(times))
    return {
        "tokens_per_second": cfg.batch_size * cfg.block_size / per_step,
        "seconds_per_step": per_step,
        "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def bench_generation(
    model, tok, n_prompts: int = 16, new_tokens: int = 48, repeats: int = 3, bf16: bool = True
) -> tuple[dict, list[dict]]:
    """Sampling ``n_prompts`` IMDB openings in one batch (KV cache, top_k=0, under bf16 autocast
    when ``bf16``), three ways:

    - ``new_tokens_per_second``: exactly ``new_tokens`` per prompt through the project's sampler
      (``base_policy.sampling.sample_tokens`` with ``Bf16Weights.sampling``, what ``generate_completions`` and
      PPO use; for a Llama the lean decoder's packed weights are the only bf16 copy): pure throughput;
      ``autocast_only_new_tokens_per_second`` is the same without the bf16 weight copies;
    - ``hf_generate_new_tokens_per_second``: the same through ``model.generate``, for comparison;
    - ``completions_new_tokens_per_second``: ``generate_completions`` itself, which stops each text
      at EOS: what filling the labelling queue gets (kept tokens per second).

    Returns the figures and the completions of the last ``generate_completions`` call.
    """
    from base_policy.generate import GenerateConfig, context_length, encode_prompts, generate_completions, left_pad
    from common.imdb import DataConfig, imdb_texts, make_prompts

    prompts = make_prompts(imdb_texts(DataConfig(max_reviews=500))["test"], n_prompts, DataConfig(seed=1))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, mask = left_pad(encode_prompts(tok, prompts, context_length(model) - new_tokens), pad)
    cfg = GenerateConfig(max_new_tokens=new_tokens, prompts_per_batch=n_prompts, temperature=1.0, top_k=0, top_p=1.0)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    from base_policy.sampling import Bf16Weights, sample_tokens

    weights = Bf16Weights(enabled=bf16, static=True)  # what generate_completions and PPO's sampler do
    fixed, plain_autocast, hf, stopping, completions = [], [], [], [], []
    for i in range(repeats + 1):  # the first round warms up
        torch.manual_seed(i)
        t = time.perf_counter()
        with torch.no_grad(), amp, weights.sampling(model):
            out, _ = sample_tokens(model, ids, mask, max_new_tokens=new_tokens, stop_at_eos=False, pad_id=pad)
        assert out.shape[1] == new_tokens
        if i:
            fixed.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad(), amp:  # autocast casting the fp32 weights on every call, as before Bf16Weights
            sample_tokens(model, ids, mask, max_new_tokens=new_tokens, stop_at_eos=False, pad_id=pad)
        if i:
            plain_autocast.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad(), amp:
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, use_cache=True, pad_token_id=pad, eos_token_id=tok.eos_token_id,
            )  # fmt: skip
        if i:
            hf.append(time.perf_counter() - t)
        t = time.perf_counter()
        completions = generate_completions(model, tok, prompts, GenerateConfig(**{**cfg.__dict__, "seed": i}))
        if i:
            stopping.append((time.perf_counter() - t, sum(c["n_tokens"] for c in completions)))
    per_batch = float(np.median(fixed))
    seconds, tokens = map(float, np.median(np.array(stopping), axis=0))
    return {
        "new_tokens_per_second": n_prompts * new_tokens / per_batch,
        "seconds_per_batch": per_batch,
        "autocast_only_new_tokens_per_second": n_prompts * new_tokens / float(np.median(plain_autocast)),
        "hf_generate_new_tokens_per_second": n_prompts * new_tokens / float(np.median(hf)),
        "completions_new_tokens_per_second": tokens / seconds,
        "completions_seconds_per_batch": seconds,
        "completions_eos_fraction": sum(c["finish_reason"] == "eos" for c in completions) / len(completions),
        "prompts": n_prompts,
        "new_tokens": new_tokens,
        "prompt_tokens_max": int(ids.shape[1]),
        "bf16_autocast": bf16,
    }, completions


def main() -> None:
    from base_policy.pretrain import PretrainConfig
    from common.config import load_config

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=None, help="profile (default $RLHF_CONFIG or configs/default.yaml)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per tokenizer")
    p.add_argument(
        "--policy",
        default=None,
        help="policy for the generation figure (default: the base policy; "
        "a random model of the profile's size when there is none)",
    )
    p.add_argument("--generate-only", action="store_true", help="skip the pretraining figures")
    p.add_argument("--fp32", action="store_true", help="generate in fp32 (default: bf16 autocast)")
    p.add_argument("--show", type=int, default=0, help="also print this many sampled completions")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(PretrainConfig, "pretrain", args.config)
    shape = {
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "block_size": cfg.block_size,
        "batch_size": cfg.batch_size,
        "bf16": cfg.bf16,
        "compile": cfg.compile,
    }

    for name, vocab in () if args.generate_only else (("bpe8k", cfg.vocab_size), ("gpt2", 50257)):
        emit(
            figure="pretrain_tokens_per_second",
            tokenizer=name,
            vocab=vocab,
            **shape,
            **bench_training(cfg, vocab, args.steps),
        )

    from base_policy.loading import load_policy, resolve_policy

    spec = resolve_policy(args.policy)
    if Path(spec).is_dir() or args.policy:
        model, tok = load_policy(spec)
        which = spec
    else:
        from base_policy.pretrain import build_model
        from base_policy.tokenizer import train_bpe

        tok = train_bpe(["This movie was good. That film was bad."] * 10, vocab_size=300)
        model = build_model(cfg, tok)
        model.resize_token_embeddings(cfg.vocab_size)
        model.eval()
        which = f"random {cfg.n_layer}x{cfg.n_embd} (no base policy at {spec})"
    figures, completions = bench_generation(model, tok, bf16=not args.fp32)
    emit(
        figure="generate_new_tokens_per_second",
        policy=which,
        params_millions=round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        **figures,
    )
    for c in completions[: args.show]:
        print(json.dumps({"figure": "sample", "prompt": c["prompt"], "text": c["text"], "finish": c["finish_reason"]}))
    emit(figure="peak_memory_mib", value=round(peak_rss_mib(), 1))


if __name__ == "__main__":
    main()
