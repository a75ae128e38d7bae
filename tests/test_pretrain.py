"""Stage 1: pretraining the small base policy (smoke profile: a tiny GPT-2 in seconds)."""

from __future__ import annotations

import math

import pytest
import torch

from base_policy.pretrain import (
    PretrainConfig,
    budget_progress,
    detokenize_rt,
    lr_at,
    save_base_policy,
    save_policy_folder,
    train,
)
from base_policy.registry import weights_fingerprint
from common.config import load_config
from common.errors import UserError
from common.imdb import DataConfig

SMOKE = "configs/smoke.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny pretraining run on the smoke profile, shared by the tests below."""
    from tests.conftest import SMOKE as smoke_path

    root = tmp_path_factory.mktemp("pretrain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_ARTIFACTS", str(root / "artifacts"))
        mp.setenv("RLHF_CONFIG", str(smoke_path))
        cfg = load_config(PretrainConfig, "pretrain")
        result = train(cfg, load_config(DataConfig, "data"), progress=False)
        folder = save_base_policy(result)
    return cfg, result, folder


def test_tiny_pretraining_lowers_the_loss(trained):
    cfg, result, _ = trained
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert len(result.losses) == cfg.max_steps
    assert last < first - 0.5, (first, last)
    # better than a uniform guess over the vocabulary, on held-out text
    assert result.metrics["val_loss"] < math.log(cfg.vocab_size)
    assert result.metrics["val_perplexity"] == pytest.approx(math.exp(result.metrics["val_loss"]))
    assert result.metrics["tokens_seen"] == cfg.max_steps * cfg.batch_size * cfg.block_size
    assert len(result.metrics["samples"]) == len(cfg.sample_prompts)


def test_saved_folder_loads_with_auto_classes_and_generates(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, folder = trained
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "metrics.json"):
        assert (folder / name).is_file(), name
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == model.config.eos_token_id
    ids = tok("This movie was", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tok.decode(out[0]), str)


