"""bf16 only where the CPU computes it fast (common.precision), and the override."""

from __future__ import annotations

import logging

import pytest
import torch

from common import precision
from reward_training.model import autocast


@pytest.fixture
def cpu_bf16(monkeypatch):
    def set_to(value: str) -> None:
        monkeypatch.setenv(precision.ENV, value)
        precision.cpu_bf16_fast.cache_clear()

    yield set_to
    precision.cpu_bf16_fast.cache_clear()


def test_override_off_runs_fp32_and_says_so_once(cpu_bf16, caplog):
    cpu_bf16("0")
    precision._say_fp32.cache_clear()
    with caplog.at_level(logging.WARNING, logger="common.precision"):
        assert precision.use_bf16(True) is False
        assert precision.use_bf16(True) is False
    assert sum("running in fp32" in r.message for r in caplog.records) == 1
    assert precision.resolve_mixed_precision("bf16", "cpu") == "no"
    with autocast(True):
        assert not torch.is_autocast_enabled("cpu")


def test_override_on_keeps_bf16(cpu_bf16):
    cpu_bf16("1")
    assert precision.use_bf16(True) is True
    assert precision.resolve_mixed_precision("bf16", "cpu") == "bf16"
    with autocast(True):
        assert torch.is_autocast_enabled("cpu")


def test_auto_asks_onednn_and_leaves_the_rest_alone(cpu_bf16):
    cpu_bf16("auto")
    assert precision.cpu_bf16_fast() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.use_bf16(False) is False
    assert precision.use_bf16(True, "cuda") is True  # CUDA is the caller's business
    assert precision.resolve_mixed_precision("fp16", "cpu") == "fp16"
    assert precision.resolve_mixed_precision("no", "cpu") == "no"


def test_ppo_accelerator_follows_the_cpu(cpu_bf16):
    from rl_finetune.ppo.distributed import make_accelerator

    cpu_bf16("0")
    assert make_accelerator("bf16").mixed_precision == "no"
    cpu_bf16("1")
    assert make_accelerator("bf16").mixed_precision == "bf16"
