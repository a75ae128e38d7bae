"""``run_compare``: every stage-3 learner from one labelled database and one start policy, scored alike.

1. Check the inputs before anything loads: the database has labels (good/bad judgements or pairs), each
   method's config is valid (RLOO with k = 1 is refused here), the report folder is free.
2. Build the :class:`Harness`: PPO's :class:`~rl_finetune.ppo.evaluate.Evaluator` on the start policy with a
   full frozen copy of it as the reference, so that any trained policy is scored on the same held-out prompts,
   with the same sampling seed, by the reward model, the gold judge, distinct-2, and the KL to the start.
3. Run each method within its budget: PPO, RLOO and GRPO through :func:`rl_finetune.ppo.stage.run_stage`
   (``max_minutes``), best-of-n through :func:`rl_finetune.ppo.best_of_n.evaluate_best_of_n` (one point per n,
   analytic KL), KTO and DPO through :mod:`rl_finetune.offline` (``time_budget_s``; skipped, with the reason,
   when that package or the pairs they need are missing).
4. Write the report folder atomically: ``report.md``, ``frontier.png``, ``gold_vs_time.png``, ``compare.json``
   and ``runs/<method>/`` (each RL run's metrics.jsonl, plots and TensorBoard events).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from rl_finetune.compare.config import CompareConfig
from rl_finetune.compare.results import (
    MethodResult,
    compare_json,
    gold_rate,
    plot_frontier,
    plot_gold_vs_time,
    report_markdown,
    verdict,
    winners,
)
from rl_finetune.ppo.config import PPOConfig

log = logging.getLogger(__name__)

ScoreFn = Callable[[list[str]], Sequence[float]]
RL_METHODS = ("ppo", "rloo", "grpo")
OFFLINE = ("kto", "dpo")


@dataclass
class Labels:
    """What the database holds for the learners: good/bad labelled completions and preference pairs."""

    examples: list[tuple[str, str, bool]]  # (prompt, completion, good), majority of each completion's labels
    n_judgements: int  # good/bad judgements behind the examples (what the reward model learnt from)
    pairs: list | None  # db.preference_pairs(engine); None when the database code has none yet
    pairs_note: str = ""


@dataclass
class CompareRun:
    folder: Path
    results: list[MethodResult]
    summary: dict


def read_labels(engine) -> Labels:
    """The database's labels, or a :class:`UserError` when it has none of either kind (nothing is written)."""
    import db
    from rl_finetune.offline.data import without_empty_examples, without_empty_pairs

    examples = db.labelled_dataset(engine)
    pairs, note = None, ""
    pair_fn = getattr(db, "preference_pairs", None)
    if pair_fn is None:
        note = "this version of the database code has no preference pairs (db.preference_pairs)"
    else:
        pairs = without_empty_pairs(list(pair_fn(engine)))  # an empty side has no token to compare
    if not examples and not pairs:
        raise UserError(
            "the database has no labels: no good/bad judgements and no preference pairs to compare learners on.",
            "label some completions first (make label, or python -m labeling_app simulate), then run the compare.",
        )
    kto = without_empty_examples([(e.prompt, e.completion, e.label >= 0.5) for e in examples])
    return Labels(kto, sum(e.n_labels for e in examples), pairs, note)


def method_configs(cfg: CompareConfig, ppo: PPOConfig) -> dict[str, PPOConfig]:
    """The PPO section for each RL method of ``cfg.methods``: its ``algorithm``, the compare seed and time
    budget, no checkpoints; each validated (``ppo.samples_per_prompt=1`` for RLOO fails here, before any work)."""
    out = {}
    for m in cfg.methods:
        if m in RL_METHODS:
            c = dataclasses.replace(
                ppo, algorithm=m, seed=cfg.seed, max_minutes=cfg.budget(m) / 60.0, checkpoint_interval=0
            )
            c.validate()
            out[m] = c
    return out


