"""Labels of equal effort (issue 15): 1,000 good/bad judgements against 500 comparisons.

A good/bad judgement reads one text and a comparison reads two, so ``--labels 1000`` judgements and
``--pairs 500`` pair judgements cost the labellers about the same reading. Both come from a labelled
feedback database (the demo's simulated labellers: ``python -m labeling_app.simulate`` for judgements,
``python -m db pairs make`` then ``python -m labeling_app.simulate --pairs`` for comparisons). No winner
is presumed; the figures are the result.

1. Split by prompt: ``--heldout-fraction`` of the prompts are held out, and nothing of a held-out prompt
   is trained on (neither its judgements nor its comparisons).
2. Train with the project's own trainer (``reward_training.training.train``, the profile's ``reward``
   section) into a temporary ``RLHF_ARTIFACTS`` (the seed and gold caches of ``--artifacts`` are reused
   through symlinks; nothing else is written there, and no ``latest`` moves):
   - ``labels``: a seeded random sample of ``--labels`` good/bad judgements of the training prompts,
     combined per completion as the trainer combines the database's (``reward.combine``), ``pairs=off``;
   - ``pairs``: a seeded random sample of ``--pairs`` pair judgements that chose a side, ``pairs=only``;
   - ``mix``: both together (twice the effort of either), ``pairs=auto``: does mixing help?
   - ``mix-half``: the same question at equal effort: a seeded sub-sample of ``--mix-labels`` of the
     ``labels`` sample and ``--mix-pairs`` of the ``pairs`` sample (default half each, 500 and 250: 1,000
     texts read, as either alone), ``pairs=auto``.
   The trainer's own held-out split is shrunk to a token (``heldout_fraction`` 0.01, ``heldout_min`` 0),
   so the whole budget but its early-stopping part (``val_fraction``) is trained on; the held-out prompts
   of step 1 do the evaluating. ``eval_snippets: 0``, ``baseline``/``plots`` off: no figure here uses them.
3. Evaluate on the held-out prompts against the gold judge (``common.gold.GoldJudge`` of ``demo.gold``):
   - ``single``: every completion of a held-out prompt; agreement = share where (P(good) > 0.5) equals
     (gold score > ``demo.simulate.threshold``), with a 95% bootstrap interval, and ROC-AUC;
   - ``pairs``: every comparison of a held-out prompt (judged at least once); agreement = share where the
     model orders the two texts as the gold score does (gold ties left out, model ties count half);
   - ``within_prompt``: the same on every pair of two completions of one held-out prompt (more pairs,
     not only those the comparison queue made).
4. The paired differences of those agreements between the models.
5. With ``--policy-seconds S`` (> 0; default 0, off): the policies trained from each reward model.
   From the start policy (``--policy``, default the base policy of ``--artifacts``), **PPO** against each
   reward model trained, through the PPO stage as ``make compare`` runs it (``rl_finetune.compare.run``:
   the ``ppo`` section, ``compare.seed``, ``max_minutes`` = S / 60, no checkpoints, ``total_steps`` still a
   cap), and **DPO** (``rl_finetune.offline.train_dpo``, the ``dpo`` section, ``time_budget_s`` = S, its
   ``epochs``/``max_steps`` still a cap) on exactly the pair judgements the ``pairs`` model was trained on
   (the same sample; those with an empty side or the same text on both sides are left out and counted).
   Neither evaluates inside its budget. Then one compare harness (``make_harness``) scores the start policy
   and every trained one on the same ``compare.eval_prompts`` IMDB test openings, sampled with the same
   seed: the gold positive rate (gold score > 0.5) with its 95% Wilson interval, the sampled KL to the
   start policy (nats per completion) and distinct-2. Nothing is saved or registered.

Figures (one JSON line each, with the command):

- ``split``: counts (the database, the training samples, the held-out set) and the sampled labels' own
  agreement with gold;
- ``model``, one per reward model: its three agreements with 95% intervals, what it was trained on
  (judgements, pair judgements, texts read), train and score seconds;
- ``difference``: labels minus pairs, mix minus labels, mix minus pairs, mix-half minus labels and
  mix-half minus pairs (keys ``mix_half_minus_labels`` ...), each agreement in points with a 95% paired
  bootstrap interval over the held-out items;
- ``policy`` (``--policy-seconds``), one per run (``run``: ``start``, ``ppo:<reward model>``,
  ``dpo:pairs``): ``gold_rate`` with ``gold_ci95`` (Wilson, over ``n_prompts``), ``gain_points`` over the
  start policy with ``gain_ci95`` (paired bootstrap over the eval prompts), ``gold_mean``, ``kl``,
  ``distinct_2``, ``steps``, ``train_seconds`` (PPO: its training steps; DPO: loading to saving),
  ``wall_seconds`` (the whole run but its evaluation), ``eval_seconds``, ``labels_used`` (DPO: the pairs it
  trained on, of ``sampled``, and ``left_out``); a DPO that cannot run is ``status: skipped`` with the reason;
- ``policy_difference`` (``--policy-seconds``): ``ppo_labels_minus_ppo_pairs``,
  ``ppo_labels_minus_dpo_pairs`` (and, with mix-half, ``ppo_mix_half_minus_ppo_labels``,
  ``ppo_mix_half_minus_ppo_pairs``): the difference of the gold positive rates in points with a 95% paired
  bootstrap interval (each eval prompt's 0/1 gold outcome under both policies, resampled together, seed
  ``--seed``);
- ``time``: wall seconds of the whole run.

Run (reward models only: about 5 minutes on 2 idle cores with the seed phase cached)::

    RLHF_DB_URL=sqlite:////tmp/cmp/feedback.sqlite RLHF_ARTIFACTS=/tmp/cmp/artifacts \\
        flock /tmp/rlhf-cpu.lock .venv/bin/python benchmarks/bench_equal_effort.py

With the policies, add ``--policy-seconds 300``. Each policy run costs S seconds of training, its loading
(about 10 s) and one evaluation by the harness (about 15 s for 64 eval prompts of SmolLM2-135M, from
``make compare``'s log); with the four reward models that is four PPO runs and one DPO run, so about
5 x (S + 25 s) + 30 s (the harness and the start policy): an estimated 30 minutes more at S = 300
(measured on 1 Dec at S = 240: 23.4 min in all, peak RSS 6.6 GB; figures in docs/compare.md). ``--models labels
pairs`` makes it two PPO runs and the DPO run.

``--quick``: 200 judgements against 100 comparisons, no mixing (a minute or two, before any policy).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common.errors import UserError, cli_entry  # noqa: E402

MODELS = ("labels", "pairs", "mix", "mix-half")
#: ``reward.pairs`` of each model: what the trainer takes from the examples and pairs it is given.
PAIRS_MODE = {"labels": "off", "pairs": "only", "mix": "auto", "mix-half": "auto"}
#: The reward-model differences of the ``difference`` figure (a minus b).
MODEL_DIFFERENCES = (
    ("labels", "pairs"), ("mix", "labels"), ("mix", "pairs"), ("mix-half", "labels"), ("mix-half", "pairs"),
)  # fmt: skip
#: The policy differences of the ``policy_difference`` figure (a minus b), by run: ``ppo:<reward model>`` or
#: ``dpo:pairs`` (DPO on the pairs model's sample).
POLICY_DIFFERENCES = (
    ("ppo:labels", "ppo:pairs"), ("ppo:labels", "dpo:pairs"), ("ppo:mix-half", "ppo:labels"),
    ("ppo:mix-half", "ppo:pairs"),
)  # fmt: skip
FIX_LABELS = "record more with `python -m labeling_app.simulate --n-labels N`, or lower --labels."
FIX_PAIRS = "make and judge more comparisons (`python -m db pairs make`, then `python -m labeling_app.simulate --pairs`), or lower --pairs."

COMMAND = ""


def emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, **values, "command": COMMAND}, default=float), flush=True)


# ----------------------------------------------------------------------------- the database


def database_url(arg: str | None) -> str:
    """``--db`` as a URL (a plain path is a SQLite file, which must exist); default ``$RLHF_DB_URL``."""
    from common.paths import db_url

    if not arg:
        return db_url()
    if "://" in arg:
        return arg
    path = Path(arg).resolve()
    if not path.is_file():
        raise UserError(f"--db {arg!r} is not a file.", "pass the labelled SQLite file or a database URL.")
    return f"sqlite:///{path}"


def read_database(engine) -> dict:
    """What the benchmark needs, through ``db``: the good/bad judgements, the pair judgements, and every
    completion as (prompt, completion) by id (labelled, skipped, compared or untouched)."""
    import db

    every = db.judgement_rows(engine)  # skips too: their completions belong to the held-out set
    pair_rows = db.pair_judgement_rows(engine)
    completions: dict[int, tuple[str, str]] = {
        it.completion_id: (it.prompt, it.completion) for it in db.unlabelled_completions(engine)
    }
    for r in every:
        completions[r["completion_id"]] = (r["prompt"], r["completion"])
    for r in pair_rows:
        completions[r["a_id"]] = (r["prompt"], r["a"])
        completions[r["b_id"]] = (r["prompt"], r["b"])
    judgements = [r for r in every if r["label"] in ("good", "bad")]
    return {"judgements": judgements, "pair_rows": pair_rows, "completions": completions}


def heldout_prompts(prompts: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of the distinct prompts (at least one, and at least one left to train on)."""
    names = sorted(set(prompts))
    if len(names) < 2:
        raise UserError(
            f"the database has {len(names)} prompt(s): a held-out split by prompt needs at least two.",
            "generate completions for more prompts (`make generate`).",
        )
    k = min(max(int(round(len(names) * fraction)), 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i] for i in order[:k]}


