"""KTO's offline trainer from good/bad labels: the mismatched KL pairs and class weights, the good completion's
log-prob rising over the bad one's on a tiny GPT-2 and a tiny Llama (frozen bottom, cached trunk, bf16), the labels
read from the database by majority, and `python -m rl_finetune kto` end to end with its refusals of bad input."""

from __future__ import annotations

import json

import pytest

from common.errors import UserError
from db.types import PreferencePair
from rl_finetune.offline import KTOConfig, train_kto
from rl_finetune.offline.kto_train import kto_weights, mismatched
from tests.test_dpo import BAD, GOOD, PROMPTS, margin_of, tiny_dir  # noqa: F401 (tiny_dir is a fixture)

EXAMPLES = [(p, GOOD, True) for p in PROMPTS[:3]] + [(p, BAD, False) for p in PROMPTS[3:]]
HELD = [PreferencePair(p, GOOD, BAD) for p in PROMPTS]  # good vs bad for every prompt


def tiny_config(**kw) -> KTOConfig:
    base = dict(lr=2e-3, epochs=12, batch_size=4, mixed_precision="no", eval_every=5, num_layers_unfrozen=-1)
    base.update(kw)
    return KTOConfig(**base)


def test_mismatched_pairs_use_every_completion_once_and_never_their_own():
    for n in (2, 3, 10):
        partner = mismatched(n, seed=0)
        assert sorted(partner) == list(range(n)) and all(partner[i] != i for i in range(n))
    assert mismatched(10, 0) == mismatched(10, 0) != mismatched(10, 1)


def test_class_weights_balance_unequal_labels_unless_given():
    assert kto_weights(KTOConfig(), n_good=2, n_bad=6) == (3.0, 1.0)  # lambda_D * 2 == lambda_U * 6
    assert kto_weights(KTOConfig(weight_ratio=4 / 3), 3, 3) == pytest.approx((4 / 3, 1.0))
    assert kto_weights(KTOConfig(desirable_weight=1.0, undesirable_weight=0.5), 2, 6) == (1.0, 0.5)


@pytest.mark.parametrize("frozen", [False, True], ids=["all-layers", "top-block-bf16"])
def test_kto_raises_the_good_completions_log_prob_over_the_bad(tiny_dir, tmp_path, frozen):  # noqa: F811
    extra = dict(num_layers_unfrozen=1, mixed_precision="bf16", lr=5e-3) if frozen else {}
    res = train_kto(tiny_dir, EXAMPLES, tmp_path / "kto", tiny_config(**extra))
    rows = [r for r in res["metrics"] if "loss" in r]
    print(rows[0], rows[-1])
    assert res["steps"] == 24 and res["labels_used"] == 6  # 6 examples, 4 a batch: 2 batches an epoch, 12 epochs
    assert rows[0]["loss"] == pytest.approx(0.5, abs=2e-3)  # 1 - sigmoid(0) at the start (policy = reference)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.01
    assert all("kl_ref" in r and r["kl_ref"] >= 0 for r in rows)  # the reference point, clamped at 0
    # taught only "good completion: good, bad completion: bad", each on other prompts: on every prompt the
    # saved policy now prefers the good completion by more than the start policy did
    assert margin_of(res["out_dir"], HELD) > margin_of(tiny_dir, HELD) + 1.0
    assert (res["out_dir"] / "kto_config.json").is_file() and (res["out_dir"] / "metrics.jsonl").is_file()


@pytest.mark.parametrize(
    "examples, match",
    [
        ([], "no good/bad labels"),
        ([(p, GOOD, True) for p in PROMPTS], "all 6 labelled completions are good.*label some completions bad"),
        ([(p, BAD, False) for p in PROMPTS[:2]], "all 2 labelled completions are bad"),
    ],
)
def test_bad_examples_are_refused_before_anything_is_written(tiny_dir, tmp_path, examples, match):  # noqa: F811
    with pytest.raises(UserError, match=match) as err:
        train_kto(tiny_dir, examples, tmp_path / "kto", tiny_config())
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ the labels from the database, the command


