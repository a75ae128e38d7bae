"""The whole RLHF loop with simulated labellers, one step after the other (``make demo``).

    stage  step
           gold judge     TF-IDF + logistic regression on all IMDB reviews (cached)
    1      base policy    reuse $RLHF_ARTIFACTS/base_policy, or pretrain it
    1      generate       completions for fresh IMDB openings -> the labelling queue (db)
    2      label          simulated labellers judge them through the db API (gold + noise)
    3      reward model   IMDB seed + the labels -> $RLHF_ARTIFACTS/reward_models/<run>
    4      PPO            against the reward model, gold score logged beside it -> policies/<run>
           (rounds >= 2: back to generate with the new policy; labels accumulate)
           pairwise       (--pairwise) the base policy's two completions per prompt -> comparisons ->
                          simulated pair judgements -> DPO from the base policy; base vs final PPO
                          policy on held-out prompts, judged -> the tuned policy's win rate
           report         before/after samples, gold and reward scores, KL, labels, agreement,
                          reward-model accuracy vs TF-IDF, plots -> $RLHF_ARTIFACTS/demo/<run>/

Each step calls the stage's importable core with that stage's own section of the profile
(:class:`demo.config.Profile`, loaded once); nothing here writes SQL or trains by itself.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from common.config import to_dict
from common.errors import UserError
from common.fmt import fmt_number
from common.memory import current_rss_mb, peak_rss_mb, release_freed_memory
from common.paths import artifacts_root, base_policy_dir, new_run_id, write_json, write_latest
from demo.config import Profile

log = logging.getLogger(__name__)


# ============================================================================ progress


class Steps:
    """Numbered step headers with wall times: ``[3/7] label ...  done in 4.2 s``."""

    def __init__(self, total: int, echo=print):
        self.total, self.n, self.echo = total, 0, echo
        self.times: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}  # the process's peak RSS after each step (which step raised it)
        self.held_mb: dict[str, float] = {}  # RSS still held after the step (what the next step starts from)
        self.t0 = time.perf_counter()

    @contextmanager
    def step(self, name: str, what: str):
        self.n += 1
        self.echo(f"\n[{self.n}/{self.total}] {name}: {what}", flush=True)
        t = time.perf_counter()
        yield
        dt = time.perf_counter() - t
        self.times[name] = round(self.times.get(name, 0.0) + dt, 2)
        self.peak_mb[name] = round(peak_rss_mb())
        release_freed_memory()  # the step's models are garbage now: give their pages back before the next
        held = current_rss_mb()
        if held is not None:
            self.held_mb[name] = round(held)
        self.echo(
            f"[{self.n}/{self.total}] {name} done in {dt:.1f} s (total {time.perf_counter() - self.t0:.1f} s)",
            flush=True,
        )

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


# ============================================================================ small pure helpers


def positive_rate(scores) -> float:
    s = np.asarray(scores, dtype=float)
    return float((s > 0.5).mean()) if s.size else float("nan")


def summarize_scores(gold, rm) -> dict[str, float]:
    """Means and positive rates of gold and reward-model probabilities, and how often they agree."""
    gold, rm = np.asarray(gold, dtype=float), np.asarray(rm, dtype=float)
    return {
        "gold_mean": float(gold.mean()),
        "gold_positive_rate": positive_rate(gold),
        "rm_mean": float(rm.mean()),
        "rm_positive_rate": positive_rate(rm),
        "rm_gold_agreement": float(((gold > 0.5) == (rm > 0.5)).mean()),
        "n": int(gold.size),
    }


def overopt_series(
    rows: list[dict], proxy_key: str = "eval/p_good", gold_key: str = "eval/gold"
) -> dict[str, list[float]]:
    """(sqrt KL, proxy, gold) at every evaluation of a PPO run's metrics rows."""
    out = {"step": [], "sqrt_kl": [], "kl": [], "proxy": [], "gold": []}
    for r in rows:
        if "eval/kl" in r and proxy_key in r and gold_key in r:
            kl = float(r["eval/kl"])
            out["step"].append(int(r.get("step", len(out["step"]))))
            out["kl"].append(kl)
            out["sqrt_kl"].append(math.sqrt(max(kl, 0.0)))
            out["proxy"].append(float(r[proxy_key]))
            out["gold"].append(float(r[gold_key]))
    return out


