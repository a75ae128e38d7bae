"""Generation: batched sampling with left padding, and filling the labelling queue in the db."""

from __future__ import annotations

import logging

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

import db
from base_policy.generate import GenerateConfig, fill_queue, generate_completions, left_pad
from base_policy.loading import load_policy
from base_policy.registry import ensure_registered, find_policy_version
from common.errors import UserError


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return load_policy(tiny_policy_dir)


def _completions(engine) -> list:
    with Session(engine) as s:
        return list(s.scalars(select(db.Completion).order_by(db.Completion.id)))


def test_left_pad_masks_the_padding():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_completions_per_prompt_and_params_are_recorded(policy):
    model, tok = policy
    cfg = GenerateConfig(
        completions_per_prompt=2, prompts_per_batch=2, max_new_tokens=6, top_k=5, top_p=0.9, temperature=0.7, seed=1
    )
    rows = generate_completions(model, tok, ["This movie", "I hated it", "Great"], cfg)
    assert [r["prompt"] for r in rows] == ["This movie"] * 2 + ["I hated it"] * 2 + ["Great"] * 2
    for r in rows:
        assert 0 <= r["n_tokens"] <= 6
        assert r["finish_reason"] in ("eos", "length")
        assert r["gen_params"] == {
            "max_new_tokens": 6,
            "temperature": 0.7,
            "top_k": 5,
            "top_p": 0.9,
            "do_sample": True,
            "seed": 1,
        }
    again = generate_completions(model, tok, ["This movie", "I hated it", "Great"], cfg)
    assert [r["text"] for r in again] == [r["text"] for r in rows]  # seeded


def test_batched_left_padded_generation_matches_one_at_a_time(policy):
    model, tok = policy
    cfg = GenerateConfig(max_new_tokens=8, temperature=0.0, prompts_per_batch=8)
    prompts = ["Hi", "This is a much longer prompt about a film that I saw"]
    batched = [r["text"] for r in generate_completions(model, tok, prompts, cfg)]
    alone = [generate_completions(model, tok, [p], cfg)[0]["text"] for p in prompts]
    assert batched == alone


def test_completion_is_cut_at_end_of_text(policy):
    _, tok = policy
    eos = tok.eos_token_id
    word = tok.encode(" good")[0]

    class Scripted(torch.nn.Module):
        """Stands in for a model: appends ' good', <|endoftext|>, then padding."""

        config = type("C", (), {"n_positions": 64})()

        def generate(self, input_ids, attention_mask, **kwargs):
            tail = torch.tensor([[word, eos, eos]] * input_ids.shape[0])
            return torch.cat([input_ids, tail], dim=1)

    # greedy decoding goes through model.generate (pure sampling through the KV-cache sampler, tested below)
    rows = generate_completions(Scripted(), tok, ["It was"], GenerateConfig(max_new_tokens=3, temperature=0.0))
    assert rows[0]["text"] == " good"
    assert rows[0]["n_tokens"] == 1 and rows[0]["finish_reason"] == "eos"


def test_pure_sampling_uses_the_kv_cache_sampler_and_is_seeded(policy):
    """Pure sampling (the default) goes through base_policy.sampling, which PPO samples with too: the same
    seed gives the same completions, and each prompt gets completions_per_prompt of them, in order."""
    model, tok = policy
    cfg = GenerateConfig(max_new_tokens=6, seed=3, completions_per_prompt=2)
    first = generate_completions(model, tok, ["It was", "The plot"], cfg)
    again = generate_completions(model, tok, ["It was", "The plot"], cfg)
    assert [r["text"] for r in first] == [r["text"] for r in again]
    assert [r["prompt"] for r in first] == ["It was", "It was", "The plot", "The plot"]
    assert all(r["n_tokens"] <= 6 and (r["n_tokens"] == 6 or r["finish_reason"] == "eos") for r in first)


def test_long_prompt_is_cut_from_the_left_with_a_warning(policy, caplog):
    model, tok = policy
    long = "word " * 400  # > 128 positions of the tiny model
    with caplog.at_level(logging.WARNING, logger="base_policy.generate"):
        rows = generate_completions(model, tok, [long + "END"], GenerateConfig(max_new_tokens=4, temperature=0.0))
    assert len(rows) == 1
    assert "truncated from the left" in caplog.text


def test_empty_prompt_list_is_an_error(policy):
    model, tok = policy
    with pytest.raises(UserError, match="empty"):
        generate_completions(model, tok, [], GenerateConfig())


def test_missing_policy_names_the_path_and_the_command(smoke_env):
    missing = smoke_env["artifacts"] / "base_policy"
    with pytest.raises(UserError) as err:
        load_policy(None)
    assert str(missing) in str(err.value) and "make base-model" in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        load_policy(str(smoke_env["artifacts"] / "nowhere" / "model"))
    (smoke_env["artifacts"] / "empty").mkdir(parents=True)
    with pytest.raises(UserError, match="no config.json"):
        load_policy(str(smoke_env["artifacts"] / "empty"))


