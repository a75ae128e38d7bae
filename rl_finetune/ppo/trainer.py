"""The PPO loop: ``train(policy, reward_fn, prompts, config)``, in the order a student reads it.

One iteration ("step"):
  1. rollout: sample ``num_rollouts`` responses (KV cache), score prompt + response with ``reward_fn``
  2. one no-grad forward pass of the policy (log-probs and values together) and of the frozen reference
  3. scores scaled and clipped; per-token rewards = -kl_coef * KL, plus the score on the last token
  4. GAE advantages and returns; advantages whitened
  5. ``ppo_epochs`` passes of clipped policy + value loss over minibatches (early stop on approx-KL)
  6. the KL controller moves kl_coef
  7. metrics, eval, checkpoint

The policy sees the reward only as ``reward_fn(list[str]) -> scores``; the reward model may use any tokenizer.
Device placement, mixed precision and DDP go through ``accelerate``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common.config import to_dict
from common.errors import UserError
from rl_finetune.ppo import core
from rl_finetune.ppo.config import PPOConfig
from rl_finetune.ppo.kl import make_kl_controller
from rl_finetune.ppo.report import append_jsonl, plot_metrics, read_jsonl, samples_markdown
from rl_finetune.ppo.rollout import decode_responses, left_pad, position_ids, sample, tokenize_prompts
from rl_finetune.value_head import PolicyWithValueHead, freeze_bottom

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str]], Sequence[float]]
CHECKPOINT = "checkpoint"


@dataclass
class PPOResult:
    model: torch.nn.Module  # the trained causal LM (plain Hugging Face model)
    tokenizer: object
    policy: PolicyWithValueHead  # model + value head
    config: PPOConfig
    metrics: list[dict]
    before: list[dict] = field(default_factory=list)  # eval samples at step 0
    after: list[dict] = field(default_factory=list)  # eval samples at the end
    summary: dict = field(default_factory=dict)
    work_dir: Path | None = None
    start_policy: str | None = None


# ============================================================================ loading


def load_policy(path_or_name) -> tuple[torch.nn.Module, object]:
    """(model, tokenizer) from a folder or hub name; uses ``base_policy.loading.load_policy`` when present."""
    try:
        from base_policy.loading import load_policy as shared_loader
    except ImportError:
        shared_loader = None
    if shared_loader is not None:
        return shared_loader(path_or_name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(path_or_name))
        tok = AutoTokenizer.from_pretrained(str(path_or_name))
    except (OSError, ValueError) as err:
        raise UserError(
            f"policy {str(path_or_name)!r} does not load as a causal LM ({str(err).splitlines()[0]}).",
            "pass --policy DIR with a Hugging Face model folder (create the base policy with `make base-model`).",
        ) from None
    return model, tok


def _resolve_policy(policy, tokenizer):
    if isinstance(policy, (str, Path)):
        model, tok = load_policy(policy)
        return model, tokenizer or tok, str(policy)
    if isinstance(policy, tuple):
        model, tok = policy
        return model, tokenizer or tok, getattr(model, "name_or_path", None)
    if tokenizer is None:
        raise UserError("train() got a model without a tokenizer.", "pass tokenizer=... or policy=(model, tokenizer).")
    return policy, tokenizer, getattr(policy, "name_or_path", None)


# ============================================================================ small helpers


def check_scores(scores, n: int, where: str) -> torch.Tensor:
    """``reward_fn``'s output as a float tensor of ``n`` finite values, or a UserError naming the batch."""
    try:
        t = torch.as_tensor(
            np.asarray(scores.detach().float().cpu() if torch.is_tensor(scores) else scores, dtype=np.float64)
        )
    except (TypeError, ValueError) as err:
        raise UserError(
            f"reward_fn returned something that is not a list of numbers at {where} ({err}).",
            "make reward_fn(texts) return one float per text.",
        ) from None
    t = t.flatten().float()
    if t.numel() != n:
        raise UserError(
            f"reward_fn returned {t.numel()} scores for {n} texts at {where}.",
            "make reward_fn(texts) return exactly one score per text, in order.",
        )
    bad = (~torch.isfinite(t)).nonzero().flatten().tolist()
    if bad:
        raise UserError(
            f"reward_fn returned NaN/inf for {len(bad)} of {n} texts at {where} (first at index {bad[0]}).",
            "fix the reward function so it returns a finite score for every text.",
        )
    return t


