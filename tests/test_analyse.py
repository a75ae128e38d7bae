"""``python -m rl_finetune analyse``: what RL changed inside the model, on a tiny GPT-2 and a tiny Llama.

The tuned copy has only its top block perturbed (as PPO with frozen lower blocks would), so the
logit lens must agree below it, the attribution terms must add up to each model's own logit
difference, and patching every block must recover the whole gap.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from common.assets import gpt2_tokenizer
from rl_finetune.__main__ import main as rl_main
from rl_finetune.analysis import analyse
from rl_finetune.analysis.hooks import parts, run_with_cache
from rl_finetune.analysis.measures import decode, weight_change
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
def analysed(request, tok, tmp_path_factory):
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
    ):
        assert section in text
    for png in ("lens", "attribution", "heads", "patching", "weights", "stats"):
        assert (out / f"{png}.png").stat().st_size > 0
    assert "(OK)" in text
    assert (out / "results.json").is_file()
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


def test_weight_change_is_zero_for_frozen_blocks_and_identical_models(analysed):
    base, tuned, res, _ = analysed
    n = res["n_layers"]
    for i in range(n - 1):
        assert max(res["weights"][f"layer {i}"].values()) == 0.0
    assert min(res["weights"][f"layer {n - 1}"].values()) > 0.0
    same = weight_change(base, copy.deepcopy(base), parts(base))
    assert all(v == 0.0 for row in same.values() for v in row.values())


# ------------------------------------------------------------------------------ the command


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
    assert "Over 2 prompts" in (out / "report.md").read_text()
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out


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