def sample(rows: Sequence, n: int, seed: int) -> list:
    """``n`` of ``rows`` drawn at random without replacement (seeded), in their original order."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])
    return [rows[int(i)] for i in pick]


def combine_judgements(rows: Sequence[dict], combine: str) -> list[dict]:
    """The sampled judgements as the trainer's labelled examples, one per completion, combined like
    ``db.labelled_dataset`` (``majority``: ties dropped; ``soft``: share good) or, for ``reliability``,
    by the Dawid-Skene posterior over the sampled judgements (``reward_training.data.reliability_examples``)."""
    import db
    from reward_training import data as D

    by_completion: dict[int, list[dict]] = {}
    for r in rows:
        by_completion.setdefault(r["completion_id"], []).append(r)
    soft, majority = [], []
    for cid, rs in sorted(by_completion.items()):
        good = sum(r["label"] == "good" for r in rs)
        text = db.shown_text(rs[0]["prompt"], rs[0]["completion"])
        soft.append({"completion_id": cid, "text": text, "label": good / len(rs)})
        if 2 * good != len(rs):
            majority.append({"completion_id": cid, "text": text, "label": float(2 * good > len(rs))})
    if combine == "majority":
        return majority
    if combine == "soft":
        return soft
    records = D.reliability_examples(soft, rows)
    return [{"completion_id": e.group[2:], "text": e.text, "label": e.label} for e in records]


def preference_records(rows: Sequence[dict]) -> list:
    """The pair judgements that chose a side as ``db.PreferencePair`` records (as ``db.preference_pairs``)."""
    import db

    out = []
    for r in rows:
        chosen, rejected = (r["a"], r["b"]) if r["choice"] == "a" else (r["b"], r["a"])
        out.append(db.PreferencePair(r["prompt"], chosen, rejected, r["comparison_id"], r["labeler"]))
    return out


def training_data(data: dict, held: set[str], n_labels: int, n_pairs: int, seed: int) -> tuple[list, list]:
    """(sampled good/bad judgement rows, sampled decisive pair judgement rows) of the training prompts;
    too few of either is a one-line error naming the command that records more."""
    judgements = [r for r in data["judgements"] if r["prompt"] not in held]
    decisive = [r for r in data["pair_rows"] if r["choice"] in ("a", "b") and r["prompt"] not in held]
    if n_labels and len(judgements) < n_labels:
        raise UserError(
            f"the database holds {len(judgements)} good/bad judgements outside the held-out prompts; "
            f"--labels {n_labels} needs that many.",
            FIX_LABELS,
        )
    if n_pairs and len(decisive) < n_pairs:
        raise UserError(
            f"the database holds {len(decisive)} pair judgements that chose a side outside the held-out prompts; "
            f"--pairs {n_pairs} needs that many.",
            FIX_PAIRS,
        )
    return sample(judgements, n_labels, seed), sample(decisive, n_pairs, seed + 1)


def model_budgets(label_rows: list, pair_rows: list, mix_labels: int, mix_pairs: int, seed: int) -> dict:
    """Each model's (good/bad judgement rows, pair judgement rows): ``labels`` and ``pairs`` one sample each,
    ``mix`` both, ``mix-half`` a seeded sub-sample of ``mix_labels`` of the one and ``mix_pairs`` of the other
    (so that it reads as many texts as ``labels`` or ``pairs`` alone at the default half and half)."""
    half = (sample(label_rows, mix_labels, seed + 2), sample(pair_rows, mix_pairs, seed + 3))
    return {"labels": (label_rows, []), "pairs": ([], pair_rows), "mix": (label_rows, pair_rows), "mix-half": half}


def trained_on(label_rows: Sequence, pair_rows: Sequence) -> dict:
    """What a model learnt from, and the labellers' reading it cost (a comparison reads two texts)."""
    return {
        "judgements": len(label_rows),
        "pair_judgements": len(pair_rows),
        "texts_read": len(label_rows) + 2 * len(pair_rows),
    }


