"""``python -m rl_finetune analyse``: what RL changed inside the model, on a tiny GPT-2 and a tiny Llama.

The tuned copy has only its top block perturbed (as PPO with frozen lower blocks would), so the
logit lens must agree below it, the attribution terms must add up to each model's own logit
difference, and patching every block must recover the whole gap.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from common.assets import gpt2_tokenizer
from rl_finetune.__main__ import main as rl_main
from rl_finetune.analysis import analyse
from rl_finetune.analysis.hooks import parts, run_with_cache
from rl_finetune.analysis.measures import decode, from_the_end, patched_diff, sweep, weight_change
from rl_finetune.analysis.report import load_results, where
from rl_finetune.analysis.reward import occlusion, reward_attribution
from tests.test_hydra import tiny_gpt2, tiny_llama

PROBES = ["This movie was really", "I thought this film was"]


@pytest.fixture(scope="module")
def tok():
    t = gpt2_tokenizer()
    t.pad_token = t.eos_token
    return t


def pair(make, tok):
    torch.manual_seed(0)
    base = make(vocab_size=len(tok)).eval()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for w in parts(tuned).blocks[-1].parameters():
            w.add_(0.3 * torch.randn_like(w))
    return base, tuned


@pytest.fixture(scope="module", params=[tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def analysed(request, tok, tmp_path_factory, tiny_reward_dir):
    base, tuned = pair(request.param, tok)
    out = tmp_path_factory.mktemp("analysis") / "report"
    res = analyse(
        base,
        tuned,
        tok,
        out,
        names=("base", "tuned"),
        probes=PROBES,
        prompts=["A great film", "I hated"],
        samples=1,
        max_new_tokens=3,
        reward=tiny_reward_dir,
    )
    return base, tuned, res, out


def test_the_report_is_written(analysed):
    *_, res, out = analysed
    text = (out / "report.md").read_text()
    for section in (
        "## Headline",
        "## 1. Behaviour",
        "## 2. Over many prompts",
        "## 3. Logit lens",
        "## 4. Direct logit attribution",
        "## 5. Activation patching",
        "## 6. Weight change",
        "### Per position, over the 2 probes",
        "## 7. The reward model",
    ):
        assert section in text
    for png in ("lens", "attribution", "heads", "patching", "positions", "weights", "stats", "reward_tokens"):
        assert (out / f"{png}.png").stat().st_size > 0
    assert "(OK)" in text
    assert load_results(out)["headline"] == res["headline"]  # the app page shows it from results.json
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # written atomically, nothing left over


def test_logit_lens_is_identical_below_the_perturbed_block(analysed):
    *_, res, _ = analysed
    n = res["n_layers"]
    for probe in res["probes"]:
        lens = probe["lens"]
        assert lens["kl"][:n] == pytest.approx([0.0] * n, abs=1e-7)  # embeddings .. after block n-2
        assert lens["base"][:n] == pytest.approx(lens["tuned"][:n], abs=1e-5)
        assert lens["kl"][n] > 1e-6 and lens["resid"][n] > 1e-6  # the perturbed top block
        assert lens["resid"][:n] == [0.0] * n
        assert lens["base"][n] == pytest.approx(probe["ld"][0], abs=1e-4)
        assert lens["tuned"][n] == pytest.approx(probe["ld"][1], abs=1e-4)


def test_logit_lens_at_the_last_layer_is_the_models_logits(analysed, tok):
    base, tuned, *_ = analysed
    ids = torch.tensor([tok(PROBES[0]).input_ids])
    for model in (base, tuned):
        p = parts(model)
        cache = run_with_cache(model, p, ids)
        with torch.no_grad():
            torch.testing.assert_close(decode(p, cache.resid[-1]), cache.logits, atol=1e-4, rtol=1e-4)


def test_attributions_add_up_to_each_models_own_logit_difference(analysed):
    *_, res, _ = analysed
    for probe in res["probes"]:
        for model in ("base", "tuned"):
            a = probe["attr"][model]
            assert abs(a.total - a.actual) < 1e-4
            assert a.head_error < 1e-4  # the heads add up to the attention output
            assert a.embed + a.attn.sum() + a.mlp.sum() + a.const == pytest.approx(a.actual, abs=1e-4)
    assert res["stats"]["max_error"] < 1e-4


def test_patching_every_block_recovers_the_gap_and_none_recovers_nothing(analysed):
    *_, res, _ = analysed
    pr = res["patch"]
    assert pr["all"] == pytest.approx(1.0, abs=1e-4)
    assert pr["none"] == pytest.approx(0.0, abs=1e-6)
    n = res["n_layers"]
    assert pr["resid"][n - 1] == pytest.approx(1.0, abs=1e-4)  # the top block's output at the last position
    assert np.allclose(pr["resid"][: n - 1], 0.0, atol=1e-5)  # below it nothing differs
    assert np.allclose(pr["grid"][: n - 1], 0.0, atol=1e-5)
    assert set(pr["heads"]) == {n - 1}  # per-head patching on the block that moved


def test_patching_per_position_and_per_head_finds_only_the_top_block_at_the_last_position(analysed):
    *_, res, _ = analysed
    n, h = res["n_layers"], res["n_heads"]
    pr = res["patch"]
    seq = len(res["patch_tokens"])
    for key in ("grid", "grid_attn", "grid_mlp"):
        assert pr[key].shape == (n, seq)
        assert np.allclose(pr[key][: n - 1], 0.0, atol=1e-5)  # untouched blocks: nothing to patch in
        assert np.allclose(pr[key][n - 1, :-1], 0.0, atol=1e-5)  # the top block at earlier positions: not read
    assert pr["grid"][n - 1, -1] == pytest.approx(1.0, abs=1e-4)
    assert pr["head_grid"][n - 1].shape == (h, seq)
    assert np.allclose(pr["head_grid"][n - 1][:, :-1], 0.0, atol=1e-5)
    assert np.abs(pr["head_grid"][n - 1][:, -1]).max() > 1e-3  # heads of the moved block at the last position do
    pooled = res["patch_probes"]
    assert pooled["n"] == len(PROBES) == pooled["with_gap"]
    assert pooled["from_end"]["grid"].shape[0] == n and pooled["from_end"]["grid"].shape[1] >= seq
    assert pooled["from_end"]["grid"][n - 1, -1] == pytest.approx(1.0, abs=1e-4)


def test_batched_patches_equal_single_patches(analysed, tok):
    """The sweep patches one (block, position, head) per batch row; each row must equal that patch alone."""
    base, tuned, res, _ = analysed
    pb, pt = parts(base), parts(tuned)
    pos, neg = tok.encode(" good"), tok.encode(" bad")
    ids = torch.tensor([tok(PROBES[1]).input_ids])
    source = run_with_cache(tuned, pt, ids)
    n, seq = pb.n_layers, ids.shape[1]
    for kind, head in (("resid", None), ("attn", None), ("mlp", None), ("head", 1)):
        rows = [(layer, t, head) for layer in range(n) for t in range(seq)]
        batched = sweep(base, pb, source, ids, pos, neg, kind=kind, rows=rows)
        single = [
            patched_diff(base, pb, source, ids, pos, neg, kind=kind, layers=[layer], positions=[t], head=head)
            for layer, t, _ in rows
        ]
        np.testing.assert_allclose(batched, single, atol=1e-4)


def test_grids_of_prompts_of_different_lengths_are_aligned_at_the_last_position():
    short = np.array([[0.0, 1.0]])  # one block, two positions
    long = np.array([[0.5, 0.0, 0.5]])
    pooled = from_the_end([short, long, np.full((1, 4), np.nan)], [1.0, -3.0, 0.0])  # the third has no gap
    np.testing.assert_allclose(pooled[0, 1:], [0.5, (0 * 1 + 0 * 3) / 4, (1 * 1 + 0.5 * 3) / 4])
    assert np.isnan(pooled[0, 0])  # only the prompt without a gap reaches that far


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_the_headline_says_where_the_change_lives(make, tok, tmp_path):
    base, tuned = pair(make, tok)
    res = analyse(base, tuned, tok, tmp_path / "r", names=("b", "t"), probes=PROBES, samples=1, max_new_tokens=2)
    n = res["n_layers"]
    where = next(line for line in res["headline"] if line.startswith("- Where"))
    assert "at the last position only" in where
    assert f"block {n - 1} recovers 100%" in where
    assert "no single block output recovers more than 0%" in where
    assert f"- Weights moved in block {n - 1}; unchanged (frozen) in 0-{n - 2}." in res["headline"]


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_identical_models_have_the_change_nowhere(make, tok, tmp_path):
    torch.manual_seed(0)
    base = make(vocab_size=len(tok)).eval()
    res = analyse(
        base, copy.deepcopy(base), tok, tmp_path / "r", names=("b", "t"), probes=PROBES, samples=1, max_new_tokens=2
    )
    lines = res["headline"]
    assert any(line.startswith("- Where: nowhere") for line in lines)
    assert "- Logit lens: the residual streams are identical at every layer." in lines
    assert "- Weights: no block changed." in lines
    assert np.isnan(res["patch"]["grid"]).all() and np.isnan(res["patch"]["all"])
    assert "## 5. Activation patching" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "r" / "positions.png").stat().st_size > 0


def test_weight_change_is_zero_for_frozen_blocks_and_identical_models(analysed):
    base, tuned, res, _ = analysed
    n = res["n_layers"]
    for i in range(n - 1):
        assert max(res["weights"][f"layer {i}"].values()) == 0.0
    assert min(res["weights"][f"layer {n - 1}"].values()) > 0.0
    same = weight_change(base, copy.deepcopy(base), parts(base))
    assert all(v == 0.0 for row in same.values() for v in row.values())


# ------------------------------------------------------------------------------ the reward model's tokens


@pytest.fixture(scope="module")
def reward_tok():
    from transformers import AutoTokenizer

    from common.assets import minilm_dir

    return AutoTokenizer.from_pretrained(minilm_dir())


def test_occlusion_finds_the_tokens_a_score_counts(reward_tok):
    def count_fn(texts):  # +1 per "good", -1 per "bad": only those two tokens matter
        return torch.tensor(
            [t.lower().split().count("good") - t.lower().split().count("bad") for t in texts], dtype=torch.float
        )

    ts = occlusion(count_fn, reward_tok, "A good film , not bad at all")
    assert ts.tokens == ["A", "good", "film", ",", "not", "bad", "at", "all"]
    assert ts.score == 0.0
    assert ts.deltas == [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0]
    assert ts.top(3, sign=1) == [("good", 1.0)] and ts.top(3, sign=-1) == [("bad", -1.0)]
    assert [ts.text[a:b] for a, b in ts.spans] == ts.tokens and not ts.truncated
    few = occlusion(count_fn, reward_tok, "A good film , not bad at all", max_tokens=3)
    assert few.tokens == ["A", "good", "film"] and few.truncated


def test_reward_attribution_is_the_score_change_with_each_token_masked(tiny_reward_dir, reward_tok):
    from reward_training import load_reward_fn

    text = "This movie was really dreadful."
    rw = reward_attribution(tiny_reward_dir, [text])
    ex = rw["examples"][0]
    pieces = [t.removeprefix("##") for t in reward_tok.tokenize(text)]  # the reward model's own (uncased) pieces
    assert [t.lower() for t in ex.tokens] == pieces
    score = load_reward_fn(tiny_reward_dir, kind="logit_diff", bf16=False)
    masked = [text[:a] + reward_tok.mask_token + text[b:] for a, b in ex.spans]
    expected = float(score([text])[0]) - score(masked).numpy()
    np.testing.assert_allclose(ex.deltas, expected, atol=1e-6)
    assert ex.score == pytest.approx(float(score([text])[0]), abs=1e-6)


def test_the_report_shows_the_reward_models_tokens(analysed):
    *_, res, out = analysed
    rw = res["reward"]
    assert len(rw["examples"]) == 2 * len(PROBES)  # base and tuned greedy text of each probe
    first = res["probes"][0]
    assert rw["examples"][0].text == first["prompt"] + first["behaviour"]["base"]["greedy"]
    saved = load_results(out)["reward"]["examples"][0]
    assert saved["tokens"] == rw["examples"][0].tokens and len(saved["deltas"]) == len(saved["tokens"])


# ------------------------------------------------------------------------------ the command


@pytest.fixture(autouse=True)
def _artifacts(tmp_path, monkeypatch):
    """No reward model is found by default: RLHF_ARTIFACTS is an empty temporary folder."""
    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


@pytest.fixture(scope="module")
def folders(tok, tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    out = {}
    for name, make in (("gpt2", tiny_gpt2), ("llama", tiny_llama)):
        base, tuned = pair(make, tok)
        for role, model in (("base", base), ("tuned", tuned)):
            model.save_pretrained(root / f"{name}-{role}")
            tok.save_pretrained(root / f"{name}-{role}")
            out[f"{name}-{role}"] = root / f"{name}-{role}"
    return out


def test_the_command_writes_the_report(folders, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A great film\nI hated it\nThe plot\n")
    out = tmp_path / "out"
    argv = [
        "analyse",
        str(folders["gpt2-base"]),
        str(folders["gpt2-tuned"]),
        "--out",
        str(out),
        "--prompts",
        str(prompts),
        "-n",
        "2",
        "--probe",
        PROBES[0],
        "--samples",
        "1",
        "--max-new-tokens",
        "2",
    ]
    assert rl_main(argv) == 0
    text = (out / "report.md").read_text()
    assert "Over 2 prompts" in text and "## 7. The reward model" not in text  # no reward model anywhere
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed and "- Where (patching" in printed


def test_the_command_uses_the_latest_reward_model(folders, tiny_reward_dir, _artifacts, tmp_path):
    shutil.copytree(tiny_reward_dir, _artifacts / "reward_models" / "rm1")
    (_artifacts / "reward_models" / "latest").write_text("rm1\n")
    out = tmp_path / "out"
    argv = ["analyse", str(folders["llama-base"]), str(folders["llama-tuned"]), "--out", str(out), "-n", "0"]
    assert rl_main([*argv, "--probe", PROBES[0], "--samples", "1", "--max-new-tokens", "2"]) == 0
    assert "## 7. The reward model" in (out / "report.md").read_text()
    assert load_results(out)["reward"]["model_dir"] == str((_artifacts / "reward_models" / "rm1").resolve())


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        rl_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Fix:" in err
    return err


def test_a_missing_folder_is_refused_in_one_line(folders, tmp_path, capsys):
    err = _refused(["analyse", str(folders["gpt2-base"]), str(tmp_path / "nope"), "-n", "0"], capsys)
    assert "does not exist" in err


def test_two_families_are_refused_in_one_line(folders, capsys):
    err = _refused(["analyse", str(folders["gpt2-base"]), str(folders["llama-tuned"]), "-n", "0"], capsys)
    assert "different architectures" in err and "model_type" in err


def test_a_reward_model_folder_is_refused(folders, tmp_path, capsys):
    fake = tmp_path / "reward"
    fake.mkdir()
    (fake / "config.json").write_text(
        '{"architectures": ["DistilBertForSequenceClassification"], "model_type": "distilbert"}'
    )
    err = _refused(["analyse", str(folders["gpt2-base"]), str(fake), "-n", "0"], capsys)
    assert "not a causal language model" in err


def test_an_empty_probe_and_a_multi_token_word_are_refused(folders, tmp_path, capsys):
    base = ["analyse", str(folders["gpt2-base"]), str(folders["gpt2-tuned"]), "-n", "0", "--out", str(tmp_path / "o")]
    assert "tokenises to nothing" in _refused([*base, "--probe", "   "], capsys)
    assert "not one" in _refused([*base, "--positive", " antidisestablishmentarianism"], capsys)


def test_different_vocabulary_sizes_are_refused_in_one_line(folders, tok, tmp_path, capsys):
    bigger = tmp_path / "bigger"
    tiny_gpt2(vocab_size=len(tok) + 8).save_pretrained(bigger)
    tok.save_pretrained(bigger)
    err = _refused(["analyse", str(folders["gpt2-base"]), str(bigger), "-n", "0"], capsys)
    assert "different architectures" in err and "vocab_size" in err


def test_different_vocabularies_of_one_size_are_refused_in_one_line(folders, tok, tmp_path, capsys):
    other = tmp_path / "other-tokens"
    shutil.copytree(folders["gpt2-tuned"], other)
    changed = copy.deepcopy(tok)
    changed.add_tokens(["<extra-token>"])
    changed.save_pretrained(other)
    err = _refused(["analyse", str(folders["gpt2-base"]), str(other), "-n", "0"], capsys)
    assert "different vocabularies" in err and "same tokenizer" in err


def test_a_model_without_its_lm_head_is_refused(folders, tmp_path, capsys):
    from transformers import GPT2Config, GPT2Model

    trunk = tmp_path / "trunk"
    GPT2Model(GPT2Config(n_embd=32, n_layer=3, n_head=2, n_positions=64)).save_pretrained(trunk)
    err = _refused(["analyse", str(folders["gpt2-base"]), str(trunk), "-n", "0"], capsys)
    assert "GPT2Model, not a causal language model" in err


def test_a_policy_given_as_the_reward_model_is_refused(folders, tmp_path, capsys):
    argv = ["analyse", str(folders["gpt2-base"]), str(folders["gpt2-tuned"]), "-n", "0", "--out", str(tmp_path / "o")]
    err = _refused([*argv, "--reward", str(folders["gpt2-base"])], capsys)
    assert "not a reward model" in err
    assert not (tmp_path / "o").exists()


def test_weights_that_moved_without_a_logit_gap_are_named_but_not_localised():
    nan = np.full((2, 3), np.nan)
    res = {
        "n_layers": 2,
        "weights": {"layer 0": {"attn": 0.0, "mlp": 0.0}, "layer 1": {"attn": 0.0, "mlp": 1e-3}},
        "patch_probes": {"n": 2, "with_gap": 0, "from_end": {"grid": nan}, "head_from_end": {}},
    }
    assert where(res) == (
        "- Where: weights moved in block 1, but no probe's logit difference changed (gap < 1e-06), "
        "so patching has nothing to localise."
    )


def test_the_per_position_table_counts_the_probes_that_reach_each_position(analysed, tok):
    *_, res, out = analysed
    lengths = [len(tok(p).input_ids) for p in PROBES]
    reach = res["patch_probes"]["reach"]
    assert reach == [sum(n > k for n in lengths) for k in range(max(lengths))]
    assert "| position | probes | block output |" in (out / "report.md").read_text()
