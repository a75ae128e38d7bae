"""The offline learners: the policy learns straight from the database's labels, against a frozen reference,
with no reward model and no sampling (docs/ppo.md, "DPO and KTO").

    from rl_finetune.offline import DPOConfig, KTOConfig, train_dpo, train_kto
    result = train_dpo(Path("artifacts/base_policy"), db.preference_pairs(engine), Path("out/dpo"), DPOConfig())
    result["final"], result["evals"], result["steps"], result["wall_s"], result["labels_used"]

- ``config``: :class:`DPOConfig`, :class:`KTOConfig` (sections ``dpo`` and ``kto``)
- ``dpo``: :func:`dpo_loss` (pure, TRL's statistics) and :func:`train_dpo`
- ``kto_train``: :func:`train_kto` (the loss is :mod:`rl_finetune.ppo.kto`'s)
- ``batches``: sequences, batches and :func:`sequence_logprobs`
- ``loop``: the loop both share (reference pass, steps, evals, reports, atomic save)
- ``data``: the labels from ``db`` and their checks; ``evaluate``: the commands' held-out eval
- ``cli``: ``python -m rl_finetune dpo|kto``
"""

from rl_finetune.offline.config import DPOConfig, KTOConfig
from rl_finetune.offline.dpo import dpo_loss, sequence_logprobs, train_dpo
from rl_finetune.offline.kto_train import train_kto

__all__ = ["DPOConfig", "KTOConfig", "dpo_loss", "sequence_logprobs", "train_dpo", "train_kto"]