def test_fill_queue_writes_completions_with_version_and_params(smoke_env, tiny_policy_dir):
    engine = db.connect(smoke_env["db_url"])
    cfg = GenerateConfig(completions_per_prompt=2, prompts_per_batch=3, max_new_tokens=5, seed=0)
    written = fill_queue(engine, tiny_policy_dir, 6, cfg, prompts=["A film", "The plot", "I laughed"])
    assert written == 6
    rows = _completions(engine)
    assert len(rows) == 6
    version = find_policy_version(engine, tiny_policy_dir)
    assert version is not None
    assert {r.model_version_id for r in rows} == {version}
    assert all(
        r.gen_params["top_k"] == 0 and r.gen_params["temperature"] == 1.0 and r.gen_params["max_new_tokens"] == 5
        for r in rows
    )
    # a second fill from the same policy reuses its version
    assert fill_queue(engine, tiny_policy_dir, 2, cfg, prompts=["Another prompt"]) == 2
    assert {r.model_version_id for r in _completions(engine)} == {version}
    assert len(db.list_model_versions(engine, kind="policy")) == 1
    assert ensure_registered(engine, tiny_policy_dir) == version


def test_the_cached_generation_policy_can_be_released(smoke_env, tiny_policy_dir):
    import gc
    import weakref

    from base_policy import generate

    engine = db.connect(smoke_env["db_url"])
    cfg = GenerateConfig(completions_per_prompt=1, prompts_per_batch=1, max_new_tokens=2, seed=0)
    assert fill_queue(engine, tiny_policy_dir, 1, cfg, prompts=["A film"]) == 1
    ((model, _tok),) = generate._MODEL_CACHE.values()  # kept for the app's next refill
    alive = weakref.ref(model)
    del model
    generate.release_cached_policies()
    gc.collect()
    assert not generate._MODEL_CACHE and alive() is None  # nothing else holds the model


def test_cli_generate_writes_n_completions(smoke_env, tiny_policy_dir, capsys):
    from base_policy.__main__ import main

    assert (
        main(
            [
                "generate",
                "--policy",
                str(tiny_policy_dir),
                "-n",
                "5",
                "--completions-per-prompt",
                "1",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    engine = db.connect(smoke_env["db_url"])
    rows = _completions(engine)
    assert len(rows) == 5
    assert all(r.model_version_id is not None for r in rows)
    assert "wrote 5 completions" in capsys.readouterr().out


def test_cli_generate_from_prompt_file(smoke_env, tiny_policy_dir, tmp_path, capsys):
    import json

    from base_policy.__main__ import main

    f = tmp_path / "prompts.txt"
    f.write_text("First prompt\n\nSecond prompt\n")
    assert (
        main(
            [
                "generate",
                "--policy",
                str(tiny_policy_dir),
                "-n",
                "2",
                "--prompt-file",
                str(f),
                "--max-new-tokens",
                "3",
                "--print",
            ]
        )
        == 0
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["prompt"] for x in lines] == ["First prompt", "Second prompt"]


def test_cli_generate_without_base_policy_exits_2(smoke_env, capsys):
    from base_policy.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["generate", "-n", "2"])
    assert exc.value.code == 2
    assert "make base-model" in capsys.readouterr().err


def test_latest_means_the_newest_ppo_policy_everywhere(smoke_env, tiny_policy_dir):
    import shutil

    from base_policy.loading import resolve_policy
    from base_policy.registry import register_policy
    from common.paths import policies_dir, write_latest
    from labeling_app.runtime import NEWEST_REGISTERED, refill_policy

    engine = db.connect(smoke_env["db_url"])
    with pytest.raises(UserError, match="no PPO policy yet"):
        resolve_policy("latest")
    assert refill_policy(engine, "latest") is None  # the app degrades instead of failing
    assert refill_policy(engine, NEWEST_REGISTERED) is None  # nothing registered, no PPO run, no base policy

    run = policies_dir() / "run-1"
    shutil.copytree(tiny_policy_dir, run)
    write_latest(policies_dir(), "run-1")
    assert resolve_policy("latest") == str(run)
    assert refill_policy(engine, "latest") == run  # the same meaning in the labelling app
    assert refill_policy(engine, NEWEST_REGISTERED) == run  # nothing registered yet: the newest PPO run

    register_policy(tiny_policy_dir, engine=engine)  # registered after the PPO run: newest in the database
    assert refill_policy(engine, NEWEST_REGISTERED).resolve() == tiny_policy_dir.resolve()
    assert refill_policy(engine, "latest") == run
    assert refill_policy(engine, str(tiny_policy_dir)) == tiny_policy_dir


def test_continuation_nll_is_lower_for_what_the_model_expects(policy):
    """The fluency measure: a continuation the model itself finds likely costs fewer nats per token than
    random tokens of the same length; real review continuations come with their leading space."""
    from base_policy.fluency import continuation_nll, real_continuations

    model, tok = policy
    greedy = generate_completions(model, tok, ["It was", "The plot"], GenerateConfig(max_new_tokens=8, temperature=0.0))
    prompts, texts = [r["prompt"] for r in greedy], [r["text"] for r in greedy]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    # random tokens, not the greedy ones reversed: a tiny model's greedy text can be one token repeated
    g = torch.Generator().manual_seed(0)
    noise = [
        tok.decode(torch.randint(0, len(tok), (len(i),), generator=g).tolist(), skip_special_tokens=True) for i in ids
    ]
    assert continuation_nll(model, tok, prompts, texts) < continuation_nll(model, tok, prompts, noise)
    long = " ".join(["a much longer continuation than the tiny model's 128 positions"] * 40)
    assert continuation_nll(model, tok, ["It was"], [long]) > 0  # cut to the context, not an index error
    reviews = ["one two three four five six " + " ".join(f"w{i}" for i in range(30)), "too short"]
    p, c = real_continuations(reviews, 5, prompt_words=6, continuation_words=24)
    assert p == ["one two three four five six"] and c[0].startswith(" w0 w1") and len(c[0].split()) == 24