class Harness:
    """PPO's evaluation on the start policy, for any policy of the same architecture (module docstring, 2.)."""

    def __init__(self, policy: str, reward_fn: ScoreFn, eval_fns: dict, gold_fn: ScoreFn, eval_prompts, cfg):
        from base_policy.loading import load_policy
        from rl_finetune.ppo.trainer import PPOTrainer

        cfg = dataclasses.replace(cfg, algorithm="ppo", samples_per_prompt=None, kl_penalty="reward")
        cfg = dataclasses.replace(cfg, num_layers_unfrozen=-1, checkpoint_interval=0, lora_r=0)  # a full reference copy
        self.trainer = PPOTrainer(
            load_policy(policy), reward_fn, list(eval_prompts), cfg, eval_prompts=list(eval_prompts),
            gold_fn=gold_fn, eval_fns=eval_fns, progress=False,
        )  # fmt: skip
        self.tokenizer = self.trainer.tokenizer
        self.start_state = {k: v.detach().clone() for k, v in self.trainer.unwrapped.lm.state_dict().items()}

    def evaluate(self, model=None) -> tuple[dict, list[dict]]:
        """The eval row and samples of ``model`` (None: the start policy) on the held-out prompts."""
        lm = self.trainer.unwrapped.lm
        lm.load_state_dict(self.start_state if model is None else model.state_dict())
        lm.eval()
        return self.trainer.evaluate()

    def best_of_n(self, n: int) -> tuple[dict, list[dict]]:
        from rl_finetune.ppo.best_of_n import evaluate_best_of_n

        self.trainer.unwrapped.lm.load_state_dict(self.start_state)
        return evaluate_best_of_n(self.trainer.evaluator, self.trainer.unwrapped, n)

    def fluency(self, samples: list[dict]) -> float:
        """Mean NLL per token of the samples' responses under the frozen start policy."""
        from base_policy.fluency import continuation_nll

        if not samples:
            return math.nan
        prompts, responses = [s["prompt"] for s in samples], [s["response"] for s in samples]
        return continuation_nll(self.trainer.ref, self.tokenizer, prompts, responses)


# ------------------------------------------------------------------ the methods


def run_rl(method: str, cfg: PPOConfig, *, policy, reward, prompts, eval_prompts, gold_fn, work_dir):
    """PPO, RLOO or GRPO through the stage, within ``cfg.max_minutes``; nothing saved or registered."""
    from rl_finetune.ppo.stage import run_stage

    stage = run_stage(
        cfg, policy=policy, reward=reward, prompts=prompts, eval_prompts=eval_prompts, gold_fn=gold_fn,
        work_dir=work_dir, save=False, register_version=False, progress=False,
    )  # fmt: skip
    res = stage.result
    evals = [{"elapsed_s": 0.0, **r} for r in res.metrics if "eval/reward" in r]
    return MethodResult(method, evals=evals, samples=res.after, wall_s=float(res.summary["wall_time_s"]))


def run_best_of_n(harness: Harness, ns: list[int]) -> MethodResult:
    """One eval point per n: the reward model's best of n samples per prompt, KL = log n - (n - 1) / n, with
    the seconds it took, the gold positive rate's 95% interval and the fluency of the kept samples."""
    evals, samples, wall = [], [], 0.0
    for n in sorted(set(ns)):
        t0 = time.perf_counter()
        row, samples = harness.best_of_n(n)
        seconds = time.perf_counter() - t0
        wall = max(wall, seconds)
        _, lo, hi, _ = gold_rate(samples)
        extra = {"eval/gold_ci95_low": lo, "eval/gold_ci95_high": hi, "eval/fluency_nll": harness.fluency(samples)}
        evals.append({"step": n, "elapsed_s": seconds, **row, **extra})
    return MethodResult("best_of_n", evals=evals, samples=samples, wall_s=wall, analytic_kl=True)


def offline_learner(method: str):
    """(train function, config class) of KTO or DPO from :mod:`rl_finetune.offline`, or the reason it is missing."""
    try:
        from rl_finetune import offline
        from rl_finetune.offline import config as offline_config

        fn = getattr(offline, f"train_{method}")
        cls = getattr(offline_config, f"{method.upper()}Config")
    except (ImportError, AttributeError) as err:
        return None, f"rl_finetune.offline.train_{method} is not available ({type(err).__name__}: {err})"
    return (fn, cls), ""