# ----------------------------------------------------------------------------- the held-out set


def heldout_sets(data: dict, held: set[str]) -> dict:
    """The held-out texts: every completion of a held-out prompt (id -> shown text, and its prompt), the
    held-out comparisons (completion-id pairs, each once) and every within-prompt pair of completions."""
    import db

    texts = {cid: db.shown_text(p, c) for cid, (p, c) in sorted(data["completions"].items()) if p in held}
    prompt_of = {cid: p for cid, (p, _) in data["completions"].items() if p in held}
    comparisons = sorted({(r["a_id"], r["b_id"]) for r in data["pair_rows"] if r["prompt"] in held})
    by_prompt: dict[str, list[int]] = {}
    for cid in texts:
        by_prompt.setdefault(prompt_of[cid], []).append(cid)
    within = [(ids[i], ids[j]) for ids in by_prompt.values() for i in range(len(ids)) for j in range(i + 1, len(ids))]
    return {"texts": texts, "comparisons": comparisons, "within_prompt": within, "prompts": len(by_prompt)}


def gold_ordered(pairs: Sequence[tuple[int, int]], gold: dict[int, float]) -> list[tuple[int, int]]:
    """Each pair as (gold-higher id, gold-lower id); pairs the gold judge scores equally are left out."""
    return [(a, b) if gold[a] > gold[b] else (b, a) for a, b in pairs if gold[a] != gold[b]]