def make_accelerator(mixed_precision: str):
    """An ``Accelerator`` for this run. ``cpu=True`` on a machine without CUDA lets
    ``torchrun --nproc_per_node N`` run N CPU processes (gloo DDP). In a single process, a second
    run with another precision resets accelerate's process-wide state instead of failing."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState

    cpu = not torch.cuda.is_available()
    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError:
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def _seeded(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63))
    return g


class _PromptStream:
    """Deterministic prompt order: step ``s`` takes prompts ``[s*n, (s+1)*n)`` of a sequence of seeded
    permutations, so a resumed run sees the same prompts it would have seen."""

    def __init__(self, tokens: list[list[int]], texts: list[str], seed: int):
        self.tokens, self.texts, self.seed = tokens, texts, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.texts))}
        return self._perms[epoch]

    def take(self, step: int, n: int) -> list[int]:
        out = []
        for k in range(step * n, (step + 1) * n):
            epoch, i = divmod(k, len(self.texts))
            out.append(int(self._perm(epoch)[i]))
        return out


@dataclass
class Rollout:
    query: torch.Tensor  # (B, P) left-padded prompt ids
    query_mask: torch.Tensor  # (B, P)
    response: torch.Tensor  # (B, R)
    mask: torch.Tensor  # (B, R) response tokens (through EOS)
    scores: torch.Tensor  # (B,) raw scores from reward_fn
    prompts: list[str]
    responses: list[str]

    def model_inputs(self, idx=None):
        q, qm, r = self.query, self.query_mask, self.response
        if idx is not None:
            q, qm, r = q[idx], qm[idx], r[idx]
        ids = torch.cat([q, r], dim=1)
        attn = torch.cat([qm, torch.ones_like(r)], dim=1)
        return {"input_ids": ids, "attention_mask": attn, "position_ids": position_ids(attn), "start": q.shape[1] - 1}


def _join_chunks(chunks: list[Rollout], pad_id: int) -> Rollout:
    if len(chunks) == 1:
        return chunks[0]
    P = max(c.query.shape[1] for c in chunks)

    def lpad(x, value):
        return torch.nn.functional.pad(x, (P - x.shape[1], 0), value=value)

    return Rollout(
        query=torch.cat([lpad(c.query, pad_id) for c in chunks]),
        query_mask=torch.cat([lpad(c.query_mask, 0) for c in chunks]),
        response=torch.cat([c.response for c in chunks]),
        mask=torch.cat([c.mask for c in chunks]),
        scores=torch.cat([c.scores for c in chunks]),
        prompts=sum((c.prompts for c in chunks), []),
        responses=sum((c.responses for c in chunks), []),
    )


# ============================================================================ the trainer


class PPOTrainer:
    def __init__(
        self,
        policy,
        reward_fn: RewardFn,
        prompts: list[str],
        config: PPOConfig,
        *,
        tokenizer=None,
        eval_prompts: list[str] | None = None,
        gold_fn: RewardFn | None = None,
        eval_fns: dict[str, RewardFn] | None = None,
        work_dir: Path | None = None,
        accelerator=None,
        progress: bool = True,
    ):
        config.validate()
        self.cfg = cfg = config
        if not prompts:
            raise UserError("train() got no prompts.", "pass a non-empty list of prompt strings.")
        self.accelerator = accelerator or make_accelerator(cfg.mixed_precision)
        acc = self.accelerator
        threads = cfg.num_threads or max(1, (os.cpu_count() or 1) // acc.num_processes)
        if acc.device.type == "cpu":
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.seed + acc.process_index)

        lm, tok, self.start_policy = _resolve_policy(policy, tokenizer)
        self.tokenizer = tok
        self.eos_id = tok.eos_token_id
        self.pad_id = (
            tok.pad_token_id if tok.pad_token_id is not None else (self.eos_id if self.eos_id is not None else 0)
        )
        lm.eval()  # dropout off, for the whole run
        self.ref = copy.deepcopy(lm).eval().to(acc.device)
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.n_trainable = freeze_bottom(lm, cfg.num_layers_unfrozen)
        policy_model = PolicyWithValueHead(lm)
        params = [p for p in policy_model.parameters() if p.requires_grad]
        head = [p for p in policy_model.v_head.parameters()]
        trunk = [p for p in params if all(p is not h for h in head)]
        opt = torch.optim.AdamW(
            [{"params": trunk}, {"params": head, "lr": cfg.value_head_lr or cfg.lr}],
            lr=cfg.lr,
            betas=tuple(cfg.adam_betas),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        self.model, self.opt = acc.prepare(policy_model, opt)
        self.params = params

        self.reward_fn, self.gold_fn, self.eval_fns = reward_fn, gold_fn, dict(eval_fns or {})
        self.kl_ctl = make_kl_controller(cfg.init_kl_coef, cfg.target, cfg.horizon)
        self.moments = core.RunningMoments()
        rank, world = acc.process_index, acc.num_processes
        my_prompts = list(prompts)[rank::world] or list(prompts)
        self.stream = _PromptStream(
            tokenize_prompts(tok, my_prompts, cfg.max_prompt_tokens), my_prompts, cfg.seed + rank
        )
        self.eval_prompts = list(eval_prompts or [])
        self.eval_tokens = tokenize_prompts(tok, self.eval_prompts, cfg.max_prompt_tokens) if self.eval_prompts else []
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.progress = progress
        self.step = 0
        self.elapsed = 0.0
        self.reward_time = 0.0
        self.before: list[dict] = []
        if acc.is_main_process:
            log.info(
                "PPO: %d prompts, %d eval prompts, %d trainable parameters, %d process(es), %d thread(s), %s",
                len(prompts),
                len(self.eval_prompts),
                self.n_trainable,
                world,
                threads,
                cfg.mixed_precision,
            )

    # ------------------------------------------------------------------ properties
    @property
    def unwrapped(self) -> PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    @property
    def metrics_path(self) -> Path | None:
        return self.work_dir / "metrics.jsonl" if self.work_dir else None

    @contextlib.contextmanager
    def sampling_threads(self):
        """Token-by-token sampling runs with ``sample_threads`` torch threads (on CPU)."""
        n = self.cfg.sample_threads
        if n is None or self.accelerator.device.type != "cpu" or n == torch.get_num_threads():
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # ------------------------------------------------------------------ 1. rollout
    @torch.no_grad()
    def rollout(self, step: int) -> Rollout:
        cfg, acc, dev = self.cfg, self.accelerator, self.accelerator.device
        gen = _seeded(cfg.seed * 1_000_003 + step * 7919 + acc.process_index)
        idx = self.stream.take(step, cfg.num_rollouts)
        self.reward_time = 0.0
        chunks = []
        for c, start in enumerate(range(0, len(idx), cfg.chunk_size)):
            part = idx[start : start + cfg.chunk_size]
            batch = left_pad([self.stream.tokens[i] for i in part], self.pad_id, [self.stream.texts[i] for i in part])
            batch.input_ids, batch.attention_mask = batch.input_ids.to(dev), batch.attention_mask.to(dev)
            with acc.autocast(), self.sampling_threads():
                response, mask = sample(self.unwrapped, batch, cfg.gen_kwargs, self.eos_id, self.pad_id, gen)
            texts = decode_responses(self.tokenizer, response, mask)
            t_reward = time.perf_counter()
            scores = check_scores(
                self.reward_fn([p + r for p, r in zip(batch.texts, texts)]),
                len(texts),
                f"step {step}, rollout chunk {c}",
            )
            self.reward_time += time.perf_counter() - t_reward
            chunks.append(
                Rollout(batch.input_ids, batch.attention_mask, response, mask, scores.to(dev), batch.texts, texts)
            )
        return _join_chunks(chunks, self.pad_id)

    # ------------------------------------------------------------------ 2. log-probs, values, reference
    @torch.no_grad()
    def score_tokens(self, ro: Rollout, policy_out=None) -> dict[str, torch.Tensor]:
        """Log-probs, values and entropy under the current policy (``policy_out``: an already computed
        (logits, values) of the same inputs), and log-probs under the reference."""
        T = self.cfg.gen_kwargs.temperature
        inputs = ro.model_inputs()
        with self.accelerator.autocast():
            if policy_out is not None:
                logits, values = (x.detach() for x in policy_out)
            else:
                logits, values = self.unwrapped(**inputs)
            start = inputs.pop("start")
            ref_h = self.ref.base_model(**inputs, use_cache=False).last_hidden_state[:, start:-1]
            ref_logits = self.ref.get_output_embeddings()(ref_h)
        out = {
            "logprobs": core.logprobs_from_logits(logits, ro.response, T),
            "ref_logprobs": core.logprobs_from_logits(ref_logits, ro.response, T),
            "values": values.float(),
            "entropy": core.entropy_from_logits(logits, T),
        }
        if self.cfg.kl_loss_coef:  # the reference's full next-token distributions, for the exact KL in the loss
            out["ref_logp_full"] = torch.log_softmax(ref_logits.float() / T, dim=-1).detach()
        return out

    # ------------------------------------------------------------------ one PPO iteration
    def train_step(self, step: int) -> dict:
        cfg, acc = self.cfg, self.accelerator
        t0 = time.perf_counter()
        # 1. rollout
        ro = self.rollout(step)
        t_rollout = time.perf_counter() - t0
        # 2. log-probs and values under the policy (before any update), log-probs under the reference.
        #    With one minibatch per epoch, the first update's forward pass *is* the old policy's:
        #    run it once, with gradients, and reuse it (one forward pass less per step).
        first = self.model(**ro.model_inputs()) if cfg.minibatches_per_epoch == 1 else None
        tk = self.score_tokens(ro, policy_out=first)
        t_forward = time.perf_counter() - t0 - t_rollout
        mask = ro.mask.float()
        # 3. scores -> scaled, clipped; per-token rewards with the KL penalty
        if cfg.scale_reward == "running":
            self.moments.update(acc.gather(ro.scores))
        scores = core.scale_and_clip_scores(
            ro.scores,
            cfg.cliprange_reward,
            std=self.moments.std if cfg.scale_reward == "running" else None,
            whiten_batch=cfg.scale_reward == "whiten",
        )
        kl_coef = self.kl_ctl.value
        rewards, kl = core.compute_rewards(scores, tk["logprobs"], tk["ref_logprobs"], mask, kl_coef, cfg.kl_estimator)
        # 4. advantages (GAE) and returns; whitened advantages
        advantages, returns = core.gae(tk["values"], rewards, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = core.whiten(advantages, mask)
        # 5. PPO epochs over minibatches
        t1 = time.perf_counter()
        stats = self.optimise(ro, tk, advantages, returns, mask, step, first=first)
        t_optimise = time.perf_counter() - t1
        # 6. KL controller, on the mean per-sample KL of all processes
        kl_per_sample = kl.sum(-1)
        kl_mean = acc.reduce(kl_per_sample.mean().detach(), reduction="mean").item()
        self.kl_ctl.update(kl_mean, cfg.num_rollouts * acc.num_processes)
        # 7. metrics (averaged over processes)
        all_scores = acc.gather(ro.scores)
        local = {
            "kl_k3": (core.kl_per_token(tk["logprobs"], tk["ref_logprobs"], "k3") * mask).sum(-1).mean().item(),
            "entropy": core.masked_mean(tk["entropy"], mask).item(),
            "response_len": mask.sum(-1).mean().item(),
            "value_mean": core.masked_mean(tk["values"], mask).item(),
            "explained_variance": core.explained_variance(tk["values"], returns, mask),
            **stats,
        }
        keys = sorted(local)
        reduced = acc.reduce(
            torch.tensor([local[k] for k in keys], dtype=torch.float64, device=acc.device), reduction="mean"
        )
        dt = time.perf_counter() - t0
        row = {
            "step": step + 1,
            "reward_mean": all_scores.mean().item(),
            "reward_std": all_scores.std().item() if all_scores.numel() > 1 else 0.0,
            "kl": kl_mean,
            "kl_coef": kl_coef,
            **{k: float(v) for k, v in zip(keys, reduced.tolist())},
            "samples_per_s": cfg.num_rollouts * acc.num_processes / dt,
            "step_time": dt,
            "time/rollout": t_rollout,  # sampling + reward_fn
            "time/reward": self.reward_time,
            "time/forward": t_forward,  # old log-probs, values, reference log-probs
            "time/optimise": t_optimise,  # ppo_epochs of forward + backward + step
        }
        return row

    def optimise(self, ro: Rollout, tk: dict, advantages, returns, mask, step: int, first=None) -> dict:
        cfg, acc = self.cfg, self.accelerator
        T = cfg.gen_kwargs.temperature
        B = ro.response.shape[0]
        g = _seeded(cfg.seed * 31 + step + 17 * acc.process_index)
        sums: dict[str, float] = {}
        n = 0
        stop = False
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=g) if cfg.minibatches_per_epoch > 1 else torch.arange(B)
            for mb in order.split(cfg.batch_size):
                mb = mb.to(acc.device)
                if first is not None:  # the forward pass of step 2, on the whole rollout (= this minibatch)
                    (logits, values), first = first, None
                else:
                    logits, values = self.model(**ro.model_inputs(mb))
                logp = core.logprobs_from_logits(logits, ro.response[mb], T)
                m = mask[mb]
                pg_loss, pg_stats = core.policy_loss(logp, tk["logprobs"][mb], advantages[mb], m, cfg.cliprange)
                vf_loss, vf_stats = core.value_loss(
                    values.float(), tk["values"][mb], returns[mb], m, cfg.cliprange_value
                )
                loss = pg_loss + cfg.vf_coef * vf_loss
                if cfg.ent_coef:
                    loss = loss - cfg.ent_coef * core.masked_mean(core.entropy_from_logits(logits, T), m)
                kl_loss = None
                if cfg.kl_loss_coef:
                    kl_loss = core.masked_mean(core.exact_kl(logits, tk["ref_logp_full"][mb], T), m)
                    loss = loss + cfg.kl_loss_coef * kl_loss
                acc.backward(loss)
                grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm) if cfg.max_grad_norm else None
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                cur = {
                    "loss/policy": pg_loss.item(),
                    "loss/value": vf_loss.item(),
                    "loss/total": loss.item(),
                    "clipfrac": pg_stats["clipfrac"].item(),
                    "approx_kl": pg_stats["approx_kl"].item(),
                    "vf_clipfrac": vf_stats["vf_clipfrac"].item(),
                }
                if kl_loss is not None:
                    cur["loss/kl"] = kl_loss.item()
                if grad_norm is not None:
                    cur["grad_norm"] = float(grad_norm)
                for k, v in cur.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                if cfg.target_kl_early_stop is not None:
                    akl = acc.reduce(pg_stats["approx_kl"].detach().to(acc.device), reduction="mean").item()
                    if akl > cfg.target_kl_early_stop:
                        stop = True
                        break
            if stop:
                break
        out = {k: v / max(n, 1) for k, v in sums.items()}
        out["ppo_updates"] = float(n)
        out["early_stopped"] = float(stop)
        return out

    # ------------------------------------------------------------------ eval
    @torch.no_grad()
    def evaluate(self) -> tuple[dict, list[dict]]:
        """Sample for the fixed eval prompts (same seed every time); score with reward_fn, gold_fn and
        eval_fns; KL per sample to the reference. Main process only."""
        if not self.eval_prompts:
            return {}, []
        cfg, acc, dev = self.cfg, self.accelerator, self.accelerator.device
        gen = _seeded(cfg.seed + 424242)
        samples: list[dict] = []
        kls = []
        for c, start in enumerate(range(0, len(self.eval_prompts), cfg.chunk_size)):
            toks = self.eval_tokens[start : start + cfg.chunk_size]
            texts_p = self.eval_prompts[start : start + cfg.chunk_size]
            batch = left_pad(toks, self.pad_id, texts_p)
            batch.input_ids, batch.attention_mask = batch.input_ids.to(dev), batch.attention_mask.to(dev)
            with acc.autocast(), self.sampling_threads():
                response, mask = sample(self.unwrapped, batch, cfg.gen_kwargs, self.eos_id, self.pad_id, gen)
            responses = decode_responses(self.tokenizer, response, mask)
            full = [p + r for p, r in zip(texts_p, responses)]
            ro = Rollout(
                batch.input_ids, batch.attention_mask, response, mask, torch.zeros(len(full)), texts_p, responses
            )
            tk = self.score_tokens(ro)
            kls += (((tk["logprobs"] - tk["ref_logprobs"]) * mask.float()).sum(-1)).tolist()
            extra = {"reward": check_scores(self.reward_fn(full), len(full), f"eval chunk {c}")}
            if self.gold_fn is not None:
                extra["gold"] = check_scores(self.gold_fn(full), len(full), f"eval chunk {c} (gold_fn)")
            for name, fn in self.eval_fns.items():
                extra[name] = check_scores(fn(full), len(full), f"eval chunk {c} ({name})")
            for i, (p, r) in enumerate(zip(texts_p, responses)):
                samples.append({"prompt": p, "response": r, **{k: float(v[i]) for k, v in extra.items()}})
        row = {"eval/kl": float(np.mean(kls)), "eval/distinct_2": core.distinct_n([s["response"] for s in samples])}
        for key in samples[0]:
            if key not in ("prompt", "response"):
                row[f"eval/{key}"] = float(np.mean([s[key] for s in samples]))
        return row, samples

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        if self.work_dir is None:
            return
        from common.paths import atomic_dir

        if self.accelerator.is_main_process:
            with atomic_dir(self.work_dir / CHECKPOINT) as tmp:
                torch.save(self.unwrapped.state_dict(), tmp / "policy.pt")
                torch.save(self.opt.state_dict(), tmp / "optimizer.pt")
                (tmp / "state.json").write_text(
                    json.dumps(
                        {
                            "step": self.step,
                            "elapsed": self.elapsed,
                            "kl_ctl": self.kl_ctl.state_dict(),
                            "moments": self.moments.state_dict(),
                            "before": self.before,
                            "config": to_dict(self.cfg),
                            "start_policy": self.start_policy,
                        }
                    )
                )
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self) -> bool:
        path = self.work_dir / CHECKPOINT if self.work_dir else None
        if path is None or not (path / "state.json").is_file():
            return False
        state = json.loads((path / "state.json").read_text())
        self.unwrapped.load_state_dict(torch.load(path / "policy.pt", map_location=self.accelerator.device))
        self.opt.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.accelerator.device))
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.moments.load_state_dict(state["moments"])
        self.before = state.get("before") or []
        if self.accelerator.is_main_process and self.metrics_path and self.metrics_path.exists():
            rows = [r for r in read_jsonl(self.metrics_path) if r["step"] <= self.step]
            self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        log.info("resumed from %s at step %d", path, self.step)
        return True

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False) -> PPOResult:
        cfg, acc = self.cfg, self.accelerator
        main = acc.is_main_process
        if self.work_dir is not None and main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        resumed = resume and self.load_checkpoint()
        if self.work_dir is not None and main and not resumed and self.metrics_path.exists():
            self.metrics_path.unlink()
        rows: list[dict] = read_jsonl(self.metrics_path) if (resumed and self.metrics_path) else []

        def record(row: dict) -> None:
            rows.append(row)
            if main and self.metrics_path is not None:
                append_jsonl(self.metrics_path, row)

        after: list[dict] = []
        if not resumed and main and self.eval_prompts:
            ev, self.before = self.evaluate()
            record({"step": 0, **ev})
        acc.wait_for_everyone()
        bar = None
        if self.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.total_steps, initial=self.step, desc="ppo", dynamic_ncols=True)
        deadline = time.monotonic() + cfg.max_minutes * 60 - self.elapsed if cfg.max_minutes else None
        last_eval_step = 0 if not resumed else -1
        while self.step < cfg.total_steps:
            t0 = time.perf_counter()
            row = self.train_step(self.step)
            self.step += 1
            self.elapsed += time.perf_counter() - t0
            row["elapsed_s"] = self.elapsed
            out_of_time = deadline is not None and time.monotonic() > deadline
            out_of_time = bool(
                acc.reduce(torch.tensor(float(out_of_time), device=acc.device), reduction="sum").item() > 0
            )
            last = self.step >= cfg.total_steps or out_of_time
            if main and self.eval_prompts and (self.step % cfg.eval_interval == 0 or last):
                t_eval = time.perf_counter()
                ev, after = self.evaluate()
                row.update(ev)
                row["eval_time"] = time.perf_counter() - t_eval
                last_eval_step = self.step
            record(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    reward=f"{row['reward_mean']:.3f}",
                    kl=f"{row['kl']:.2f}",
                    **({"eval": f"{row['eval/reward']:.3f}"} if "eval/reward" in row else {}),
                )
            if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0 and not last:
                self.save_checkpoint()
            if out_of_time:
                log.info("stopping after %d steps: max_minutes=%s reached", self.step, cfg.max_minutes)
                break
        if bar is not None:
            bar.close()
        if main and self.eval_prompts and not after and last_eval_step != self.step:
            ev, after = self.evaluate()
            rows[-1].update(ev) if rows else None
        acc.wait_for_everyone()
        summary = self.summarise(rows, after)
        if main and self.work_dir is not None:
            self.write_reports(rows, after, summary)
        return PPOResult(
            model=self.unwrapped.lm,
            tokenizer=self.tokenizer,
            policy=self.unwrapped,
            config=cfg,
            metrics=rows,
            before=self.before,
            after=after,
            summary=summary,
            work_dir=self.work_dir,
            start_policy=self.start_policy,
        )

    def summarise(self, rows: list[dict], after: list[dict]) -> dict:
        train_rows = [r for r in rows if "reward_mean" in r]
        evals = [r for r in rows if "eval/reward" in r]
        s = {
            "steps": self.step,
            "wall_time_s": self.elapsed,
            "samples_per_s": (float(np.mean([r["samples_per_s"] for r in train_rows])) if train_rows else None),
            "s_per_step": (float(np.mean([r["step_time"] for r in train_rows])) if train_rows else None),
            "processes": self.accelerator.num_processes,
            "start_policy": self.start_policy,
        }
        if evals:
            first, last = evals[0], evals[-1]
            for k in first:
                if k.startswith("eval/"):
                    s[f"{k}_before"], s[f"{k}_after"] = first[k], last.get(k)
        if train_rows:
            s["train_reward_first"], s["train_reward_last"] = (
                train_rows[0]["reward_mean"],
                train_rows[-1]["reward_mean"],
            )
        return s

    def write_reports(self, rows: list[dict], after: list[dict], summary: dict) -> None:
        from common.paths import write_json

        write_json(self.work_dir / "summary.json", summary)
        write_json(self.work_dir / "ppo_config.json", to_dict(self.cfg))
        try:
            plot_metrics(rows, self.work_dir)
        except Exception as err:  # a plot must never lose a trained policy
            log.warning("could not draw the plots: %s", err)
        if self.before and after:
            (self.work_dir / "samples.md").write_text(
                samples_markdown(self.before, after, self.cfg.num_samples_report), encoding="utf-8"
            )


def train(
    policy,
    reward_fn: RewardFn,
    prompts: list[str],
    config: PPOConfig | None = None,
    eval_prompts: list[str] | None = None,
    gold_fn: RewardFn | None = None,
    *,
    tokenizer=None,
    eval_fns: dict[str, RewardFn] | None = None,
    work_dir: Path | str | None = None,
    resume: bool = False,
    accelerator=None,
    progress: bool = True,
) -> PPOResult:
    """Fine-tune ``policy`` (a folder/hub name, a ``(model, tokenizer)`` pair, or a model with ``tokenizer=``)
    with PPO against ``reward_fn(list[str]) -> scores`` on ``prompts`` (trlx's ``trlx.train`` shape).

    ``eval_prompts`` are sampled and scored (with ``reward_fn``, ``gold_fn`` as ``gold``, and each of
    ``eval_fns``) at the start, every ``eval_interval`` steps and at the end. With ``work_dir``, the run
    writes ``metrics.jsonl``, plots, ``samples.md`` and resumable checkpoints there (``resume=True``
    continues from its checkpoint). Save the result with :func:`rl_finetune.ppo.save_policy`.
    """
    trainer = PPOTrainer(
        policy,
        reward_fn,
        prompts,
        config or PPOConfig(),
        tokenizer=tokenizer,
        eval_prompts=eval_prompts,
        gold_fn=gold_fn,
        eval_fns=eval_fns,
        work_dir=Path(work_dir) if work_dir is not None else None,
        accelerator=accelerator,
        progress=progress,
    )
    return trainer.run(resume=resume)


REPORT_FILES = ("metrics.jsonl", "summary.json", "ppo_config.json", "samples.md", "reward_kl.png", "reward_vs_kl.png")


def save_policy(result: PPOResult, final_dir: Path | str) -> Path:
    """Save the trained policy atomically in plain HF format (``from_pretrained(dir)`` loads a normal
    causal LM), the value head as ``value_head.safetensors``, and the run's reports beside it."""
    import shutil

    from common.paths import atomic_dir

    final_dir = Path(final_dir)
    with atomic_dir(final_dir) as tmp:
        result.model.save_pretrained(tmp)
        result.tokenizer.save_pretrained(tmp)
        result.policy.save_value_head(tmp)
        if result.work_dir is not None:
            for name in REPORT_FILES:
                src = Path(result.work_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
        if not (tmp / "ppo_config.json").exists():
            (tmp / "ppo_config.json").write_text(json.dumps(to_dict(result.config), indent=2))
        if not (tmp / "summary.json").exists():
            (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2, default=str))
    return final_dir