def binned_means(x, *ys, n_bins: int = 12) -> tuple[list[float], ...]:
    """Means of ``x`` and each of ``ys`` in equal-width bins of ``x`` (empty bins dropped)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return ([],) * (1 + len(ys))
    edges = np.linspace(x.min(), x.max() + 1e-9, min(n_bins, x.size) + 1)
    idx = np.clip(np.digitize(x, edges) - 1, 0, len(edges) - 2)
    keep = [b for b in range(len(edges) - 1) if (idx == b).any()]
    out = [[float(x[idx == b].mean()) for b in keep]]
    for y in ys:
        y = np.asarray(y, dtype=float)
        out.append([float(y[idx == b].mean()) for b in keep])
    return tuple(out)


def finite_numbers(obj: Any) -> list[float]:
    """Every number in a nested JSON-like object (for checks)."""
    if isinstance(obj, bool) or obj is None:
        return []
    if isinstance(obj, (int, float)):
        return [float(obj)]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in finite_numbers(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in finite_numbers(v)]
    return []


# ============================================================================ the stages (thin adapters)


def ensure_base_policy(profile: Profile, engine, *, progress: bool) -> tuple[str, bool]:
    """The base policy folder (or hub name) and whether it was reused."""
    from base_policy.registry import ensure_registered

    cfg = profile.demo
    if cfg.base_policy != "auto":
        ensure_registered(engine, cfg.base_policy)
        return cfg.base_policy, True
    folder = base_policy_dir()
    if (folder / "config.json").is_file():
        ensure_registered(engine, folder)
        return str(folder), True
    from base_policy import pretrain

    pcfg = profile.pretrain
    if cfg.pretrain_minutes is not None:
        pcfg = dataclasses.replace(pcfg, max_minutes=cfg.pretrain_minutes)
        log.info(
            "no base policy in %s: pretraining one for the demo's %s minutes (`make base-model` trains the "
            "full-budget one; the demo reuses whichever exists)",
            folder,
            cfg.pretrain_minutes,
        )
    result = pretrain.train(pcfg, profile.data, progress=progress)
    path = pretrain.save_base_policy(result)
    pretrain.register_base_policy(path, result.metrics, engine=engine)
    return str(path), False


def prompts_for(profile: Profile, split: str, n: int, seed: int) -> list[str]:
    from common.imdb import imdb_texts, make_prompts

    prompts = make_prompts(imdb_texts(profile.data)[split], n, profile.data, seed=seed)
    if not prompts:
        raise UserError(
            f"no prompts could be cut from the IMDB {split} split.", "check the data section of the profile."
        )
    return prompts


def fluency(profile: Profile, base: str, before: list[dict], after: list[dict], **others: list[dict]) -> dict:
    """Mean NLL per token (nats) under the frozen start policy: of the before and after samples (and of each
    of ``others``, e.g. ``dpo=``, under its own key), and of real IMDB review text (the words that follow the
    first six of held-out reviews), for comparison."""
    from base_policy.fluency import continuation_nll, real_continuations
    from base_policy.loading import load_policy
    from common.imdb import imdb_texts

    model, tok = load_policy(base)

    def nll(rows: list[dict]) -> float:
        return continuation_nll(model, tok, [r["prompt"] for r in rows], [r["response"] for r in rows])

    real = real_continuations(imdb_texts(profile.data)["test"], max(len(after), 1), seed=profile.demo.seed)
    return {"before": nll(before), "after": nll(after), "real_imdb": continuation_nll(model, tok, *real),
            "n_real": len(real[0]), **{k: nll(rows) for k, rows in others.items()}}  # fmt: skip


def generate_for_labelling(profile: Profile, engine, policy: str, round_no: int) -> int:
    from base_policy.generate import fill_queue, release_cached_policies

    cfg = profile.demo
    gcfg = dataclasses.replace(profile.generate, seed=cfg.seed + round_no)
    n = cfg.completions_per_round
    prompts = prompts_for(profile, "train", math.ceil(n / gcfg.completions_per_prompt), seed=cfg.seed + 1000 * round_no)
    try:
        return fill_queue(engine, policy, n, gcfg, prompts=prompts)
    finally:
        release_cached_policies()  # the reward model and PPO come next: do not hold the generation model


def train_reward_model(profile: Profile, engine, run_id: str, *, progress: bool) -> tuple[Path, dict]:
    from reward_training.training import train as train_rm

    path = Path(train_rm(profile.reward, engine, data_cfg=profile.data, run_id=run_id, progress=progress))
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else {}
    return path, metrics


def reward_accuracy(metrics: dict) -> dict:
    """Reward model vs TF-IDF baseline on held-out human labels and IMDB snippets."""
    out: dict[str, Any] = {}
    for who in ("model", "tfidf", "seed_model"):
        for where, m in (metrics.get(who) or {}).items():
            if isinstance(m, dict):
                out[f"{who}/{where}"] = {k: m.get(k) for k in ("accuracy", "roc_auc", "ece", "n") if k in m}
    for versus in ("model_minus_tfidf", "model_minus_seed"):  # the seed: what the human phase added
        for where, d in (metrics.get(versus) or {}).items():
            if d:  # accuracy difference in points with its 95% paired bootstrap interval
                out[f"{versus}/{where}"] = {
                    "points": d["points"],
                    "ci95_low": d["ci95"][0],
                    "ci95_high": d["ci95"][1],
                    "n": d["n"],
                }
    out["counts"] = metrics.get("counts", {})
    return out


def demo_ppo_config(profile: Profile, **changes):
    """The ppo section with the demo's PPO budget (``demo.ppo_minutes``) and ``changes``."""
    if profile.demo.ppo_minutes is not None:
        changes = {"max_minutes": profile.demo.ppo_minutes, **changes}
    cfg = dataclasses.replace(profile.ppo, **changes)
    cfg.validate()
    return cfg


def run_ppo(
    profile: Profile,
    engine,
    *,
    start_policy: str,
    reward_dir: Path,
    gold_fn,
    train_prompts: list[str],
    eval_prompts: list[str],
    work_dir: Path,
    name: str,
    changes: dict | None = None,
    save: bool = True,
    progress: bool = True,
):
    """One PPO run (stage 4's :func:`rl_finetune.ppo.run_stage`); returns (PPOResult, saved policy folder or None).

    The result comes without its models (``model`` and ``policy`` are None): the demo reads the saved folder from
    here on, and holding the trained policy (with the lean decoder's packed copy of its weights) through the
    analysis and the report cost 0.8 GB of the demo's peak memory."""
    from rl_finetune.ppo import run_stage

    stage = run_stage(
        demo_ppo_config(profile, **(changes or {})),
        policy=start_policy,
        reward=reward_dir,
        prompts=train_prompts,
        eval_prompts=eval_prompts,
        gold_fn=gold_fn,
        run_id=name,
        work_dir=work_dir,
        save=save,
        engine=engine,
        progress=progress,
    )
    stage.result.model = stage.result.policy = None
    return stage.result, stage.folder


def label_ledger(rounds: list[dict]) -> list[dict]:
    """The labelling budget ledger: per round, the labels it cost and the gold it bought.

    ``gold_gain`` is the round's PPO mean gold score after minus before (``eval/gold_*``, on the same
    held-out prompts), and ``points_per_100`` that gain in percentage points per 100 of the round's recorded labels; the reward
    model's held-out accuracy (when measured) shows what the labels taught it. A round whose gain per
    100 labels falls towards zero says more labels of the same kind are no longer worth it."""
    rows, total = [], 0
    for x in rounds:
        n = int(x["labels"]["n_recorded"])
        total += n
        s = x["ppo"]["summary"]
        before, after = s.get("eval/gold_before"), s.get("eval/gold_after")
        gain = after - before if before is not None and after is not None else None
        rows.append(
            {
                "round": x["round"],
                "labels": n,
                "labels_total": total,
                "gold_before": before,
                "gold_after": after,
                "gold_gain": gain,
                "points_per_100": 100 * gain / n * 100 if gain is not None and n else None,
                "rm_accuracy": (x["reward_model"].get("model/human_heldout") or {}).get("accuracy"),
            }
        )
    return rows


#: The word sets the demo's analysis compares; those that are one token for the policy's tokenizer are used.
POSITIVE_WORDS = (" good", " great", " excellent", " wonderful", " best")
NEGATIVE_WORDS = (" bad", " awful", " terrible", " boring", " worst", " poor")


def single_token_words(tok, words) -> list[str]:
    """The words of ``words`` that ``tok`` encodes as exactly one token (the logit difference needs those)."""
    return [w for w in words if len(tok.encode(w, add_special_tokens=False)) == 1]