def pair_arrays(ordered: Sequence[tuple[int, int]], score: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(scores of the gold-higher texts, scores of the gold-lower texts): the (chosen, rejected) of
    ``reward_training.evaluate.pairwise_metrics``."""
    return (np.array([score[a] for a, _ in ordered]), np.array([score[b] for _, b in ordered]))


def single_agreement(y: np.ndarray, p: np.ndarray, seed: int) -> dict:
    """Agreement of (P(good) > 0.5) with the gold labels ``y`` (1 = gold good), in points with a 95%
    bootstrap interval, and the ROC-AUC of P(good) against them."""
    from reward_training.evaluate import binary_metrics, points_with_interval

    m = binary_metrics(y, p)
    return {**points_with_interval(((p > 0.5) == (y > 0.5)).astype(float), seed=seed), "roc_auc": m["roc_auc"]}


def pair_agreement(chosen: np.ndarray, rejected: np.ndarray, seed: int) -> dict:
    """Share of pairs the model orders as gold does (model ties half), in points with a 95% interval."""
    from reward_training.evaluate import pair_correct, points_with_interval

    if len(chosen) == 0:
        return {"n": 0}
    return points_with_interval(pair_correct(chosen, rejected), seed=seed)


# ----------------------------------------------------------------------------- training and scoring


def bench_config(cfg, mode: str):
    """The profile's reward config for one model: its ``pairs`` mode, a token inner held-out split (the
    held-out prompts evaluate), and nothing computed that no figure here uses."""
    return dataclasses.replace(
        cfg, pairs=mode, heldout_fraction=0.01, heldout_min=0, eval_snippets=0, baseline=False, plots=False
    )


def scratch_artifacts(shared: Path) -> Path:
    """A temporary artifacts root whose ``reward_seed`` and ``gold`` caches are ``shared``'s (symlinks)."""
    root = Path(tempfile.mkdtemp(prefix="bench-equal-effort-")) / "artifacts"
    root.mkdir()
    for cache in ("reward_seed", "gold"):
        if (shared / cache).is_dir():
            (root / cache).symlink_to((shared / cache).resolve())
    return root


@contextlib.contextmanager
def artifacts_env(root: Path):
    """``RLHF_ARTIFACTS`` set to ``root`` within the block, and put back as it was after it."""
    before = os.environ.get("RLHF_ARTIFACTS")
    os.environ["RLHF_ARTIFACTS"] = str(root)
    try:
        yield root
    finally:
        if before is None:
            os.environ.pop("RLHF_ARTIFACTS", None)
        else:
            os.environ["RLHF_ARTIFACTS"] = before


def train_one(cfg, data_cfg, name: str, examples: list, pairs: list) -> tuple[Path, float]:
    """Train model ``name`` with ``reward_training.training.train`` under the current ``RLHF_ARTIFACTS``;
    (its folder, wall seconds)."""
    from reward_training.training import train

    t0 = time.perf_counter()
    folder = train(
        bench_config(cfg, PAIRS_MODE[name]),
        None,
        data_cfg=data_cfg,
        examples=examples if name != "pairs" else [],
        pairs=pairs if name != "labels" else [],
        run_id=f"equal-effort-{name}",
        register=False,
        progress=False,
    )
    return folder, time.perf_counter() - t0


def scorer(folder: Path, batch_size: int) -> Callable[[list[str]], np.ndarray]:
    """``texts -> log-odds of good`` of the saved model (``load_reward_fn``, no conservative penalty)."""
    from reward_training.api import load_reward_fn

    fn = load_reward_fn(folder, kind="logit_diff", batch_size=batch_size, conservative_k=0.0)
    return lambda texts: fn(list(texts)).float().numpy().astype(np.float64)


def probabilities(logits: dict[int, float], ids: Sequence[int]) -> np.ndarray:
    """P(good) = sigmoid(log-odds) of the texts ``ids``, in that order."""
    return 1.0 / (1.0 + np.exp(-np.array([logits[i] for i in ids], dtype=np.float64)))


