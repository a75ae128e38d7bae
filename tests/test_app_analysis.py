"""The analysis page, headless (Streamlit's AppTest): the latest ``analyse`` report's headline, figures and
tables, with the report's model text shown as plain text."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
import torch
from streamlit.testing.v1 import AppTest

from common.assets import gpt2_tokenizer
from rl_finetune.analysis import analyse
from rl_finetune.analysis.hooks import parts
from tests.test_hydra import tiny_gpt2

PAGE = str(Path(__file__).resolve().parent.parent / "labeling_app" / "views" / "analysis.py")
NASTY = "<script>alert('x')</script> **bold** [link](http://x) # not a heading"


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_reward_dir) -> Path:
    """A real report of a tiny GPT-2 whose top block moved, with a probe full of markup."""
    tok = gpt2_tokenizer()
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    base = tiny_gpt2(vocab_size=len(tok)).eval()
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        for w in parts(tuned).blocks[-1].parameters():
            w.add_(0.3 * torch.randn_like(w))
    out = tmp_path_factory.mktemp("reports") / "tuned-vs-base"
    analyse(
        base,
        tuned,
        tok,
        out,
        names=("base-policy", "tuned-policy"),
        probes=[NASTY, "This movie was really"],
        prompts=["A great film", "I hated it"],
        samples=1,
        max_new_tokens=2,
        reward=tiny_reward_dir,
    )
    return out


def run_page(artifacts: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("RLHF_ARTIFACTS", str(artifacts))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def install(report: Path, artifacts: Path, name: str) -> Path:
    dest = artifacts / "analysis" / name
    shutil.copytree(report, dest)
    return dest


def texts(at: AppTest) -> str:
    return "\n".join(t.value for t in at.text)


def test_without_a_report_the_page_says_how_to_write_one(tmp_path, monkeypatch):
    at = run_page(tmp_path / "artifacts", monkeypatch)
    assert "No analysis report yet" in at.info[0].value
    assert "make analyse BASE=" in texts(at)
    assert not at.image


def test_the_latest_report_is_shown_with_its_headline_figures_and_tables(report, tmp_path, monkeypatch):
    install(report, tmp_path / "artifacts", "run1")
    at = run_page(tmp_path / "artifacts", monkeypatch)
    shown = texts(at)
    headline = json.loads((report / "results.json").read_text())["headline"]
    assert any(line.startswith("- Where (patching") for line in headline)
    for line in headline:
        assert line in shown
    assert "tuned: tuned-policy" in shown
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert len(pngs) == 8 and len(at.image) == len(pngs)  # reward_tokens.png and positions.png among them
    frames = [df.value for df in at.dataframe]
    assert any("block output" in f.columns for f in frames)  # the patching table
    assert any("Δ score" in f.columns for f in frames)  # the reward model's tokens
    patch = next(f for f in frames if "block output" in f.columns)
    assert patch["block output"].iloc[-1] == "100%"  # the moved top block recovers the gap


def test_model_text_is_shown_as_plain_text_never_as_markdown(report, tmp_path, monkeypatch):
    install(report, tmp_path / "artifacts", "run1")
    at = run_page(tmp_path / "artifacts", monkeypatch)
    assert f"prompt: {NASTY!r}" in texts(at)  # the first probe, literally
    for md in at.markdown:
        assert "<script>" not in md.value and "**bold**" not in md.value
    for cap in at.caption:
        assert "<script>" not in cap.value


def test_the_newest_report_comes_first_and_another_can_be_chosen(report, tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    old = install(report, artifacts, "older")
    res = json.loads((old / "results.json").read_text())
    res["tuned"] = "the-older-policy"
    (old / "results.json").write_text(json.dumps(res))
    os.utime(old / "results.json", (1_000_000, 1_000_000))
    install(report, artifacts, "newer")
    at = run_page(artifacts, monkeypatch)
    box = at.selectbox(key="analysis_report")
    assert box.options == ["newer", "older"]
    assert "tuned: tuned-policy" in texts(at)
    box.set_value(old).run()
    assert not at.exception
    assert "tuned: the-older-policy" in texts(at)


def test_a_damaged_report_gives_a_message_not_a_traceback(tmp_path, monkeypatch):
    broken = tmp_path / "artifacts" / "analysis" / "broken"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text("{not json")
    at = run_page(tmp_path / "artifacts", monkeypatch)
    assert "cannot be read" in at.warning[0].value
    assert not at.image
