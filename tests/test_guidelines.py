"""The labelling guidelines: the file, its loader, the CLI and the app's Guidelines page (AppTest)."""

from __future__ import annotations

import pytest

from common.errors import UserError
from common.guidelines import DEFAULT_FILE, guidelines_path, load_guidelines, main

pytest.importorskip("streamlit")

from tests.support import harness


def test_default_file_defines_good_and_has_examples_of_each_kind():
    text = load_guidelines()
    assert guidelines_path() == DEFAULT_FILE
    for part in ("stays about the film", "fluent English", "### Good", "off the topic", "not fluent English"):
        assert part in text


@pytest.mark.parametrize("content", [None, "", "  \n\n"])
def test_missing_or_empty_file_is_one_clear_error(tmp_path, monkeypatch, capsys, content):
    path = tmp_path / "g.md"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match="does not exist" if content is None else "is empty"):
        load_guidelines(path)
    monkeypatch.setenv("RLHF_GUIDELINES", str(path))
    assert guidelines_path() == path
    with pytest.raises(SystemExit) as exit_info:
        main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and str(path) in err


def test_cli_prints_the_guidelines(capsys, tmp_path):
    path = tmp_path / "g.md"
    path.write_text("# Ours\n\nGood = short.\n")
    assert main(["--file", str(path)]) == 0
    assert capsys.readouterr().out == "# Ours\n\nGood = short.\n"


def test_page_renders_the_guidelines_with_examples(smoke_env):
    at = harness.apptest_signed_in("alice", timeout=60)
    at.switch_page("views/guidelines.py").run()
    assert not at.exception, at.exception
    shown = "\n".join(m.value for m in at.markdown)
    assert "Labelling guidelines" in shown and "### Good" in shown and "word salad" in shown.lower()
    assert any("guidelines.md" in c.value for c in at.caption)


def test_page_with_a_missing_file_shows_a_message_not_a_traceback(smoke_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_GUIDELINES", str(tmp_path / "nowhere.md"))
    at = harness.apptest_signed_in("alice", timeout=60)
    at.switch_page("views/guidelines.py").run()
    assert not at.exception, at.exception
    assert any("does not exist" in w.value for w in at.warning)
    (tmp_path / "nowhere.md").write_text("")
    at.switch_page("views/guidelines.py").run()
    assert not at.exception and any("is empty" in w.value for w in at.warning)
