"""Shared pieces of the reward-model tests that train a tiny random BERT (``tiny_reward_dir``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.config import load_config
from reward_training.config import RewardConfig

SMOKE = Path(__file__).resolve().parent.parent.parent / "configs" / "smoke.yaml"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for the module: the tiny models gain nothing from two, and the suite shares 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(backbone: Path, **over) -> RewardConfig:
    """The smoke profile's ``reward`` section on ``backbone``, tuned so a tiny model learns in a few epochs."""
    base = {
        "backbone": str(backbone),
        "seed_lr": 3e-3,
        "human_lr": 3e-3,
        "freeze_embeddings": False,
        "human_epochs": 8,
        "patience": 8,
        "bf16": False,
        "plots": False,
        "baseline": False,
    }
    base.update(over)
    return load_config(RewardConfig, "reward", profile=SMOKE, overrides=base)
