"""Profiles and overrides: typed, validated, failing fast with the key and the allowed values."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from common.config import (
    SECTIONS,
    add_config_args,
    describe,
    load_config,
    read_profile,
    split_overrides,
    to_dict,
)
from common.errors import ConfigError
from common.imdb import DataConfig

REPO = Path(__file__).resolve().parent.parent
PROFILES = sorted((REPO / "configs").glob("*.yaml"))


@dataclass
class Inner:
    max_new_tokens: int = 24
    temperature: float = 1.0


@dataclass
class Toy:
    lr: float = 1e-3
    steps: int = 10
    mode: Literal["fast", "slow"] = "fast"
    target: float | None = None
    tags: list[str] = field(default_factory=list)
    gen: Inner = field(default_factory=Inner)
    bf16: bool = True


def write(tmp_path, text):
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_profiles_exist_and_have_only_known_sections():
    names = {p.name for p in PROFILES}
    assert {"default.yaml", "smoke.yaml", "hub.yaml"} <= names
    for p in PROFILES:
        assert set(read_profile(p)) <= set(SECTIONS)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_data_section_of_every_profile_loads(profile):
    cfg = load_config(DataConfig, "data", profile)
    assert cfg.prompt_min_words <= cfg.prompt_max_words


def test_values_and_overrides(tmp_path):
    p = write(tmp_path, "ppo:\n  lr: 1e-4\n  steps: 3\n  gen: {max_new_tokens: 8}\n")
    cfg = load_config(Toy, "ppo", p, overrides=["mode=slow", "gen.temperature=0.7", "tags=[a, b]", "target=6"])
    assert cfg.lr == pytest.approx(1e-4)  # YAML reads 1e-4 as a string; it is converted
    assert cfg.steps == 3 and cfg.mode == "slow" and cfg.tags == ["a", "b"] and cfg.target == 6.0
    assert cfg.gen == Inner(max_new_tokens=8, temperature=0.7)
    assert to_dict(cfg)["gen"]["max_new_tokens"] == 8


def test_missing_section_gives_defaults(tmp_path):
    assert load_config(Toy, "ppo", write(tmp_path, "data: {}\n")) == Toy()


@pytest.mark.parametrize(
    "yaml_text, overrides, message",
    [
        (
            "ppo:\n  stepz: 3\n",
            [],
            r"unknown key 'ppo.stepz'.*allowed keys in ppo: bf16, gen, lr, mode, steps, tags, target",
        ),
        ("ppo:\n  steps: many\n", [], r"ppo.steps='many' has the wrong type \(str\).*takes int"),
        ("ppo:\n  steps: 2.5\n", [], r"ppo.steps=2.5 has the wrong type"),
        ("ppo:\n  mode: medium\n", [], r"ppo.mode='medium' is not allowed.*allowed values: 'fast', 'slow'"),
        ("ppo:\n  bf16: 1\n", [], r"ppo.bf16=1 has the wrong type.*takes bool"),
        ("ppo:\n  gen: {top_k: 0}\n", [], r"unknown key 'ppo.gen.top_k'"),
        ("ppo: {}\n", ["steps"], r"override 'steps' is not KEY=VALUE"),
        ("ppo: {}\n", ["nope=1"], r"unknown key 'ppo.nope'"),
        ("rewardz: {}\n", [], r"unknown section 'rewardz'.*allowed sections: data, pretrain"),
        ("- a list\n", [], r"must be a mapping of sections"),
        ("ppo: [\n", [], r"not valid YAML"),
    ],
)
def test_bad_config_fails_fast_naming_the_key(tmp_path, yaml_text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Toy, "ppo", write(tmp_path, yaml_text), overrides=overrides)


@dataclass
class Moved:
    seed_mode: Literal["train", "skip"] = "train"
    minutes: float | None = None

    RENAMED: ClassVar[dict[str, str]] = {"seed": "seed_mode"}
    REMOVED: ClassVar[dict[str, str]] = {"extra_set": "write minutes: N instead."}


def test_renamed_and_removed_keys_name_what_to_write(tmp_path):
    with pytest.raises(ConfigError, match=r"'ppo.seed' was renamed to 'ppo.seed_mode'.*write seed_mode: 'skip'"):
        load_config(Moved, "ppo", write(tmp_path, "ppo:\n  seed: skip\n"))
    with pytest.raises(ConfigError, match=r"'ppo.extra_set' was removed\. Fix: write minutes: N instead\.") as err:
        load_config(Moved, "ppo", write(tmp_path, "ppo: {}\n"), overrides=["extra_set=[minutes=5]"])
    assert "\n" not in str(err.value)  # one line
    assert load_config(Moved, "ppo", write(tmp_path, "ppo:\n  seed_mode: skip\n")).seed_mode == "skip"


def test_reward_seed_is_now_seed_mode(tmp_path):
    from reward_training.config import RewardConfig

    with pytest.raises(ConfigError, match=r"'reward.seed' was renamed to 'reward.seed_mode'"):
        load_config(RewardConfig, "reward", write(tmp_path, "reward:\n  seed: skip\n"))
    assert load_config(RewardConfig, "reward", REPO / "configs" / "hub.yaml").seed_mode == "skip"


def test_a_profile_read_once_serves_every_section(tmp_path):
    sections = read_profile(write(tmp_path, "ppo:\n  steps: 3\ndata:\n  prompt_min_words: 2\n"))
    assert load_config(Toy, "ppo", sections, overrides=["lr=0.5"]) == Toy(lr=0.5, steps=3)
    assert load_config(DataConfig, "data", sections).prompt_min_words == 2


def test_split_overrides_by_section():
    got = split_overrides(
        ["rounds=2", "ppo.lr=1e-4", "reward.backbone=a=b", "simulate.overlap=3", "demo.seed=1"], "demo"
    )
    assert got == {
        "demo": ["rounds=2", "simulate.overlap=3", "seed=1"],
        "ppo": ["lr=1e-4"],
        "reward": ["backbone=a=b"],
    }


def test_missing_profile_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="RLHF_CONFIG"):
        load_config(Toy, "ppo")


def test_validate_is_called(tmp_path):
    with pytest.raises(ConfigError, match="prompt_min_words"):
        load_config(DataConfig, "data", write(tmp_path, "data:\n  prompt_min_words: 9\n  prompt_max_words: 3\n"))


def test_cli_args_and_describe():
    import argparse

    parser = argparse.ArgumentParser()
    add_config_args(parser)
    ns = parser.parse_args(["--config", "x.yaml", "--set", "a=1", "--set", "b=2"])
    assert ns.config == Path("x.yaml") and ns.overrides == ["a=1", "b=2"]
    text = describe(DataConfig)
    assert all(f.name in text for f in dataclasses.fields(DataConfig))


def test_renamed_ppo_key_names_the_new_one(tmp_path):
    from rl_finetune.ppo.config import PPOConfig

    with pytest.raises(ConfigError, match=r"'ppo.target' was renamed to 'ppo.kl_target'") as info:
        load_config(PPOConfig, "ppo", write(tmp_path, "ppo:\n  target: 6\n"))
    assert "\n" not in str(info.value) and "kl_target" in str(info.value)
    with pytest.raises(ConfigError, match=r"'ppo.batch_size' was renamed to 'ppo.minibatch_size'"):
        load_config(PPOConfig, "ppo", write(tmp_path, "data: {}\n"), overrides=["batch_size=4"])