def _judged(labels: dict[str, list[str]]) -> None:
    """One completion per entry (prompt = the key's index), judged by labellers ann, ben, cat in order."""
    import db
    from db.types import NewCompletion

    engine = db.connect()
    texts = list(labels)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(texts))]
    db.add_prompts(engine, sorted(set(prompts)))
    ids = db.add_completions(engine, [NewCompletion(p, t) for p, t in zip(prompts, texts)])
    who = [db.get_or_create_labeler(engine, name) for name in ("ann", "ben", "cat")]
    for cid, text in zip(ids, texts):
        for labeler, label in zip(who, labels[text]):
            db.record_judgement(engine, labeler_id=labeler, completion_id=cid, label=label)
    engine.dispose()


def test_kto_examples_are_majority_labels_without_skips_and_ties(smoke_env):
    import db
    from rl_finetune.offline.data import kto_examples

    _judged(
        {
            " a": ["good", "good", "bad"],
            " b": ["bad"],
            " c": ["good", "bad"],
            " d": ["skip"],
            " e": ["skip", "good"],
            "": ["bad"],  # the policy stopped at once: no token to learn from, dropped
        }
    )
    got = kto_examples(db.connect())
    assert [(c, good) for _, c, good in got] == [(" a", True), (" b", False), (" e", True)]  # c: tie, d: skip only


def test_pairs_with_an_empty_side_are_dropped_when_read(tmp_path):
    from db.types import PreferencePair
    from rl_finetune.offline.data import dpo_pairs

    f = tmp_path / "pairs.jsonl"
    rows = [("Well", " good", " bad"), ("Well", "", " bad"), ("So", " fine", " dull")]
    f.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in rows))
    got = dpo_pairs(path=f)
    assert [(p.chosen, p.rejected) for p in got] == [(" good", " bad"), (" fine", " dull")]
    assert all(isinstance(p, PreferencePair) for p in got)


def test_cli_trains_saves_registers_and_points_latest(smoke_env, tiny_policy_dir, capsys):
    from transformers import AutoModelForCausalLM

    import db
    from common.paths import policies_dir, resolve_latest
    from rl_finetune.__main__ import main

    _judged({GOOD: ["good"], " great fun": ["good", "good"], BAD: ["bad", "bad", "good"], " awful": ["bad"]})
    assert main(["kto", "--policy", str(tiny_policy_dir), "--set", "max_steps=3"]) == 0
    out = capsys.readouterr().out
    run = resolve_latest(policies_dir())
    assert run is not None and run.name.startswith("kto-") and f"saved {run}" in out
    assert AutoModelForCausalLM.from_pretrained(run) is not None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["labels_used"] == 4 and "eval/kl_after" in summary
    assert "kl_ref (last step)" in out
    versions = {v.id: v for v in db.list_model_versions(db.connect(), kind="policy")}
    new = [v for v in versions.values() if v.name == run.name]
    assert len(new) == 1 and versions[new[0].parent_id].path == str(tiny_policy_dir.resolve())


def test_cli_refuses_missing_or_one_class_labels_and_writes_nothing(smoke_env, tiny_policy_dir, capsys):
    from common.paths import policies_dir
    from tests.test_dpo import _refused

    policy = ["--policy", str(tiny_policy_dir)]
    assert "no good/bad labels" in _refused(["kto", *policy], capsys)
    _judged({GOOD: ["good"], " great": ["good"], " meh": ["skip"]})
    assert "are good" in _refused(["kto", *policy], capsys)
    assert "weight_ratio" in _refused(["kto", *policy, "--set", "weight_ratio=2"], capsys)
    assert "nothing to train" in _refused(["kto", *policy, "--set", "num_layers_unfrozen=0"], capsys)
    assert not policies_dir().exists() or not [p for p in policies_dir().iterdir()]