def evaluate_model(logits: dict[int, float], y: np.ndarray, ids: list[int], ordered: dict, seed: int) -> dict:
    """A model's three agreements from its held-out log-odds ``logits``."""
    out = {"single": single_agreement(y, probabilities(logits, ids), seed)}
    for name, pairs in ordered.items():
        out[name] = pair_agreement(*pair_arrays(pairs, logits), seed)
    return out


def differences(models: dict[str, dict], y: np.ndarray, ids: list[int], ordered: dict, seed: int) -> dict:
    """Per pair of models of :data:`MODEL_DIFFERENCES` (labels - pairs, mix - labels, mix - pairs, mix-half -
    labels, mix-half - pairs; keys ``<a>_minus_<b>``, ``-`` written ``_``): each agreement's difference in
    points with a 95% paired bootstrap interval (the same held-out items resampled for both)."""
    from reward_training.evaluate import accuracy_difference, pairwise_difference

    out = {}
    for a, b in MODEL_DIFFERENCES:
        if a not in models or b not in models:
            continue
        la, lb = models[a], models[b]
        d = {"single": accuracy_difference(y, probabilities(la, ids), probabilities(lb, ids), seed=seed)}
        for name, pairs in ordered.items():
            d[name] = pairwise_difference(pair_arrays(pairs, la), pair_arrays(pairs, lb), seed=seed) if pairs else None
        out[f"{a}_minus_{b}".replace("-", "_")] = d
    return out


# ----------------------------------------------------------------------------- the policies (--policy-seconds)


@dataclasses.dataclass
class Trained:
    """A policy trained within the budget, before the harness scores it."""

    model: object  # the trained causal LM (plain Hugging Face model)
    steps: int
    train_seconds: float  # the learner's own count: PPO's training steps; DPO's run from loading to saving
    pairs: int | None = None  # DPO: the pairs it trained on (``train_dpo``'s ``labels_used``)


def dpo_records(pair_rows: Sequence[dict]) -> tuple[list, int]:
    """The sampled pair judgements as DPO's ``db.PreferencePair`` records, in their order, and how many were
    left out: those with an empty side (no token to compare, as ``rl_finetune.offline.data.without_empty_pairs``)
    or the same text on both sides (a constant loss, which ``check_pairs`` refuses)."""
    records = preference_records(pair_rows)
    kept = [r for r in records if r.chosen and r.rejected and r.chosen != r.rejected]
    return kept, len(records) - len(kept)


def gold_outcomes(samples: Sequence[dict]) -> np.ndarray:
    """Each eval prompt's gold outcome, in prompt order: 1 where the gold judge scores its completion above 0.5."""
    from rl_finetune.ppo.report import gold_hits

    return np.array(gold_hits(samples))


def policy_figure(row: dict, samples: list[dict], start: np.ndarray, seed: int) -> dict:
    """A scored policy's figures: gold positive rate with its 95% Wilson interval over the eval prompts, its
    gain over the start policy (outcomes ``start``) in points with a 95% paired bootstrap interval, the mean
    gold score, the KL to the start policy (nats per completion) and distinct-2, from the harness's eval row."""
    from reward_training.evaluate import points_with_interval
    from rl_finetune.compare.results import gold_rate

    rate, lo, hi, n = gold_rate(samples)
    gain = points_with_interval(gold_outcomes(samples) - start, seed=seed)
    return {
        "gold_rate": round(rate, 4),
        "gold_ci95": [round(lo, 4), round(hi, 4)],
        "n_prompts": n,
        "gain_points": gain["points"],
        "gain_ci95": gain["ci95"],
        "gold_mean": row.get("eval/gold"),
        "kl": row.get("eval/kl"),
        "distinct_2": row.get("eval/distinct_2"),
    }


def policy_differences(outcomes: dict[str, np.ndarray], seed: int) -> dict:
    """Per pair of runs of :data:`POLICY_DIFFERENCES` that both ran: the difference of their gold positive
    rates in points with a 95% paired bootstrap interval (each eval prompt's 0/1 outcome under both resampled
    together). Keys ``ppo_labels_minus_ppo_pairs``, ``ppo_labels_minus_dpo_pairs``, ..."""
    from reward_training.evaluate import points_with_interval

    out = {}
    for a, b in POLICY_DIFFERENCES:
        if a in outcomes and b in outcomes:
            key = f"{a}_minus_{b}".replace(":", "_").replace("-", "_")
            out[key] = points_with_interval(outcomes[a] - outcomes[b], seed=seed)
    return out


