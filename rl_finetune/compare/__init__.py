"""Every stage-3 learner on one frontier: ``python -m rl_finetune compare`` (docs/compare.md).

``run_compare`` runs PPO, RLOO, GRPO, best-of-n, KTO and DPO from one labelled database and one start policy,
each within a time budget, and writes one report folder; ``best_of_n_rows`` is the best-of-n command's core."""

from rl_finetune.compare.config import METHODS, CompareConfig
from rl_finetune.compare.run import CompareRun, best_of_n_rows, run_compare

__all__ = ["METHODS", "CompareConfig", "CompareRun", "best_of_n_rows", "run_compare"]
