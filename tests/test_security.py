"""Security basics (docs/security.md), checked on the source where behaviour tests cannot see it:

- generated text is never rendered as HTML/Markdown by the app;
- the access token is compared in constant time (``hmac.compare_digest``), never with ``==``;
- labeller names are validated before they reach the database;
- SQL only inside ``db/``, always through SQLAlchemy with bound parameters (no SQL strings elsewhere).

The behaviour itself (a ``<script>`` completion shown literally, a wrong token refused, bad names
refused) is tested in ``test_app_labeling.py`` and ``test_bad_inputs.py``.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES_OUTSIDE_DB = [
    "common",
    "base_policy",
    "rl_finetune",
    "reward_training",
    "labeling_app",
    "demo",
    "benchmarks",
    "notebooks",
    "scripts",
]


def sources(folders: list[str]) -> list[tuple[Path, str]]:
    """(path, Python source) of every .py file and every notebook code cell under ``folders``."""
    out = []
    for folder in folders:
        root = REPO / folder
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            out.append((path, path.read_text(encoding="utf-8")))
        for path in sorted(root.rglob("*.ipynb")):
            cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
            code = "\n".join("".join(c.get("source", [])) for c in cells if c.get("cell_type") == "code")
            out.append(
                (path, "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("!", "%"))))
            )
    return out


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ------------------------------------------------------------------------------------ SQL only in db/

SQL_WORDS = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|BEGIN|REPLACE)\b", re.IGNORECASE)


def sql_violations(path: Path, source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("sqlite3", "psycopg", "psycopg2"):
                    found.append(f"{rel(path)}:{node.lineno} imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in ("sqlite3", "psycopg", "psycopg2"):
                found.append(f"{rel(path)}:{node.lineno} imports from {node.module}")
            if top == "sqlalchemy" and any(
                a.name in ("text", "create_engine", "insert", "select", "update", "delete") for a in node.names
            ):
                found.append(f"{rel(path)}:{node.lineno} imports SQL constructs from {node.module}")
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("exec_driver_sql", "executescript"):
                found.append(f"{rel(path)}:{node.lineno} calls {name}")
            if (
                name == "text"
                and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) not in ("sqlalchemy", "sa")
            ):
                continue  # st.text(...), path.read_text(...): not SQL
            if name in ("execute", "executemany", "text") and node.args:
                arg = node.args[0]
                while isinstance(arg, ast.BinOp):  # "SELECT ... " + value
                    arg = arg.left
                literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                if literal is None and isinstance(arg, ast.JoinedStr):
                    literal = "".join(v.value for v in arg.values if isinstance(v, ast.Constant))
                if literal is not None and SQL_WORDS.match(literal):
                    found.append(f"{rel(path)}:{node.lineno} runs an SQL string through {name}()")
    return found


def test_no_sql_strings_outside_db():
    files = sources(PACKAGES_OUTSIDE_DB)
    assert len(files) > 20  # the scan sees the packages
    violations = [v for path, src in files for v in sql_violations(path, src)]
    assert not violations, "SQL belongs in db/ (through the ORM, bound parameters):\n" + "\n".join(violations)


def test_the_sql_scan_catches_what_it_should():
    bad = """
