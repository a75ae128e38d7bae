"""Shared fixtures: an isolated environment per test (artifacts and database under tmp_path,
the smoke profile), and tiny models built from small configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning: with other jobs on the 2 cores, spinning threads
# stall each other (a tiny pretraining loop went from 30 s to 2 s). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's AppTest runs page scripts as ``__main__`` and leaves them there; a process
    started with the "spawn" method (the db drill, DDP) would then re-run that page and die.
    Put the real ``__main__`` back after every test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def smoke_env(tmp_path, monkeypatch):
    """RLHF_* pointed at tmp_path and the smoke profile; returns the paths."""
    artifacts = tmp_path / "artifacts"
    db_file = tmp_path / "data" / "feedback.sqlite"
    monkeypatch.setenv("RLHF_CONFIG", str(SMOKE))
    monkeypatch.setenv("RLHF_ARTIFACTS", str(artifacts))
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{db_file}")
    monkeypatch.chdir(tmp_path)
    return {"artifacts": artifacts, "db_file": db_file, "db_url": f"sqlite:///{db_file}", "profile": SMOKE}


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    """A 2-layer, d=32 GPT-2 with GPT-2's own tokenizer, saved in HF format (random weights)."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    from common.assets import gpt2_tokenizer

    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    out = tmp_path_factory.mktemp("tiny_policy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    GenerationConfig(
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory) -> Path:
    """A 2-layer, d=32 BERT sequence classifier (NEGATIVE/POSITIVE) with MiniLM's tokenizer (random weights)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from common.assets import minilm_dir

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    model = BertForSequenceClassification(cfg)
    out = tmp_path_factory.mktemp("tiny_reward")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --- db backends (owned by the db helper) -----------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL server (Debian's `postgresql` package) in a temporary folder, for the
    whole session. Skips when the server binaries are missing, unless RLHF_REQUIRE_POSTGRES=1 (CI)."""
    from tests.support.postgres import PostgresUnavailable, TempPostgres

    try:
        server = TempPostgres().start()
    except PostgresUnavailable as err:
        if os.environ.get("RLHF_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"RLHF_REQUIRE_POSTGRES=1 but {err}")
        pytest.skip(str(err))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request, tmp_path) -> str:
    """An empty database URL, once per backend: a SQLite file under tmp_path, and an emptied
    database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'feedback.sqlite'}"
    return request.getfixturevalue("postgres_server").empty_database()


@pytest.fixture
def db_engine(backend_url):
    """`db.connect(backend_url)` (migrated to head), disposed afterwards."""
    import db

    engine = db.connect(backend_url)
    yield engine
    engine.dispose()