def analyse_policy(profile: Profile, base: str, tuned: str, reward_dir: Path, run_id: str) -> dict:
    """The ``analyse`` report of the final policy against the base policy, where the app's Analysis page
    finds it (``$RLHF_ARTIFACTS/analysis/demo-<run-id>``); returns its folder and headline.

    A small tokenizer (the tiny and smoke profiles' own BPE) may split every word of one set: the analysis
    is then skipped, with the reason in the report, rather than failing the demo at its end."""
    from base_policy.loading import load_policy
    from rl_finetune.analysis import analyse

    out = artifacts_root() / "analysis" / f"demo-{run_id}"
    base_model, tok = load_policy(base)
    positive, negative = single_token_words(tok, POSITIVE_WORDS), single_token_words(tok, NEGATIVE_WORDS)
    if not positive or not negative:
        words = POSITIVE_WORDS if not positive else NEGATIVE_WORDS
        reason = f"no {'positive' if not positive else 'negative'} word of {list(words)} is one token"
        log.warning("analysis skipped: %s for this policy's tokenizer", reason)
        return {"folder": None, "headline": [f"Skipped: {reason} for this policy's tokenizer."]}
    tuned_model, _ = load_policy(tuned)
    prompts = prompts_for(profile, "test", profile.demo.analysis_prompts, seed=profile.demo.seed + 17)
    res = analyse(
        base_model,
        tuned_model,
        tok,
        out,
        names=(base, tuned),
        prompts=prompts,
        positive=positive,
        negative=negative,
        samples=1,
        reward=reward_dir,
    )
    return {"folder": str(out), "headline": list(res["headline"])}


def rescore(samples: list[dict], gold_fn, prob_fn) -> dict:
    import db

    texts = [db.shown_text(s["prompt"], s["response"]) for s in samples]
    gold = np.asarray(gold_fn(texts), dtype=float)
    rm = prob_fn(texts)
    rm = np.asarray(rm.detach().float().cpu().numpy() if hasattr(rm, "detach") else rm, dtype=float)
    return {"gold": gold.tolist(), "rm": rm.tolist(), **summarize_scores(gold, rm)}


# ============================================================================ the pairwise round (--pairwise)


def store_completions(engine, policy: str, prompts: list[str], gcfg) -> tuple[int, list[dict]]:
    """Sample ``gcfg.completions_per_prompt`` completions of each prompt from ``policy`` and store them
    (``db.add_completions``); returns (the policy's version id, one row per completion with its ``id``)."""
    import db
    from base_policy.generate import generate_completions
    from base_policy.loading import load_policy
    from base_policy.registry import ensure_registered

    version = ensure_registered(engine, policy)
    model, tok = load_policy(policy)
    rows = generate_completions(model, tok, prompts, gcfg)
    new = [
        db.NewCompletion(
            prompt=r["prompt"],
            text=r["text"],
            model_version_id=version,
            gen_params={**r["gen_params"], "finish_reason": r["finish_reason"]},
        )
        for r in rows
    ]
    for r, cid in zip(rows, db.add_completions(engine, new)):
        r["id"] = cid
    return version, rows