import sqlite3
from sqlalchemy import text
conn.execute("SELECT * FROM judgements WHERE labeler = '" + name + "'")
conn.execute(f"DELETE FROM prompts WHERE id = {pid}")
conn.exec_driver_sql("PRAGMA foo")
"""
    assert len(sql_violations(REPO / "x.py", bad)) == 5
    fine = 'engine = db.connect()\nrows = db.stats(engine)\nsubprocess.run(["ls"])\npool.execute(job)\n'
    assert sql_violations(REPO / "x.py", fine) == []


def test_db_writes_bind_their_parameters():
    """Inside db/, raw ``text(...)`` appears only with bound ``:name`` parameters, never formatted in."""
    for path, src in sources(["db"]):
        if "/migrations/versions/" in str(path):
            continue  # schema DDL written by hand, no user data
        tree = ast.parse(src)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", "")) == "text"
                and node.args
            ):
                arg = node.args[0]
                assert not isinstance(arg, ast.JoinedStr | ast.BinOp), (
                    f"{rel(path)}:{node.lineno}: text() with a formatted string"
                )


# ------------------------------------------------------------------------------------ no HTML rendering

HTML_SINKS = re.compile(
    r"unsafe_allow_html\s*=\s*True|st\.html\(|components\.v1|components\.html|st\.components|"
    r"st\.write\(\s*item|st\.markdown\(\s*item"
)


# The one script allowed, once: ui._post_from_browser's zero-height component, which carries only one of
# our two session routes and a URL-safe claim code (checked there; tests/test_sessions.py), never item text.
ALLOWED_SINKS = ("labeling_app/ui.py: components.v1", "labeling_app/ui.py: components.html")


def test_app_never_renders_text_as_html():
    hits = [f"{rel(p)}: {m.group(0)}" for p, src in sources(["labeling_app"]) for m in HTML_SINKS.finditer(src)]
    for allowed in ALLOWED_SINKS:
        if allowed in hits:
            hits.remove(allowed)
    assert not hits, hits


def test_completions_and_prompts_are_shown_with_st_text_only():
    """Every Streamlit call that is given an item's prompt or completion is ``st.text`` (or a code
    block / dataframe, which do not interpret markup)."""
    safe = {"text", "code", "dataframe", "table"}
    for path, src in sources(["labeling_app"]):
        for node in ast.walk(ast.parse(src)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            shown = [a for a in node.args if isinstance(a, ast.Attribute) and a.attr in ("completion", "prompt")]
            if shown and isinstance(node.func.value, ast.Name) and node.func.value.id == "st":
                assert node.func.attr in safe, f"{rel(path)}:{node.lineno}: st.{node.func.attr}(... .{shown[0].attr})"


# ------------------------------------------------------------------------------------ the access token


def test_token_is_compared_in_constant_time(monkeypatch):
    from labeling_app import runtime

    tree = ast.parse(Path(runtime.__file__).read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "token_ok")
    calls = {ast.unparse(n.func) for n in ast.walk(fn) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls
    assert not any(
        isinstance(n, ast.Compare)
        and any(isinstance(op, ast.Eq | ast.NotEq) for op in n.ops)
        and "given" in ast.unparse(n)
        for n in ast.walk(fn)
    ), "the token must not be compared with =="
    assert runtime.token_ok("s3cret", "s3cret")
    assert not runtime.token_ok("s3cre", "s3cret") and not runtime.token_ok(None, "s3cret")
    assert not runtime.token_ok("", "s3cret") and runtime.token_ok("ünï🎬", "ünï🎬")
    assert runtime.token_ok("anything", None)  # no RLHF_LABEL_TOKEN: an open app (localhost default)


def test_no_token_comparison_with_equals_anywhere():
    """No ``==``/``!=`` between anything named like the access token (tokenizers' ids are fine)."""

    def tokenish(node: ast.AST) -> bool:
        names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]
        names += [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
        return any(
            "token" in x.lower()
            and not any(w in x.lower() for w in ("tokenizer", "token_id", "pad_token", "eos_token", "tokens"))
            for x in names
        )

    hits = []
    for path, src in sources(["labeling_app", "common"]):
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                if tokenish(node) and not any(
                    isinstance(c, ast.Constant) and c.value is None for c in node.comparators
                ):
                    hits.append(f"{rel(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not hits, hits


# ------------------------------------------------------------------------------------ labeller names


@pytest.mark.parametrize("name", ["", " ", "x" * 65, "a\x00b", "a\nb", "a\tb", "\u202e", "a\x1bb"])
def test_labeller_names_are_validated(name):
    from common.errors import UserError
    from db import validate_labeler_name

    with pytest.raises(UserError):
        validate_labeler_name(name)


def test_app_signs_in_through_the_validating_db_function():
    src = (REPO / "labeling_app" / "ui.py").read_text(encoding="utf-8")
    assert "db.get_or_create_labeler(" in src


# ------------------------------------------------------------------------------------ serving to a network


@pytest.mark.parametrize(
    "address,token,accounts,insecure_open,outcome",
    [
        ("0.0.0.0", None, False, False, "refused"),
        ("0.0.0.0", "s3cret", False, False, "refused"),  # shared-token mode needs --insecure-open on a network
        ("0.0.0.0", "s3cret", False, True, "warned"),
        ("0.0.0.0", None, False, True, "warned"),
        ("0.0.0.0", None, True, False, "started"),  # accounts mode
        ("127.0.0.1", None, False, False, "started"),
    ],
)
def test_serving_the_network_without_accounts_is_refused(
    smoke_env, monkeypatch, capsys, address, token, accounts, insecure_open, outcome
):
    import db
    import labeling_app.__main__ as cli

    class Exec(Exception):
        pass

    def fake_execv(*_args):
        raise Exec

    monkeypatch.setattr(cli.os, "execv", fake_execv)
    if token:
        monkeypatch.setenv("RLHF_LABEL_TOKEN", token)
    else:
        monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    if accounts:
        db.add_account(db.connect(smoke_env["db_url"]), "root", "a long enough password", role="admin")
    argv = ["--address", address, "--port", "8599"] + (["--insecure-open"] if insecure_open else [])
    if outcome == "refused":
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    else:
        with pytest.raises(Exec):
            cli.main(argv)
    err = capsys.readouterr().err
    assert ("python -m db users add" in err and "--insecure-open" in err) is (outcome == "refused")
    assert ("warning: serving on" in err) is (outcome == "warned")
    if outcome == "warned" and token:
        assert "shared-token mode (one trusted room)" in err
    assert "s3cret" not in err and "a long enough password" not in err
