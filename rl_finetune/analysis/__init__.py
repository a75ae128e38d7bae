"""``python -m rl_finetune analyse BASE TUNED``: what RL fine-tuning changed inside a causal LM.

An automated form of EleutherAI's exploratory analysis of trlx's sentiment run, through forward
hooks on plain ``transformers`` models (GPT-2 and the Llama family), each model measured with its
own activations, final norm and unembedding. Modules: ``hooks`` (model parts, recording and
patching), ``measures`` (logit lens, direct logit attribution, patching, weight change, statistics),
``reward`` (the reward model's token attribution by occlusion, through ``load_reward_fn`` only),
``figures`` (PNGs), ``report`` (markdown, headline) and ``cli``. docs/analysis.md describes the report.
"""

from rl_finetune.analysis.report import analyse

__all__ = ["analyse"]