def planned_comparisons(
    rows: list[dict], versions: dict[int, int], mode: str, compare: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """Which stored completions to compare (:func:`db.pairs.plan_pairs` on the completions this round wrote,
    not on everything in the database): ``rows`` as :func:`store_completions` returns them, ``versions``
    completion id -> model version id."""
    from db.pairs import plan_pairs

    key = {p: i for i, p in enumerate(dict.fromkeys(r["prompt"] for r in rows))}  # one group per prompt text
    return plan_pairs([(r["id"], key[r["prompt"]], versions[r["id"]]) for r in rows], mode=mode, versions=compare)


def pair_figures(rows: list[dict]) -> dict:
    """Agreement between labellers and position bias (share of 'left') over pair judgement rows
    (``db.pair_judgement_rows``), as the stats page shows them (:mod:`labeling_app.pair_stats`)."""
    from db.pairs import agreement_of, position_bias_of

    return {"agreement": agreement_of(rows), "position_bias": position_bias_of(rows)}


def judge_pairs(engine, profile: Profile, gold_fn, completion_ids: set[int], n: int, session_prefix: str, seed: int):
    """``n`` simulated pair judgements through the pair queue; returns (the simulation's summary, the
    judgement rows of the comparisons among ``completion_ids``)."""
    import db
    from labeling_app.simulate import simulate_comparisons

    scfg = dataclasses.replace(profile.demo.simulate, n_labels=n, seed=seed)
    res = simulate_comparisons(engine, scfg, gold_fn, session_prefix=session_prefix)
    rows = [r for r in db.pair_judgement_rows(engine) if r["a_id"] in completion_ids]
    return res.as_dict(), rows


def preference_pairs_of(engine, comparison_ids: set[int]) -> list:
    """DPO's training data: the pair judgements of these comparisons that chose a side, without pairs with an
    empty side or two equal texts (nothing to learn from; a tiny policy can write the same text twice)."""
    import db
    from rl_finetune.offline.data import without_empty_pairs

    pairs = [p for p in db.preference_pairs(engine) if p.comparison_id in comparison_ids]
    return [p for p in without_empty_pairs(pairs) if p.chosen != p.rejected]


def demo_dpo_config(profile: Profile):
    """The dpo section with the demo's DPO budget (``demo.pairs.dpo_minutes``)."""
    minutes = profile.demo.pairs.dpo_minutes
    cfg = dataclasses.replace(profile.dpo, max_minutes=minutes) if minutes is not None else profile.dpo
    cfg.validate()
    return cfg


def dpo_eval_config(profile: Profile, dpo_cfg):
    """The DPO run's held-out eval, sampled as PPO's evals are (PPO's ``gen_kwargs``, prompt cut, batch and
    seed), so its gold, KL and distinct-2 compare with PPO's: the same estimator of KL(policy || base)
    (:class:`rl_finetune.offline.evaluate.HeldOutEval`, summed over the response, as PPO's ``kl_per_sample``)."""
    ppo = profile.ppo
    return dataclasses.replace(
        dpo_cfg,
        gen_kwargs=ppo.gen_kwargs,
        max_prompt_tokens=ppo.max_prompt_tokens,
        eval_batch_size=ppo.generation_batch_size,
        seed=ppo.seed,
    )


def run_dpo(profile: Profile, engine, *, base: str, pairs: list, gold_fn, eval_prompts: list[str], name: str) -> dict:
    """DPO from ``base`` (the reference is the base policy) on ``pairs``, saved to ``policies/<name>`` and
    registered with the base policy as its parent, as ``python -m rl_finetune dpo`` does (``latest`` stays on
    the final PPO policy); the gold judge scores it on the demo's held-out eval prompts."""
    from common.paths import policies_dir
    from rl_finetune.offline import train_dpo
    from rl_finetune.offline.evaluate import HeldOutEval
    from rl_finetune.ppo.stage import register

    cfg = demo_dpo_config(profile)
    eval_fn = HeldOutEval(eval_prompts, dpo_eval_config(profile, cfg), gold_fn=gold_fn, title="DPO samples")
    out = policies_dir() / name
    result = train_dpo(base, pairs, out, cfg, eval_fn=eval_fn)
    version = register(out, result["start_policy"], result["summary"], engine)
    return {
        "policy_out": str(out),
        "version": version,
        "steps": result["steps"],
        "wall_s": round(result["wall_s"], 1),
        "labels_used": result["labels_used"],
        "summary": result["summary"],
        "before": eval_fn.before,  # the eval samples at step 0 (the base policy) and at the end
        "after": eval_fn.after,
    }


def pairwise_round(
    profile: Profile, engine, steps: Steps, *, run_id: str, base: str, tuned: str, gold, eval_prompts, echo
) -> dict:
    """The pairwise round's four steps: (1) the base policy's two completions of fresh training prompts and
    their comparisons, (2) simulated pair judgements, (3) DPO from them, (4) comparisons of the base and the
    ``tuned`` policy on held-out prompts, judged, with the tuned policy's win rate. Returns the report's
    ``pairwise`` part (the DPO samples still unscored: the report step rescores them)."""
    import db
    from db.pairs import win_rate_of

    cfg, pcfg = profile.demo, profile.demo.pairs
    overlap = cfg.simulate.overlap
    n_cmp = pcfg.comparisons(overlap)
    out: dict[str, Any] = {}
    with steps.step("pair completions", f"2 completions of {n_cmp} prompts from {Path(base).name}, paired"):
        prompts = prompts_for(profile, "train", n_cmp, seed=cfg.seed + 5003)
        gcfg = dataclasses.replace(profile.generate, completions_per_prompt=2, seed=cfg.seed + 5003)
        version, rows = store_completions(engine, base, prompts, gcfg)
        ids = {r["id"] for r in rows}
        pairs = planned_comparisons(rows, dict.fromkeys(ids, version), "same_policy")
        made = db.add_comparisons(engine, pairs, source="same_policy")
        out["comparisons"] = {"prompts": len(prompts), "completions": len(rows), "comparisons": made}
        echo(f"  {len(rows)} completions of {len(prompts)} prompts -> {made} comparisons")
    with steps.step(
        "pair labels", f"{pcfg.n_labels} pair judgements from {len(cfg.simulate.labelers)} simulated labellers"
    ):
        labels, judged = judge_pairs(
            engine, profile, gold.score, ids, pcfg.n_labels, f"{run_id}-pairs", cfg.simulate.seed + 101
        )
        out["comparisons"].update(labels=labels, **pair_figures(judged))
        echo(
            f"  {labels['n_recorded']} judgements {labels['choice_counts']}; agreement with gold "
            f"{labels['gold_agreement']}; share of 'left' {_fmt(labels['share_left'])}"
        )
    with steps.step("dpo", f"DPO from {Path(base).name} on the pair judgements (reference: the base policy)"):
        prefs = preference_pairs_of(engine, {r["comparison_id"] for r in judged})
        if len(prefs) < 2:
            raise UserError(
                f"the pairwise round's {labels['n_recorded']} pair judgements gave {len(prefs)} preference pair(s) "
                "(ties, skips and equal texts left out); DPO needs at least 2.",
                "raise demo.pairs.n_labels (e.g. --set pairs.n_labels=1000).",
            )
        out["dpo"] = run_dpo(
            profile, engine, base=base, pairs=prefs, gold_fn=gold.score, eval_prompts=eval_prompts,
            name=f"{run_id}-dpo",
        )  # fmt: skip
        s = out["dpo"]["summary"]
        echo(
            f"  {out['dpo']['steps']} steps on {len(prefs)} pairs; gold {_fmt(s.get('eval/gold_before'))} -> "
            f"{_fmt(s.get('eval/gold_after'))}, KL {_fmt(s.get('eval/kl_after'))} nats; saved {out['dpo']['policy_out']}"
        )
    with steps.step(
        "base vs tuned", f"{pcfg.n_versus_prompts} held-out prompts: {Path(base).name} against {Path(tuned).name}"
    ):
        prompts = prompts_for(profile, "test", pcfg.n_versus_prompts, seed=cfg.seed + 5011)
        gcfg = dataclasses.replace(profile.generate, completions_per_prompt=1, seed=cfg.seed + 5011)
        v_base, rows_base = store_completions(engine, base, prompts, gcfg)
        v_tuned, rows_tuned = store_completions(engine, tuned, prompts, gcfg)
        rows = rows_base + rows_tuned
        versions = {**{r["id"]: v_base for r in rows_base}, **{r["id"]: v_tuned for r in rows_tuned}}
        pairs = planned_comparisons(rows, versions, "versions", (v_base, v_tuned))
        made = db.add_comparisons(engine, pairs, source="versions")
        labels, judged = judge_pairs(
            engine, profile, gold.score, set(versions), made * overlap, f"{run_id}-versus", cfg.simulate.seed + 102
        )
        win = win_rate_of(judged, v_tuned, v_base)
        out["versus"] = {
            "base": base, "tuned": tuned, "base_version": v_base, "tuned_version": v_tuned,
            "prompts": len(prompts), "comparisons": made, "labels": labels, "win_rate": win, **pair_figures(judged),
        }  # fmt: skip
        echo("  " + win_rate_line(win))
    return out


def win_rate_line(win: dict) -> str:
    """The tuned policy's win rate over the base with its 95% interval, in one sentence."""
    if not win["n"]:
        return "no judged comparison of the two versions (all skipped)"
    lo, hi = win["interval"]
    return (
        f"the tuned policy won {win['wins']}, lost {win['losses']} and tied {win['ties']} of {win['n']} judged "
        f"comparisons: win rate {win['win_rate']:.3f} (95% CI {lo:.3f} to {hi:.3f}; a tie counts half)"
    )


def gold_row(name: str, scores: dict, *, kl, distinct_2, fluency_nll, wall_s, labels) -> dict:
    """One row of the pairwise round's table: the gold judge's positive rate on the held-out eval prompts with
    its Wilson 95% interval, and the policy's KL to the base, distinct-2, fluency, training time and labels."""
    from db.pairs import wilson_interval

    n = int(scores["n"])
    rate = scores["gold_positive_rate"]
    lo, hi = wilson_interval(rate * n, n)
    return {
        "policy": name, "gold_positive_rate": rate, "interval": [lo, hi], "gold_mean": scores["gold_mean"], "n": n,
        "kl": kl, "distinct_2": distinct_2, "fluency_nll": fluency_nll, "wall_s": wall_s, "labels": labels,
    }  # fmt: skip


def pairwise_table(report: dict) -> list[dict]:
    """Base policy, final PPO policy and DPO policy on the same held-out eval prompts (pure, from the report).

    PPO's KL is its last round's to that round's start policy (the base policy when there is one round)."""
    rounds, p = report["rounds"], report["pairwise"]
    first, last = rounds[0]["ppo"]["summary"], rounds[-1]["ppo"]["summary"]
    fl, d = report.get("fluency") or {}, p["dpo"]
    good_bad = sum(int(x["labels"]["n_recorded"]) for x in rounds)
    return [
        gold_row(
            "base policy", report["before"], kl=0.0, distinct_2=first.get("eval/distinct_2_before"),
            fluency_nll=fl.get("before"), wall_s=None, labels=None,
        ),
        gold_row(
            f"PPO ({len(rounds)} round{'s' if len(rounds) > 1 else ''})", report["after"], kl=last.get("eval/kl_after"),
            distinct_2=last.get("eval/distinct_2_after"), fluency_nll=fl.get("after"),
            wall_s=round(sum(float(x["ppo"]["summary"].get("wall_time_s") or 0) for x in rounds), 1),
            labels=f"{good_bad} good/bad",
        ),
        gold_row(
            "DPO", p["dpo_after"], kl=d["summary"].get("eval/kl_after"), distinct_2=d["summary"].get("eval/distinct_2_after"),
            fluency_nll=fl.get("dpo"), wall_s=d["wall_s"],
            labels=f"{p['comparisons']['labels']['n_recorded']} pair judgements ({d['labels_used']} pairs trained on)",
        ),
    ]  # fmt: skip


def pairwise_markdown(report: dict) -> list[str]:
    """The report's "Pairwise round" section."""
    p = report["pairwise"]
    c, v, d = p["comparisons"], p["versus"], p["dpo"]

    def agree(x: dict) -> str:
        a, b = x["agreement"], x["position_bias"]
        agreement = (
            f"{_fmt(a['agreement'])} (95% CI {_fmt(a['interval'][0])} to {_fmt(a['interval'][1])}, {a['n']} pairs of judgements)"
            if a["n"]
            else "n/a (no comparison judged twice)"
        )
        left = (
            f"{_fmt(b['share_left'])} (95% CI {_fmt(b['interval'][0])} to {_fmt(b['interval'][1])}, {b['n']} choices)"
            if b["n"]
            else "n/a"
        )
        return f"agreement between labellers {agreement}; share of 'left' (position bias; 0.5 = none) {left}"

    lab = c["labels"]
    lines = [
        "## Pairwise round",
        "",
        f"- comparisons: {c['comparisons']} of the base policy's two completions of {c['prompts']} training prompts; "
        f"{lab['n_recorded']} pair judgements {lab['choice_counts']}, per labeller {lab['per_labeler']}",
        f"- {agree(c)}; agreement with gold per labeller {lab['gold_agreement']}",
        f"- DPO from the base policy (reference: the base policy): {d['steps']} steps on {d['labels_used']} preference "
        f"pairs in {_fmt(d['wall_s'], 1)} s -> `{Path(d['policy_out']).name}` (policy version {d['version']})",
        "",
        "On the same held-out eval prompts, scored by the gold judge:",
        "",
        "| policy | gold: share judged good (95% CI) | gold mean | KL to the base (nats) | distinct-2 "
        "| fluency: NLL per token under the base | training seconds | labels used |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in p["table"]:
        lo, hi = r["interval"]
        lines.append(
            f"| {r['policy']} | {_fmt(r['gold_positive_rate'])} ({_fmt(lo)} to {_fmt(hi)}, n={r['n']}) "
            f"| {_fmt(r['gold_mean'])} | {_fmt(r['kl'], 2)} | {_fmt(r['distinct_2'])} | {_fmt(r['fluency_nll'], 2)} "
            f"| {_fmt(r['wall_s'], 1) if r['wall_s'] is not None else '–'} | {r['labels'] or '–'} |"
        )
    lines += [
        "",
        "The DPO eval samples the same prompts with PPO's sampling settings and measures KL as PPO's eval does "
        "(sampled KL(policy || base policy) summed over each response, mean over samples).",
    ]
    if len(report["rounds"]) > 1:
        lines.append("PPO's KL is its last round's, to that round's start policy (the round-1 policy).")
    vl = v["labels"]
    lines += [
        "",
        f"**Base vs tuned** ({v['comparisons']} held-out prompts, `{Path(v['base']).name}` against "
        f"`{Path(v['tuned']).name}`, the final PPO policy; {vl['n_recorded']} pair judgements): "
        f"{win_rate_line(v['win_rate'])}.",
        f"{agree(v)}; agreement with gold per labeller {vl['gold_agreement']}.",
        "",
    ]
    if p.get("samples"):
        lines += [
            "DPO samples (the first eval, from the base policy, and the last):",
            "",
            "| prompt | before | gold | after DPO | gold |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(s['prompt'])} | {_cell(s['before'])} | {_fmt(s['gold_before'], 2)} | {_cell(s['after'])} "
            f"| {_fmt(s['gold_after'], 2)} |"
            for s in p["samples"]
        ]
        lines.append("")
    return lines


# ============================================================================ the run


def fp32_notice(profile: Profile) -> str | None:
    """What to expect when the profile asks for bf16 and this CPU has no bf16 kernels (``common.precision``):
    every step runs in fp32, and the demo takes longer than the README's table says. None otherwise."""
    from common.precision import cpu_bf16_fast

    if profile.ppo.mixed_precision != "bf16" or cpu_bf16_fast():
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (
        f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 matmul kernels, so the profile's bf16 "
        "steps run in fp32: a demo from nothing took 24-32 minutes on 2 such cores, and PPO made 22-31 steps in "
        "its 8 minutes, where it made 53-111 with them (16-22 minutes; docs/demo.md). For more of PPO's learning "
        "here, give it more time: make demo ARGS='--set demo.ppo_minutes=20'"
    )


def run(profile: Profile, *, run_id: str | None = None, progress: bool = True, echo=print) -> Path:
    """Run the demo; returns the report folder ``$RLHF_ARTIFACTS/demo/<run-id>``."""
    import db
    from common.gold import GoldJudge
    from labeling_app.simulate import agreement, simulate

    cfg = profile.demo
    cfg.validate()
    run_id = run_id or new_run_id("demo-")
    out = artifacts_root() / "demo" / run_id
    out.mkdir(parents=True, exist_ok=True)
    n_steps = 2 + 4 * cfg.rounds + (1 if cfg.overoptimization else 0) + (1 if cfg.analysis else 0) + 1
    n_steps += 4 if cfg.pairs.enabled else 0  # pair completions, pair labels, dpo, base vs tuned
    steps = Steps(n_steps, echo)
    report: dict[str, Any] = {"run_id": run_id, "config": to_dict(cfg), "rounds": []}
    echo(f"RLHF demo {run_id}: {cfg.rounds} round(s) of {cfg.n_labels} simulated labels; report in {out}")
    if notice := fp32_notice(profile):
        echo(f"  {notice}")

    engine = db.connect()
    with steps.step("gold", "fit or load the gold judge (TF-IDF + logistic regression on IMDB)"):
        gold = GoldJudge.load_or_fit(cfg.gold)
        report["gold"] = {k: v for k, v in gold.info.items() if k != "config"}
        echo(f"  gold judge: {gold.info['n_train']} training texts")
    with steps.step("base policy", "reuse or pretrain the base policy"):
        base, reused = ensure_base_policy(profile, engine, progress=progress)
        report["base_policy"] = {"path": base, "reused": reused}
        echo(f"  {'reusing' if reused else 'pretrained'} {base}")

    eval_prompts = prompts_for(profile, "test", cfg.n_eval_prompts, seed=cfg.seed + 7)
    train_prompts = prompts_for(profile, "train", profile.ppo.num_train_prompts, seed=cfg.seed + 11)
    policy = base
    before_samples: list[dict] | None = None
    last = None
    for r in range(1, cfg.rounds + 1):
        rnd: dict[str, Any] = {"round": r, "policy_in": policy}
        with steps.step(
            f"generate r{r}", f"{cfg.completions_per_round} completions from {Path(policy).name} for labelling"
        ):
            rnd["completions"] = generate_for_labelling(profile, engine, policy, r)
            echo(f"  wrote {rnd['completions']} completions to the queue")
        with steps.step(
            f"label r{r}",
            f"{cfg.n_labels} judgements from {len(cfg.simulate.labelers)} simulated labellers "
            f"(overlap {cfg.simulate.overlap})",
        ):
            scfg = dataclasses.replace(cfg.simulate, n_labels=cfg.n_labels, seed=cfg.simulate.seed + r)
            res = simulate(engine, scfg, gold.score, progress=progress, session_prefix=f"{run_id}-r{r}")
            agree = agreement(engine)
            rnd["labels"] = {**res.as_dict(), "mean_kappa": agree["mean_kappa"], "pairs": agree["pairs"]}
            echo(
                f"  {res.n_recorded} labels {res.label_counts}; agreement with gold {res.gold_agreement}; "
                f"mean Cohen's kappa {_fmt(agree['mean_kappa'])}"
            )
        with steps.step(f"reward model r{r}", "IMDB seed + the simulated labels"):
            rm_dir, rm_metrics = train_reward_model(profile, engine, f"{run_id}-r{r}", progress=progress)
            rnd["reward_model"] = {"path": str(rm_dir), **reward_accuracy(rm_metrics)}
            echo(f"  {rm_dir}: " + _acc_line(rnd["reward_model"]))
        with steps.step(f"ppo r{r}", f"PPO from {Path(policy).name} against the reward model (gold logged beside it)"):
            result, folder = run_ppo(
                profile,
                engine,
                start_policy=policy,
                reward_dir=rm_dir,
                gold_fn=gold.score,
                train_prompts=train_prompts,
                eval_prompts=eval_prompts,
                work_dir=out / f"ppo-r{r}",
                name=f"{run_id}-r{r}",
                progress=progress,
            )
            rnd["ppo"] = {"policy_out": str(folder), "summary": result.summary, "curve": overopt_series(result.metrics)}
            if before_samples is None:
                before_samples = result.before
            last = (result, rm_dir)
            s = result.summary
            echo(
                f"  gold {_fmt(s.get('eval/gold_before'))} -> {_fmt(s.get('eval/gold_after'))}, "
                f"reward-model P(good) {_fmt(s.get('eval/p_good_before'))} -> {_fmt(s.get('eval/p_good_after'))}, "
                f"KL {_fmt(s.get('eval/kl_after'))} nats; saved {folder}"
            )
        policy = str(folder)
        report["rounds"].append(rnd)

    result, rm_dir = last
    report["final_policy"] = policy
    report["final_reward_model"] = str(rm_dir)
    if cfg.overoptimization:
        with steps.step(
            "over-optimisation", f"PPO with KL coefficient {cfg.overopt_kl_coef} against the same reward model"
        ):
            report["overoptimization"] = overoptimization_run(
                profile,
                engine,
                out,
                report["rounds"][-1]["policy_in"],
                rm_dir,
                gold.score,
                train_prompts,
                eval_prompts,
                progress,
            )

    if cfg.pairs.enabled:
        report["pairwise"] = pairwise_round(
            profile, engine, steps, run_id=run_id, base=base, tuned=policy, gold=gold, eval_prompts=eval_prompts,
            echo=echo,
        )  # fmt: skip

    if cfg.analysis:
        with steps.step("analysis", f"what PPO changed inside {Path(policy).name} (python -m rl_finetune analyse)"):
            report["analysis"] = analyse_policy(profile, base, policy, rm_dir, run_id)
            echo("  " + "\n  ".join(report["analysis"]["headline"]))

    with steps.step("report", "score before/after samples, write report.md, report.json and plots"):
        from reward_training import load_reward_fn

        prob_fn = load_reward_fn(rm_dir, kind="prob")
        after_samples = result.after
        report["before"] = rescore(before_samples, gold.score, prob_fn)
        report["after"] = rescore(after_samples, gold.score, prob_fn)
        pw = report.get("pairwise")
        if pw is None:
            report["fluency"] = fluency(profile, base, before_samples, after_samples)
        else:  # the DPO eval's samples (the same eval prompts), scored as PPO's are
            dpo_before, dpo_after = pw["dpo"].pop("before"), pw["dpo"].pop("after")
            report["fluency"] = fluency(profile, base, before_samples, after_samples, dpo=dpo_after)
            pw["dpo_before"] = rescore(dpo_before, gold.score, prob_fn)
            pw["dpo_after"] = rescore(dpo_after, gold.score, prob_fn)
            pw["table"] = pairwise_table(report)
            pw["samples"] = [
                {"prompt": b["prompt"], "before": b["response"], "after": a["response"], "gold_before": gb,
                 "gold_after": ga}
                for b, a, gb, ga in zip(dpo_before, dpo_after, pw["dpo_before"]["gold"], pw["dpo_after"]["gold"])
            ][: cfg.pairs.n_report_samples]  # fmt: skip
        report["kl"] = {f"round {x['round']}": x["ppo"]["summary"].get("eval/kl_after") for x in report["rounds"]}
        report["ledger"] = label_ledger(report["rounds"])
        report["samples"] = [
            {
                "prompt": b["prompt"],
                "before": b["response"],
                "after": a["response"],
                "gold_before": gb,
                "gold_after": ga,
                "rm_before": rb,
                "rm_after": ra,
            }
            for b, a, gb, ga, rb, ra in zip(
                before_samples,
                after_samples,
                report["before"]["gold"],
                report["after"]["gold"],
                report["before"]["rm"],
                report["after"]["rm"],
            )
        ][: cfg.n_report_samples]
        report["timings_s"] = {**steps.times}
        report["peak_rss_mb"] = {**steps.peak_mb, "report": round(peak_rss_mb())}
        report["held_rss_mb"] = {**steps.held_mb}
        report["total_seconds"] = round(steps.elapsed, 1)
        report["plots"] = write_plots(report, out)
        write_json(out / "report.json", report)
        md = report_markdown(report)
        (out / "report.md").write_text(md, encoding="utf-8")
        write_latest(out.parent, run_id)
    echo("\n" + md)
    echo(f"report: {out / 'report.md'} (total {steps.elapsed:.1f} s)")
    return out


def overoptimization_run(
    profile: Profile,
    engine,
    out: Path,
    start_policy: str,
    rm_dir: Path,
    gold_fn,
    train_prompts,
    eval_prompts,
    progress: bool,
) -> dict:
    """A PPO run with (almost) no KL leash: proxy reward keeps rising while gold stalls or falls."""
    cfg = profile.demo
    steps = cfg.overopt_steps or profile.ppo.total_steps
    changes = {
        "init_kl_coef": cfg.overopt_kl_coef,
        "kl_target": None,
        "kl_horizon": None,
        "total_steps": steps,
        "eval_interval": max(1, min(profile.ppo.eval_interval, steps // 8 or 1)),
    }
    result, _ = run_ppo(
        profile,
        engine,
        start_policy=start_policy,
        reward_dir=rm_dir,
        gold_fn=gold_fn,
        train_prompts=train_prompts,
        eval_prompts=eval_prompts,
        work_dir=out / "ppo-overopt",
        name="overopt",
        changes=changes,
        save=False,
        progress=progress,
    )
    return {
        "kl_coef": cfg.overopt_kl_coef,
        "steps": steps,
        "summary": result.summary,
        "curve": overopt_series(result.metrics),
    }


# ============================================================================ report


def _fmt(x, digits: int = 3) -> str:
    return fmt_number(x, digits, missing="n/a")


def _acc_line(rm: dict) -> str:
    from reward_training.evaluate import fmt_difference

    parts = []
    for where in ("human_heldout", "imdb_snippets"):
        m, t = rm.get(f"model/{where}", {}), rm.get(f"tfidf/{where}", {})
        if m:
            line = (
                f"{where}: accuracy {_fmt(m.get('accuracy'))} (TF-IDF {_fmt(t.get('accuracy'))}, n={m.get('n', '?')})"
            )
            for versus, label in (
                ("model_minus_tfidf", "model - TF-IDF"),
                ("model_minus_seed", "human phase (model - seed)"),
            ):
                d = rm.get(f"{versus}/{where}")
                if d:
                    line += f", {label} " + fmt_difference(
                        {"points": d["points"], "ci95": [d["ci95_low"], d["ci95_high"]], "n": d["n"]}
                    )
            parts.append(line)
    return "; ".join(parts) or "no evaluation metrics"


def write_plots(report: dict, out: Path) -> list[str]:
    # Figure objects without pyplot: no global backend switch (a notebook importing this keeps its own)
    from matplotlib.figure import Figure

    files = []
    # 1. gold and reward-model scores before vs after
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 2)
    bins = np.linspace(0, 1, 21)
    for ax, key, title in ((axes[0], "gold", "gold judge P(positive)"), (axes[1], "rm", "reward model P(good)")):
        ax.hist(report["before"][key], bins=bins, alpha=0.6, label="before (base policy)")
        ax.hist(report["after"][key], bins=bins, alpha=0.6, label="after PPO")
        ax.set_title(title)
        ax.set_xlabel("score")
        ax.legend()
    axes[0].set_ylabel("eval samples")
    fig.tight_layout()
    fig.savefig(out / "scores_before_after.png", dpi=110)
    files.append("scores_before_after.png")

    # 2. proxy reward and gold score against sqrt(KL) (Gao et al. 2022)
    curves = [(f"round {x['round']} (default KL)", x["ppo"]["curve"]) for x in report["rounds"]]
    if report.get("overoptimization"):
        curves.append((f"KL coef {report['overoptimization']['kl_coef']}", report["overoptimization"]["curve"]))
    if any(c["sqrt_kl"] for _, c in curves):
        fig = Figure(figsize=(6.5, 4.2))
        ax = fig.subplots()
        for i, (name, c) in enumerate(curves):
            color = f"C{i}"
            # every evaluation as a faint point, and the mean in bins of sqrt(KL) as a line (KL is not monotone in steps)
            ax.scatter(c["sqrt_kl"], c["proxy"], color=color, s=8, alpha=0.3, marker="o")
            ax.scatter(c["sqrt_kl"], c["gold"], color=color, s=8, alpha=0.3, marker="s")
            x, proxy, gold = binned_means(c["sqrt_kl"], c["proxy"], c["gold"])
            ax.plot(x, proxy, "-o", color=color, ms=4, label=f"proxy (reward model), {name}")
            ax.plot(x, gold, "--s", color=color, ms=4, label=f"gold judge, {name}")
        ax.set_xlabel("sqrt(KL(policy || start policy)) per sample, sqrt(nats)")
        ax.set_ylabel("mean P(positive) on eval prompts")
        ax.set_title("Reward model over-optimisation")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "overoptimization.png", dpi=110)
        files.append("overoptimization.png")
    return files


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def report_markdown(report: dict) -> str:
    b, a = report["before"], report["after"]
    lines = [
        f"# RLHF demo {report['run_id']}",
        "",
        f"Base policy: `{report['base_policy']['path']}` ({'reused' if report['base_policy']['reused'] else 'pretrained in this run'}); "
        f"final policy: `{report['final_policy']}`; total time {report['total_seconds']} s.",
        "",
        "## Before and after (the same held-out prompts)",
        "",
        "| | before (base policy) | after PPO |",
        "|---|---|---|",
        f"| gold judge: mean score (P(positive) × on-topic × fluency) | {_fmt(b['gold_mean'])} | {_fmt(a['gold_mean'])} |",
        f"| gold judge: share judged good (score > 0.5) | {_fmt(b['gold_positive_rate'])} | {_fmt(a['gold_positive_rate'])} |",
        f"| reward model: mean P(good) | {_fmt(b['rm_mean'])} | {_fmt(a['rm_mean'])} |",
        f"| reward model agrees with gold | {_fmt(b['rm_gold_agreement'])} | {_fmt(a['rm_gold_agreement'])} |",
        f"| samples | {b['n']} | {a['n']} |",
    ]
    if report.get("fluency"):
        f = report["fluency"]
        lines.append(
            f"| fluency: NLL per token under the start policy (real IMDB text: {_fmt(f['real_imdb'], 2)}) "
            f"| {_fmt(f['before'], 2)} | {_fmt(f['after'], 2)} |"
        )
    lines.append("")
    for x in report["rounds"]:
        s, lab, rm = x["ppo"]["summary"], x["labels"], x["reward_model"]
        lines += [
            f"## Round {x['round']}",
            "",
            f"- labelling: {x['completions']} completions from `{Path(x['policy_in']).name}`, {lab['n_recorded']} judgements "
            f"{lab['label_counts']}, per labeller {lab['per_labeler']}",
            f"- agreement: mean Cohen's kappa {_fmt(lab['mean_kappa'])}; agreement with gold per labeller {lab['gold_agreement']}",
            f"- reward model `{Path(rm['path']).name}`: {_acc_line(rm)}",
            f"- PPO: {s.get('steps')} steps in {_fmt(s.get('wall_time_s'), 1)} s; eval reward-model P(good) "
            f"{_fmt(s.get('eval/p_good_before'))} -> {_fmt(s.get('eval/p_good_after'))}, gold {_fmt(s.get('eval/gold_before'))} -> "
            f"{_fmt(s.get('eval/gold_after'))}, KL to the start policy {_fmt(s.get('eval/kl_after'))} nats, "
            f"distinct-2 {_fmt(s.get('eval/distinct_2_before'))} -> {_fmt(s.get('eval/distinct_2_after'))}",
            "",
        ]
    if report.get("analysis"):
        a = report["analysis"]
        lines += ["## What PPO changed inside the policy", "", *[f"- {h}" for h in a["headline"]], ""]
        if a.get("folder"):
            lines += [
                f"The full report (logit lens, attribution, patching, weight change): `{a['folder']}/report.md`.",
                "",
            ]
    if report.get("ledger"):
        lines += [
            "## Labels and what they bought (the budget ledger)",
            "",
            "| round | labels | labels so far | reward model held-out accuracy | gold before PPO | gold after | "
            "gold gain per 100 labels (points) |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['round']} | {r['labels']} | {r['labels_total']} | {_fmt(r['rm_accuracy'])} | {_fmt(r['gold_before'])} "
            f"| {_fmt(r['gold_after'])} | {_fmt(r['points_per_100'], 2)} |"
            for r in report["ledger"]
        ]
        lines += [
            "",
            "Gold is the gold judge's mean score (0-1, as PPO's evaluation logs it) on the held-out prompts; each round's gain is its PPO run's "
            "after minus before. When the gain per 100 labels falls towards zero, more labels of this kind "
            "no longer pay.",
            "",
        ]
    if report.get("pairwise"):
        lines += pairwise_markdown(report)
    if report.get("overoptimization"):
        o = report["overoptimization"]
        s = o["summary"]
        lines += [
            "## Reward hacking (over-optimisation)",
            "",
            f"PPO with KL coefficient {o['kl_coef']} for {o['steps']} steps: reward-model P(good) "
            f"{_fmt(s.get('eval/p_good_before'))} -> {_fmt(s.get('eval/p_good_after'))}, gold "
            f"{_fmt(s.get('eval/gold_before'))} -> {_fmt(s.get('eval/gold_after'))}, KL {_fmt(s.get('eval/kl_after'))} nats, "
            f"distinct-2 {_fmt(s.get('eval/distinct_2_before'))} -> {_fmt(s.get('eval/distinct_2_after'))} "
            "(samples: `ppo-overopt/samples.md`).",
            "When the proxy keeps rising while the gold score stalls or falls, the policy is exploiting the reward model. "
            "The gold judge scores positive *and* coherent text (sentiment times a coherence factor that falls for "
            "repetition and for text without function words), so the word salad of positive words that fools the "
            "reward model scores low on it; a collapsing distinct-2 and the samples show the same thing.",
            "",
        ]
    lines += ["## Samples", "", "| prompt | before | gold / RM | after | gold / RM |", "|---|---|---|---|---|"]
    for s in report["samples"]:
        lines.append(
            f"| {_cell(s['prompt'])} | {_cell(s['before'])} | {_fmt(s['gold_before'], 2)} / {_fmt(s['rm_before'], 2)} "
            f"| {_cell(s['after'])} | {_fmt(s['gold_after'], 2)} / {_fmt(s['rm_after'], 2)} |"
        )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    peaks, held = report.get("peak_rss_mb") or {}, report.get("held_rss_mb") or {}
    lines += [
        "",
        "## Time and memory per step",
        "",
        "| step | seconds | peak RSS so far (MiB) | RSS held after it (MiB) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {v} | {peaks.get(k, 'n/a')} | {held.get(k, 'n/a')} |" for k, v in report["timings_s"].items()]
    return "\n".join(lines) + "\n"


def overoptimization_only(profile: Profile, run_dir: Path | None = None, *, progress: bool = True, echo=print) -> Path:
    """``python -m demo overoptimization``: add the tiny-KL run to an existing demo report
    (the newest one by default), against that run's final reward model and start policy."""
    import db
    from common.gold import GoldJudge
    from common.paths import resolve_latest

    if run_dir is None:
        run_dir = resolve_latest(artifacts_root() / "demo")
    else:  # a report folder, or a run id under $RLHF_ARTIFACTS/demo/
        run_dir = Path(run_dir)
        if not run_dir.is_dir() and (artifacts_root() / "demo" / run_dir).is_dir():
            run_dir = artifacts_root() / "demo" / run_dir
    if run_dir is None or not (run_dir / "report.json").is_file():
        where = f" in {run_dir}" if run_dir is not None else f" under {artifacts_root() / 'demo'}"
        raise UserError(
            f"there is no demo report{where} to add the over-optimisation run to.",
            "run `make demo` first (or `python -m demo --overoptimization` to do both at once); "
            "--run takes a report folder or a run id under $RLHF_ARTIFACTS/demo/.",
        )
    report = json.loads((run_dir / "report.json").read_text())
    cfg = profile.demo
    steps = Steps(2, echo)
    engine = db.connect()
    gold = GoldJudge.load_or_fit(cfg.gold)
    with steps.step(
        "over-optimisation",
        f"PPO with KL coefficient {cfg.overopt_kl_coef} against {Path(report['final_reward_model']).name}",
    ):
        report["overoptimization"] = overoptimization_run(
            profile,
            engine,
            run_dir,
            report["rounds"][-1]["policy_in"],
            Path(report["final_reward_model"]),
            gold.score,
            prompts_for(profile, "train", profile.ppo.num_train_prompts, seed=cfg.seed + 11),
            prompts_for(profile, "test", cfg.n_eval_prompts, seed=cfg.seed + 7),
            progress,
        )
    with steps.step("report", "update report.md, report.json and plots"):
        report["timings_s"]["over-optimisation"] = steps.times["over-optimisation"]
        report["plots"] = write_plots(report, run_dir)
        write_json(run_dir / "report.json", report)
        md = report_markdown(report)
        (run_dir / "report.md").write_text(md, encoding="utf-8")
    echo("\n" + md)
    return run_dir