def policy_setup(profile, seconds: float, start: str, reward: Path, gold_fn, data_cfg):
    """(the compare harness, compare's PPO config with a budget of ``seconds``, the train prompts), from
    ``rl_finetune.compare.run``: the harness scores any policy on the ``compare.eval_prompts`` IMDB test
    openings with ``compare.seed``, by the gold judge ``gold_fn`` and the KL to ``start``; ``reward`` only fills
    its reward column, which no figure here uses."""
    from common.config import load_config
    from rl_finetune.compare.config import CompareConfig
    from rl_finetune.compare.run import make_harness, method_configs, shared_prompts
    from rl_finetune.ppo.config import PPOConfig

    ccfg = load_config(CompareConfig, "compare", profile)
    ccfg = dataclasses.replace(ccfg, methods=["ppo", "dpo"], seconds=seconds, seconds_per_method={})
    ccfg.validate()
    ppo = load_config(PPOConfig, "ppo", profile)
    prompts, eval_prompts = shared_prompts(ccfg, ppo, None, None, data_cfg, profile)
    harness = make_harness(ccfg, ppo, start, str(reward), gold_fn, eval_prompts)
    return harness, method_configs(ccfg, ppo)["ppo"], prompts


def run_ppo(cfg, start: str, reward: Path, prompts: list[str], work_dir: Path) -> Trained:
    """PPO from ``start`` against the reward model at ``reward`` within ``cfg.max_minutes``, through the stage as
    compare runs it, but with no evaluation of its own (the harness scores the result once)."""
    from rl_finetune.ppo.stage import run_stage

    stage = run_stage(
        cfg, policy=start, reward=str(reward), prompts=prompts, eval_prompts=[], work_dir=work_dir, save=False,
        register_version=False, progress=False,
    )  # fmt: skip
    res = stage.result
    return Trained(res.model, int(res.summary["steps"]), float(res.summary["wall_time_s"]))


def run_dpo(profile, start: str, records: list, seconds: float, out_dir: Path) -> tuple[Trained | None, str]:
    """DPO from ``start`` on ``records`` (and nothing else) within ``seconds``, the ``dpo`` section's settings,
    through compare's ``offline_learner``; (the trained policy, "") or (None, the reason it did not run)."""
    from common.config import load_config
    from rl_finetune.compare.run import offline_learner

    found, why = offline_learner("dpo")
    if found is None:
        return None, why
    train_fn, cfg_cls = found
    last: dict = {}

    def keep(model, tokenizer, step: int) -> dict:  # no evaluation inside the budget: the harness scores it after
        last["model"] = model
        return {}

    try:
        out = train_fn(
            Path(start), records, out_dir, load_config(cfg_cls, "dpo", profile), eval_fn=keep, time_budget_s=seconds
        )
    except UserError as err:  # e.g. fewer than two pairs left
        return None, str(err)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # the benchmark keeps numbers, not policies
    return Trained(last["model"], int(out["steps"]), float(out["wall_s"]), int(out["labels_used"])), ""


def policy_phase(
    args, start: str, folders: dict[str, Path], budgets: dict, pair_rows: list, gold_fn, data_cfg, work: Path
):
    """Step 5: the start policy, PPO against each reward model of ``folders`` and DPO on the pairs model's
    sample ``pair_rows``, each trained for ``args.policy_seconds`` and scored by one compare harness; a
    ``policy`` figure per run, then ``policy_difference``."""
    seconds = args.policy_seconds
    first = "labels" if "labels" in folders else next(iter(folders))
    harness, ppo_cfg, prompts = policy_setup(args.config, seconds, start, folders[first], gold_fn, data_cfg)
    row, samples = harness.evaluate()
    outcomes = {"start": gold_outcomes(samples)}
    emit(
        "policy", run="start", method="start", reward_model=None, policy=start, harness_reward_model=first,
        **policy_figure(row, samples, outcomes["start"], args.seed),
    )  # fmt: skip

    def score(run: str, trained: Trained, wall: float, **extra) -> None:
        t0 = time.perf_counter()
        row, samples = harness.evaluate(trained.model)  # the same prompts in the same order: paired outcomes
        outcomes[run] = gold_outcomes(samples)
        emit(
            "policy", run=run, **extra, **policy_figure(row, samples, outcomes["start"], args.seed),
            steps=trained.steps, train_seconds=round(trained.train_seconds, 1), wall_seconds=round(wall, 1),
            eval_seconds=round(time.perf_counter() - t0, 1), budget_seconds=seconds,
        )  # fmt: skip

    for name, folder in folders.items():
        t0 = time.perf_counter()
        trained = run_ppo(ppo_cfg, start, folder, prompts, work / f"ppo-{name}")
        score(f"ppo:{name}", trained, time.perf_counter() - t0, method="ppo", reward_model=name,
              labels_used=trained_on(*budgets[name]))  # fmt: skip
        del trained
    if pair_rows:  # DPO: the pairs model's own sample, the pairs left out counted
        records, left_out = dpo_records(pair_rows)
        t0 = time.perf_counter()
        trained, why = run_dpo(args.config, start, records, seconds, work / "dpo-pairs")
        if trained is None:
            emit("policy", run="dpo:pairs", method="dpo", reward_model=None, status="skipped", reason=why)
        else:
            used = {"judgements": 0, "pair_judgements": trained.pairs, "texts_read": 2 * trained.pairs}
            score("dpo:pairs", trained, time.perf_counter() - t0, method="dpo", reward_model=None,
                  labels_used={**used, "sampled": len(pair_rows), "left_out": left_out})  # fmt: skip
    emit("policy_difference", **policy_differences(outcomes, args.seed))