def run_offline(method: str, harness: Harness, labels: Labels, *, policy, budget_s, profile, overrides, work_dir):
    """KTO (from the good/bad labels) or DPO (from the preference pairs) with ``harness`` as the eval_fn."""
    from common.config import load_config

    found, why = offline_learner(method)
    if found is None:
        return MethodResult(method, status="skipped", reason=why)
    if method == "kto":
        data = labels.examples
        if not data:
            return MethodResult(method, status="skipped", reason="no good/bad labels in the database")
    else:
        data = labels.pairs
        if not data:
            why = labels.pairs_note or "no preference pairs in the database (label pairs on the pairwise page)"
            return MethodResult(method, status="skipped", reason=why)
    train_fn, cfg_cls = found
    cfg = load_config(cfg_cls, method, profile, overrides)
    last: dict = {}

    def eval_fn(model, tokenizer, step: int) -> dict:
        row, last["samples"] = harness.evaluate(model)
        return row

    try:
        out = train_fn(Path(policy), data, work_dir / "policy", cfg, eval_fn=eval_fn, time_budget_s=budget_s)
    except UserError as err:  # e.g. KTO with labels of one class only: the other methods still run
        return MethodResult(method, status="skipped", reason=str(err))
    finally:
        shutil.rmtree(work_dir / "policy", ignore_errors=True)  # the compare keeps numbers, not policies
    evals = [dict(r) for r in out.get("evals", [])]
    return MethodResult(
        method, evals=evals, samples=last.get("samples", []), wall_s=float(out.get("wall_s", 0.0)),
        labels_used=out.get("labels_used"),
    )  # fmt: skip


# ------------------------------------------------------------------ the whole run


def shared_prompts(cfg: CompareConfig, ppo: PPOConfig, prompts, eval_prompts, data_cfg, profile):
    """(train prompts, the ``cfg.eval_prompts`` held-out prompts): given, or as the PPO stage takes them."""
    from rl_finetune.ppo.stage import stage_prompts

    if prompts is None or eval_prompts is None:
        if data_cfg is None:
            from common.config import load_config
            from common.imdb import DataConfig

            data_cfg = load_config(DataConfig, "data", profile)
        default_train, default_eval = stage_prompts(
            dataclasses.replace(ppo, num_eval_prompts=cfg.eval_prompts), data_cfg
        )
        prompts = default_train if prompts is None else prompts
        eval_prompts = default_eval if eval_prompts is None else eval_prompts
    return list(prompts), list(eval_prompts)[: cfg.eval_prompts]


def reward_folder(reward: str | Path | None) -> str | None:
    """``reward``, or the latest reward model's folder when None (None when there is none: loading it then
    says what to do), so that every method of one run scores with the same reward model."""
    from common.paths import resolve_latest, reward_models_dir

    if reward is not None:
        return str(reward)
    found = resolve_latest(reward_models_dir())
    return str(found) if found is not None else None


def make_harness(cfg: CompareConfig, ppo: PPOConfig, start: str, reward: str, gold_fn, eval_prompts) -> Harness:
    """The :class:`Harness` scoring with the reward model at ``reward`` (reward, P(good)) and the gold judge
    (mean score and positive rate), seeded with ``cfg.seed``."""
    from rl_finetune.ppo.stage import reward_fns

    base = dataclasses.replace(ppo, seed=cfg.seed)
    reward_fn, reward_evals = reward_fns(reward, base)
    return Harness(start, reward_fn, reward_evals, gold_fn, eval_prompts, base)


def best_of_n_rows(
    cfg: CompareConfig, ppo: PPOConfig, *, gold_fn, policy=None, reward=None, eval_prompts=None, data_cfg=None,
    profile=None,
) -> list[dict]:  # fmt: skip
    """``python -m rl_finetune best-of-n``: one row per n of ``cfg.best_of_n`` on the held-out prompts (no database)."""
    from base_policy.loading import resolve_policy

    cfg.validate()
    start, reward = str(resolve_policy(policy)), reward_folder(reward)
    _, eval_prompts = shared_prompts(cfg, ppo, [], eval_prompts, data_cfg, profile)
    harness = make_harness(cfg, ppo, start, reward, gold_fn, eval_prompts)
    return run_best_of_n(harness, cfg.best_of_n).evals


