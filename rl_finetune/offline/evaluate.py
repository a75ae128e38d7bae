"""The commands' eval: the held-out prompts sampled and scored as PPO's evals are (:class:`rl_finetune.ppo.evaluate.Evaluator`:
the same prompts and seed every time, pure sampling), with the gold judge and the sampled KL to the starting policy.

:class:`HeldOutEval` is an ``eval_fn(model, tokenizer, step)``. At its first call (step 0, before any update) it
takes the reference from the model as it is then: with frozen bottom blocks, a frozen copy of only the top blocks
and final norm on the shared trunk (:class:`rl_finetune.hydra.FrozenTrunk`); with every layer trained, a full
frozen copy. Its rows: ``eval/kl`` (nats per sample), ``eval/distinct_2`` and, with a gold judge, ``eval/gold``
(mean score) and ``eval/gold_positive`` (share above 0.5).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from base_policy.sampling import Bf16Weights
from common.precision import use_bf16
from rl_finetune.hydra import FrozenTrunk
from rl_finetune.offline.config import OfflineConfig
from rl_finetune.ppo import core
from rl_finetune.ppo.evaluate import Evaluator
from rl_finetune.ppo.report import GOLD_POSITIVE, samples_markdown
from rl_finetune.ppo.rollout import Rollout, Sampler, tokenize_prompts
from rl_finetune.value_head import transformer_blocks


@dataclass
class _Policy:
    lm: torch.nn.Module  # what Sampler and Evaluator expect: a wrapper with the causal LM as ``.lm``


def held_out_prompts(cfg: OfflineConfig, data_cfg) -> list[str]:
    """PPO's held-out eval prompts (:func:`rl_finetune.ppo.stage.stage_prompts`), ``cfg.num_eval_prompts`` of them:
    the gold judge scores every learner on the same prompts."""
    from rl_finetune.ppo.config import PPOConfig
    from rl_finetune.ppo.stage import stage_prompts

    _, held = stage_prompts(PPOConfig(num_eval_prompts=cfg.num_eval_prompts, num_train_prompts=1), data_cfg)
    return held


class HeldOutEval:
    def __init__(
        self, prompts: list[str], cfg: OfflineConfig, *, gold_fn: Callable | None = None, title: str = "samples"
    ):
        self.prompts, self.cfg, self.gold_fn, self.title = list(prompts), cfg, gold_fn, title
        self.evaluator: Evaluator | None = None
        self.trunk: FrozenTrunk | None = None
        self.ref: torch.nn.Module | None = None
        self.before: list[dict] = []
        self.after: list[dict] = []

    def _setup(self, model, tok) -> None:
        cfg = self.cfg
        device = next(model.parameters()).device
        bf16 = device.type == "cpu" and use_bf16(cfg.mixed_precision == "bf16")
        self.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        self.weights = Bf16Weights(enabled=bf16)
        n = cfg.num_layers_unfrozen
        if 0 < n < len(transformer_blocks(model)):
            self.trunk = FrozenTrunk(model, n).to(device)  # the reference's top blocks on the policy's frozen trunk
        else:
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        score = self.gold_fn or (lambda texts: np.zeros(len(texts)))
        sampler = Sampler(
            tok, score, cfg.gen_kwargs, cfg.eval_batch_size, tok.eos_token_id, pad, device, self.autocast, None,
            self.weights, None,
        )  # fmt: skip
        tokens = tokenize_prompts(tok, self.prompts, cfg.max_prompt_tokens)
        self.evaluator = Evaluator(sampler, self.prompts, tokens, cfg.seed + 424242)
        self.model = model

    def _response_logprobs(self, lm, rollout: Rollout, context) -> torch.Tensor:
        inputs = rollout.model_inputs()
        start = inputs.pop("start")
        with self.autocast(), context, self.weights(lm, trainable=True):
            h = lm.base_model(**inputs, use_cache=False).last_hidden_state[:, start:-1]
            logits = lm.get_output_embeddings()(h)
        return core.logprobs_from_logits(logits, rollout.response, self.cfg.gen_kwargs.temperature)

    def kl_per_sample(self, rollout: Rollout) -> torch.Tensor:
        """Sampled KL(policy || reference) summed over each response: (B,)."""
        if self.trunk is not None:
            with self.autocast():
                hidden = self.trunk.hidden(**rollout.model_inputs())
            logp = self._response_logprobs(self.model, rollout, self.trunk.replay(hidden))
            ref = self._response_logprobs(self.model, rollout, self.trunk.reference(hidden))
        else:
            logp = self._response_logprobs(self.model, rollout, contextlib.nullcontext())
            ref = self._response_logprobs(self.ref, rollout, contextlib.nullcontext())
        return ((logp - ref) * rollout.mask.float()).sum(-1)

    @torch.no_grad()
    def __call__(self, model, tok, step: int) -> dict[str, float]:
        if self.evaluator is None:
            self._setup(model, tok)
        row, samples = self.evaluator(_Policy(model), self.kl_per_sample)
        score = row.pop("eval/reward", None)  # the Sampler's score: the gold judge's, or zeros without one
        if self.gold_fn is not None:
            row["eval/gold"] = score
            row["eval/gold_positive"] = float(np.mean([s["reward"] > GOLD_POSITIVE for s in samples]))
        if not self.before:
            self.before = samples
        self.after = samples
        return row

    def write_report(self, folder: Path) -> None:
        """samples.md: the first and the last eval's samples for the same prompts."""
        if self.before and self.after:
            text = samples_markdown(self.before, self.after, self.cfg.num_samples_report, title=self.title)
            (Path(folder) / "samples.md").write_text(text, encoding="utf-8")