def test_interrupted_save_leaves_the_previous_model_intact(trained, tmp_path):
    _, result, _ = trained
    folder = tmp_path / "base_policy"
    save_policy_folder(folder, result.model, result.tokenizer, {"val_loss": 1.0})
    before = weights_fingerprint(folder)

    class Crash(RuntimeError):
        pass

    other = type(result.model)(result.model.config)  # different (random) weights

    def broken_save(path, **kwargs):
        (path / "model.safetensors").write_bytes(b"half a model")
        raise Crash("disk full")

    other.save_pretrained = broken_save
    with pytest.raises(Crash):
        save_policy_folder(folder, other, result.tokenizer, {"val_loss": 2.0})
    assert weights_fingerprint(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base_policy"]  # no temporary folder left


def test_resume_continues_from_the_checkpoint(smoke_env):
    base = {
        "max_steps": 6,
        "checkpoint_every": 3,
        "eval_tokens": 512,
        "sample_prompts": ["A"],
        "sample_max_new_tokens": 2,
    }
    cfg = load_config(PretrainConfig, "pretrain", overrides=base)
    data = load_config(DataConfig, "data")
    first = train(cfg, data, progress=False)
    assert (smoke_env["artifacts"] / "checkpoints" / "pretrain" / "last.pt").is_file()
    more = load_config(PretrainConfig, "pretrain", overrides={**base, "max_steps": 9})
    resumed = train(more, data, resume=True, progress=False)
    assert resumed.metrics["steps"] == 9
    assert resumed.losses[:6] == first.losses[:6]
    wider = load_config(PretrainConfig, "pretrain", overrides={**base, "n_embd": 32})
    with pytest.raises(UserError, match="resume"):
        train(wider, data, resume=True, progress=False)


class _NotAPlainValue:
    """Any class instance: a checkpoint holding one needs code to unpickle, which --resume refuses."""


def test_resume_refuses_a_checkpoint_that_is_not_plain_data(smoke_env):
    import torch

    from base_policy.pretrain import checkpoint_dir, load_checkpoint

    cfg = load_config(PretrainConfig, "pretrain", overrides={"max_steps": 2})
    folder = checkpoint_dir()
    folder.mkdir(parents=True)
    torch.save({"arch": cfg.arch, "payload": _NotAPlainValue()}, folder / "last.pt")
    with pytest.raises(UserError, match="not a checkpoint this program can read") as err:
        load_checkpoint(folder, cfg)
    assert "without --resume" in str(err.value)
    (folder / "last.pt").write_bytes(b"half a file")  # a truncated write
    with pytest.raises(UserError, match="not a checkpoint this program can read"):
        load_checkpoint(folder, cfg)


def test_resume_without_checkpoint_names_the_fix(smoke_env):
    cfg = load_config(PretrainConfig, "pretrain", overrides={"max_steps": 2})
    with pytest.raises(UserError, match="without --resume"):
        train(cfg, load_config(DataConfig, "data"), resume=True, progress=False)


def test_bpe_tokenizer_is_gpt2_compatible(tmp_path):
    from transformers import AutoTokenizer

    from base_policy.tokenizer import train_bpe

    texts = ["This movie was great, I loved it!", "A terrible film. The worst acting ever."] * 50
    tok = train_bpe(texts, vocab_size=300)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert len(again) == 300
    assert again.eos_token == again.bos_token == "<|endoftext|>" and again.eos_token_id == 0
    text = "Ünïcode café: 10/10 👍"
    assert again.decode(again.encode(text)) == text  # byte-level: nothing is unknown


def test_one_prompt_tokeniser_for_the_queue_and_ppo(caplog):
    """Generation for the labelling queue and PPO's rollouts tokenise prompts the same way:
    no special tokens added, cut from the left (with a warning), an empty prompt starts a fresh text."""
    from base_policy.generate import encode_prompts
    from common.assets import gpt2_tokenizer
    from rl_finetune.ppo.rollout import tokenize_prompts

    assert tokenize_prompts is encode_prompts
    tok = gpt2_tokenizer()
    plain = tok("I watched this film last night", add_special_tokens=False)["input_ids"]
    with caplog.at_level("WARNING"):
        ids = encode_prompts(tok, ["This movie", "", "I watched this film last night"], 4)
    assert ids[0] == tok.encode("This movie", add_special_tokens=False) and tok.eos_token_id not in ids[0]
    assert ids[1] == [tok.eos_token_id]
    assert len(plain) > 4 and ids[2] == plain[-4:]
    assert "truncated from the left" in caplog.text


def test_learning_rate_schedule():
    cfg = PretrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100, max_minutes=None)
    assert lr_at(0.0, 0, cfg) == pytest.approx(1e-4)
    assert lr_at(0.1, 9, cfg) == pytest.approx(1e-3)
    assert lr_at(0.5, 50, cfg) == pytest.approx(0.55e-3)
    assert lr_at(1.0, 100, cfg) == pytest.approx(1e-4)
    # the budget is spent by steps or by time, whichever comes first
    both = PretrainConfig(max_steps=100, max_minutes=1.0)
    assert budget_progress(10, 30.0, both) == pytest.approx(0.5)
    assert budget_progress(80, 6.0, both) == pytest.approx(0.8)


def test_config_validation():
    with pytest.raises(UserError, match="budget"):
        PretrainConfig(max_minutes=None, max_steps=None).validate()
    with pytest.raises(UserError, match="divisible"):
        PretrainConfig(n_embd=100, n_head=3).validate()
    with pytest.raises(UserError, match="block_size"):
        PretrainConfig(n_ctx=64, block_size=128).validate()


def test_rotten_tomatoes_sentences_are_detokenized():
    assert (
        detokenize_rt("it's a mess , really . i liked the ( brief ) score though !")
        == "It's a mess, really. I liked the (brief) score though!"
    )


def test_cli_pretrain_saves_and_registers(smoke_env, capsys):
    import db
    from base_policy.__main__ import main

    assert (
        main(
            [
                "pretrain",
                "--no-progress",
                "--set",
                "max_steps=4",
                "--set",
                "eval_tokens=512",
                "--set",
                "sample_max_new_tokens=2",
            ]
        )
        == 0
    )
    folder = smoke_env["artifacts"] / "base_policy"
    assert (folder / "model.safetensors").is_file()
    versions = db.list_model_versions(db.connect(smoke_env["db_url"]), kind="policy")
    assert [v.name for v in versions] == ["base_policy"]
    assert versions[0].path == str(folder.resolve())
    assert versions[0].metrics["weights_sha256"] == weights_fingerprint(folder)
    assert "val_loss" in versions[0].metrics
    assert "registered as policy version" in capsys.readouterr().out