# ----------------------------------------------------------------------------- the run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="labelled SQLite file or database URL (default: $RLHF_DB_URL)")
    ap.add_argument("--config", default=None, help="profile (default: $RLHF_CONFIG or configs/default.yaml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="reward key")
    ap.add_argument("--labels", type=int, default=None, help="good/bad judgements to train on (default 1000)")
    ap.add_argument("--pairs", type=int, default=None, help="pair judgements to train on (default 500)")
    ap.add_argument("--models", nargs="*", default=None, choices=MODELS, help="default: all four")
    ap.add_argument(
        "--mix-labels", type=int, default=None, help="mix-half: judgements, a sub-sample of --labels (default half)"
    )
    ap.add_argument(
        "--mix-pairs", type=int, default=None, help="mix-half: pair judgements, a sub-sample of --pairs (default half)"
    )
    ap.add_argument(
        "--policy-seconds",
        type=float,
        default=0.0,
        help="> 0: also train PPO against each reward model and DPO on the pairs sample, S seconds each (default 0: off)",
    )
    ap.add_argument("--policy", default=None, help="start policy of --policy-seconds (default: the base policy)")
    ap.add_argument("--heldout-fraction", type=float, default=0.2, help="share of the prompts held out")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt split and the samples")
    ap.add_argument(
        "--artifacts", default=None, help="RLHF_ARTIFACTS whose seed and gold caches are reused (default: its value)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary artifacts folder (its path is printed)")
    ap.add_argument("--quick", action="store_true", help="200 judgements against 100 comparisons, no mixing")
    return ap


def check_args(args) -> None:
    args.labels = args.labels if args.labels is not None else (200 if args.quick else 1000)
    args.pairs = args.pairs if args.pairs is not None else (100 if args.quick else 500)
    args.models = (
        list(args.models) if args.models is not None else (["labels", "pairs"] if args.quick else list(MODELS))
    )
    args.mix_labels = args.mix_labels if args.mix_labels is not None else args.labels // 2
    args.mix_pairs = args.mix_pairs if args.mix_pairs is not None else args.pairs // 2
    if args.labels < 1 or args.pairs < 1:
        raise UserError(f"--labels {args.labels} and --pairs {args.pairs} must both be >= 1.", "use e.g. 1000 and 500.")
    if "mix-half" in args.models and not (1 <= args.mix_labels <= args.labels and 1 <= args.mix_pairs <= args.pairs):
        raise UserError(
            f"--mix-labels {args.mix_labels} and --mix-pairs {args.mix_pairs} must be between 1 and --labels "
            f"{args.labels} and --pairs {args.pairs}: mix-half is a sub-sample of those.",
            "use e.g. --mix-labels 500 --mix-pairs 250 (the default, half of each), or raise --labels/--pairs.",
        )
    if not args.policy_seconds >= 0:
        raise UserError(f"--policy-seconds {args.policy_seconds} must be >= 0.", "use e.g. 300, or 0 for no policies.")
    if not 0.0 < args.heldout_fraction < 1.0:
        raise UserError(f"--heldout-fraction {args.heldout_fraction} must be between 0 and 1.", "use e.g. 0.2.")
    if not args.models:
        raise UserError("--models names no model.", f"name some of {', '.join(MODELS)}.")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    global COMMAND
    args = build_parser().parse_args(argv)
    check_args(args)
    COMMAND = "python benchmarks/bench_equal_effort.py " + " ".join(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from common.assets import offline_env

    offline_env()
    import db
    from common.config import load_config
    from common.gold import GoldJudge
    from common.imdb import DataConfig
    from common.paths import artifacts_root
    from labeling_app.simulate import load_simulate_config
    from reward_training.config import RewardConfig

    started = time.perf_counter()
    cfg = load_config(RewardConfig, "reward", profile=args.config, overrides=args.overrides)
    data_cfg = load_config(DataConfig, "data", profile=args.config)
    scfg, gcfg = load_simulate_config(args.config)
    shared = Path(args.artifacts) if args.artifacts else artifacts_root()

    # 1. the data and the split by prompt; too few labels fail before anything is trained
    engine = db.connect(database_url(args.db))
    data = read_database(engine)
    engine.dispose()
    prompts = [p for p, _ in data["completions"].values()]
    held = heldout_prompts(prompts, args.heldout_fraction, args.seed)
    n_labels = args.labels if {"labels", "mix", "mix-half"} & set(args.models) else 0
    n_pairs = args.pairs if {"pairs", "mix", "mix-half"} & set(args.models) else 0
    label_rows, pair_rows = training_data(data, held, n_labels, n_pairs, args.seed)
    budgets = model_budgets(label_rows, pair_rows, args.mix_labels, args.mix_pairs, args.seed)
    examples = combine_judgements(label_rows, cfg.combine)
    test = heldout_sets(data, held)
    if not test["texts"]:
        raise UserError("the held-out prompts have no completions.", "use a database with more prompts.")
    if args.policy_seconds > 0:
        from base_policy.loading import resolve_policy

        with artifacts_env(shared):  # the base or latest policy of --artifacts
            start = str(resolve_policy(args.policy))

    # 2. gold on the held-out texts (and on the sampled labels, to show how noisy they are)
    judge = GoldJudge.load_or_fit(gcfg, cache_dir=shared / "gold")
    ids = list(test["texts"])
    gold_scores = judge.score([test["texts"][i] for i in ids])
    gold = dict(zip(ids, gold_scores.tolist()))
    y = (gold_scores > scfg.threshold).astype(float)
    ordered = {name: gold_ordered(test[name], gold) for name in ("comparisons", "within_prompt")}
    ordered["pairs"] = ordered.pop("comparisons")
    g_lab = judge.score([db.shown_text(r["prompt"], r["completion"]) for r in label_rows])
    g_a = judge.score([db.shown_text(r["prompt"], r["a"]) for r in pair_rows])
    g_b = judge.score([db.shown_text(r["prompt"], r["b"]) for r in pair_rows])
    decided = g_a != g_b
    picked_a = np.array([r["choice"] == "a" for r in pair_rows])
    emit(
        "split",
        prompts=len(set(prompts)),
        heldout_prompts=len(held),
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        database={"judgements": len(data["judgements"]), "pair_judgements": len(data["pair_rows"])},
        train={
            "judgements": len(label_rows),
            "labelled_completions": len(examples),
            "combine": cfg.combine,
            "good_share": round(float(np.mean([e["label"] for e in examples])), 4) if examples else None,
            "pair_judgements": len(pair_rows),
            "compared_pairs": len({r["comparison_id"] for r in pair_rows}),
            **({"mix_half": trained_on(*budgets["mix-half"])} if "mix-half" in args.models else {}),
        },
        heldout={
            "completions": len(ids),
            "gold_good_share": round(float(y.mean()), 4),
            "comparisons": len(test["comparisons"]),
            "comparisons_gold_ties": len(test["comparisons"]) - len(ordered["pairs"]),
            "within_prompt_pairs": len(test["within_prompt"]),
            "within_prompt_gold_ties": len(test["within_prompt"]) - len(ordered["within_prompt"]),
        },
        labels_agree_with_gold=round(
            float(np.mean((g_lab > scfg.threshold) == np.array([r["label"] == "good" for r in label_rows]))), 4
        )
        if label_rows
        else None,
        pair_choices_agree_with_gold=round(float(np.mean((g_a > g_b)[decided] == picked_a[decided])), 4)
        if decided.any()
        else None,
    )

    # 3. train each model in a scratch artifacts root, score the held-out texts
    scratch = scratch_artifacts(shared)
    logits: dict[str, dict[int, float]] = {}
    folders: dict[str, Path] = {}
    try:
        with artifacts_env(scratch):
            for name in args.models:
                rows, prows = budgets[name]
                examples_of = combine_judgements(rows, cfg.combine)
                folder, seconds = train_one(cfg, data_cfg, name, examples_of, preference_records(prows))
                folders[name] = folder
                t0 = time.perf_counter()
                scores = scorer(folder, cfg.eval_batch_size)([test["texts"][i] for i in ids])
                logits[name] = dict(zip(ids, scores.tolist()))
                emit(
                    "model",
                    model=name,
                    reward_pairs=PAIRS_MODE[name],
                    trained_on=trained_on(rows, prows),
                    **evaluate_model(logits[name], y, ids, ordered, args.seed),
                    train_seconds=round(seconds, 1),
                    score_seconds=round(time.perf_counter() - t0, 1),
                    **({"folder": str(folder)} if args.keep else {}),
                )

            # 4. the paired differences
            emit("difference", **differences(logits, y, ids, ordered, args.seed))

            # 5. the policies: PPO against each reward model, DPO on the pairs sample, one harness scoring all
            if args.policy_seconds > 0:
                policy_phase(args, start, folders, budgets, pair_rows, judge.score, data_cfg, scratch.parent)
    finally:
        if not args.keep:
            shutil.rmtree(scratch.parent, ignore_errors=True)
    emit(
        "time", seconds=round(time.perf_counter() - started, 1), models=args.models, policy_seconds=args.policy_seconds
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