def run_compare(
    cfg: CompareConfig,
    ppo: PPOConfig,
    *,
    engine,
    gold_fn: ScoreFn,
    out: Path,
    policy: str | Path | None = None,
    reward: str | Path | None = None,
    prompts: list[str] | None = None,
    eval_prompts: list[str] | None = None,
    data_cfg=None,
    profile=None,
    overrides: dict[str, list[str]] | None = None,
) -> CompareRun:
    """Run ``cfg.methods`` from the start ``policy`` (None: the base policy) against the reward model ``reward``
    (None: the latest) on the labels in ``engine``, and write the report folder ``out`` (module docstring).
    ``prompts``/``eval_prompts``: given, or from the ``data`` section (``data_cfg``) as the PPO stage takes them;
    ``profile``: the profile the ``kto`` and ``dpo`` sections come from (None: ``RLHF_CONFIG``), with
    ``overrides[section]`` (``key=value`` strings) applied."""
    from base_policy.loading import resolve_policy
    from common.paths import atomic_dir

    # 1. inputs, checked before any model loads
    cfg.validate()
    configs = method_configs(cfg, ppo)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {str(out)!r} exists and is not an empty folder.", "give a new folder for the report.")
    labels = read_labels(engine)
    start, reward = str(resolve_policy(policy)), reward_folder(reward)
    prompts, eval_prompts = shared_prompts(cfg, ppo, prompts, eval_prompts, data_cfg, profile)

    # 2. the shared evaluation
    harness = make_harness(cfg, ppo, start, reward, gold_fn, eval_prompts)
    row, samples = harness.evaluate()
    results = [MethodResult("start", evals=[{"step": 0, "elapsed_s": 0.0, **row}], samples=samples)]

    # 3. the methods, then 4. the report, in one atomic folder
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="compare-") as scratch:
        for m in cfg.methods:
            t0 = time.perf_counter()
            log.info("compare: %s (budget %.0f s)", m, cfg.budget(m))
            if m in RL_METHODS:
                r = run_rl(
                    m, configs[m], policy=start, reward=reward, prompts=prompts, eval_prompts=eval_prompts,
                    gold_fn=gold_fn, work_dir=tmp / "runs" / m,
                )  # fmt: skip
                r.labels_used = labels.n_judgements
            elif m == "best_of_n":
                r = run_best_of_n(harness, cfg.best_of_n)
                r.labels_used = labels.n_judgements
            else:
                r = run_offline(
                    m, harness, labels, policy=start, budget_s=cfg.budget(m), profile=profile,
                    overrides=(overrides or {}).get(m, []), work_dir=Path(scratch),
                )  # fmt: skip
            r.budget_s = cfg.budget(m)
            if r.status == "ok":
                r.fluency_nll = harness.fluency(r.samples)
            log.info("compare: %s %s in %.0f s", m, r.status, time.perf_counter() - t0)
            results.append(r)
        results[0].fluency_nll = harness.fluency(results[0].samples)
        results[0].wall_s = 0.0
        meta = {
            "policy": start, "reward": reward, "n_eval_prompts": len(eval_prompts), "seconds": cfg.seconds,
            "seconds_per_method": dict(cfg.seconds_per_method), "seed": cfg.seed, "methods": list(cfg.methods),
            "labels": {"judgements": labels.n_judgements, "labelled_completions": len(labels.examples),
                       "pairs": None if labels.pairs is None else len(labels.pairs)},
            "compare_config": dataclasses.asdict(cfg), "ppo_config": dataclasses.asdict(ppo),
        }  # fmt: skip
        summary = compare_json(results, cfg.gold_target, meta)
        from common.paths import write_json

        write_json(tmp / "compare.json", summary)
        (tmp / "report.md").write_text(report_markdown(results, cfg.gold_target, meta), encoding="utf-8")
        plot_frontier(results, cfg.gold_target, tmp / "frontier.png")
        plot_gold_vs_time(results, cfg.gold_target, tmp / "gold_vs_time.png")
    log.info("%s", verdict(winners(results, cfg.gold_target)))
    return CompareRun(out, results, summary)