def test_cli_bad_config_exits_2(smoke_env, capsys):
    from base_policy.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--set", "n_head=3"])
    assert exc.value.code == 2
    assert "n_head" in capsys.readouterr().err


def test_weights_are_finite(trained):
    _, result, _ = trained
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_init_from_a_saved_model_with_zero_steps_saves_it_as_is(smoke_env, tiny_policy_dir):
    from base_policy.loading import load_policy

    cfg = load_config(
        PretrainConfig,
        "pretrain",
        overrides={
            "init_from": str(tiny_policy_dir),
            "max_steps": 0,
            "eval_tokens": 256,
            "sample_prompts": ["Hi"],
            "sample_max_new_tokens": 2,
        },
    )
    result = train(cfg, load_config(DataConfig, "data"), progress=False)
    folder = save_base_policy(result)
    assert result.metrics["steps"] == 0 and result.metrics["vocab_size"] == 50257
    original, _ = load_policy(tiny_policy_dir)
    saved, tok = load_policy(folder)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), saved.state_dict().values()))
    assert tok.padding_side == "left" and tok.pad_token == tok.eos_token


@pytest.mark.parametrize("curriculum", ["short", "rt"])
def test_curriculum_phase_keeps_tokens_per_step(smoke_env, curriculum):
    cfg = load_config(
        PretrainConfig,
        "pretrain",
        overrides={
            "max_steps": 4,
            "curriculum": curriculum,
            "curriculum_fraction": 0.5,
            "curriculum_block": 16,
            "eval_tokens": 256,
            "sample_prompts": ["Hi"],
            "sample_max_new_tokens": 2,
        },
    )
    result = train(cfg, load_config(DataConfig, "data"), progress=False)
    assert result.metrics["steps"] == 4
    assert result.metrics["tokens_seen"] == 4 * cfg.batch_size * cfg.block_size


def test_compile_failure_falls_back_to_eager(smoke_env, monkeypatch, caplog):
    """A machine where torch.compile breaks (no working compiler, an inductor bug) still trains."""

    def broken_compile(model, *args, **kwargs):
        def fwd(*a, **k):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error")

        return fwd

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = load_config(
        PretrainConfig,
        "pretrain",
        overrides={
            "max_steps": 3,
            "compile": True,
            "eval_tokens": 256,
            "sample_prompts": ["Hi"],
            "sample_max_new_tokens": 2,
        },
    )
    with caplog.at_level("WARNING"):
        result = train(cfg, load_config(DataConfig, "data"), progress=False)
    assert result.metrics["steps"] == 3 and all(math.isfinite(x) for x in result.losses)
    assert "torch.compile failed" in caplog.text and "pretrain.compile=false" in caplog.text


def test_compile_without_a_cxx_compiler_warns_and_trains_eager(monkeypatch, caplog):
    import shutil

    from base_policy.pretrain import maybe_compile

    model = torch.nn.Linear(2, 2)
    assert maybe_compile(model, False) is model
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with caplog.at_level("WARNING"):
        assert maybe_compile(model, True) is model
    assert "no C++ compiler" in caplog.text and "apt-get install g++" in caplog.text


@pytest.mark.slow
def test_real_torch_compile_trains(smoke_env):
    cfg = load_config(
        PretrainConfig,
        "pretrain",
        overrides={
            "max_steps": 5,
            "compile": True,
            "eval_tokens": 256,
            "sample_prompts": ["Hi"],
            "sample_max_new_tokens": 2,
        },
    )
    result = train(cfg, load_config(DataConfig, "data"), progress=False)
    assert result.metrics["steps"] == 5 and result.losses[-1] < result.losses[0]


def test_evaluation_runs_without_autograd(trained):
    import numpy as np

    from base_policy.pretrain import evaluate

    cfg, result, _ = trained
    seen = []
    handle = result.model.register_forward_hook(lambda module, args, out: seen.append(torch.is_grad_enabled()))
    try:
        stream = (np.arange(4 * cfg.block_size) % result.model.config.vocab_size).astype(np.int64)
        ev = evaluate(result.model, stream, cfg)
    finally:
        handle.remove()
    assert seen and not any(seen) and math.isfinite(ev["val_loss"])
