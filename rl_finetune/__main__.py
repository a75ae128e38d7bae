"""``python -m rl_finetune ppo``: stage 4, RL fine-tuning of the policy against the newest reward model."""

from __future__ import annotations

import os
import sys

# Idle OpenMP threads spin on an idle machine and sleep on a busy one (common/runtime.py). Must precede the
# first torch import.
from common.runtime import configure_cpu

os.environ.update(configure_cpu())

from common.errors import UserError, cli_entry

COMMANDS = {
    "ppo": "fine-tune the policy with PPO against the newest reward model (make finetune)",
    "rloo": "the same with RLOO: k samples per prompt, leave-one-out baseline, no value head (ppo --set algorithm=rloo)",
    "grpo": "the same with GRPO: k samples per prompt, group-normalised advantages (ppo --set algorithm=grpo)",
    "dpo": "DPO straight from the pairwise comparisons: frozen reference, no reward model, no sampling",
    "kto": "KTO straight from the good/bad labels: frozen reference, no reward model, no sampling",
    "best-of-n": "best-of-n sampling against the reward model, scored with the gold judge; analytic KL, no training",
    "compare": "every learner above and best-of-n on one gold-vs-KL frontier, one report (make compare)",
    "analyse": "what RL changed inside the model: python -m rl_finetune analyse BASE TUNED (make analyse)",
}
#: Commands that moved to stage 1's package, with where they went.
MOVED = {"pretrain": "python -m base_policy pretrain", "generate": "python -m base_policy generate"}


def usage() -> str:
    lines = ["usage: python -m rl_finetune ppo [options] | analyse BASE TUNED [options]", ""]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`python -m rl_finetune ppo --help` lists its options; the base policy is `python -m base_policy`."]
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ("ppo", "rloo", "grpo"):  # one loop, three learners (docs/ppo.md, "Other learners")
        from rl_finetune.ppo.cli import main as ppo_main

        return ppo_main(rest, algorithm=command) or 0
    if command in ("dpo", "kto"):  # the offline learners (rl_finetune.offline)
        from rl_finetune.offline.cli import main as offline_main

        return offline_main(rest, method=command) or 0
    if command in ("compare", "best-of-n"):  # rl_finetune.compare (docs/compare.md)
        from rl_finetune.compare import cli

        return (cli.main(rest) if command == "compare" else cli.best_of_n_main(rest)) or 0
    if command in ("analyse", "analyze"):
        from rl_finetune.analysis.cli import main as analyse_main

        return analyse_main(rest) or 0
    if command in MOVED:
        raise UserError(f"{command} is a stage-1 command now.", f"run `{MOVED[command]}`.")
    raise UserError(
        f"unknown command {command!r}.",
        "use: ppo, rloo, grpo, dpo, kto, best-of-n, compare or analyse (see --help); stage 1 is `python -m base_policy`.",
    )


if __name__ == "__main__":
    sys.exit(main())
