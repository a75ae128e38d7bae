"""DPO from preference pairs: the sigmoid loss by hand, the cached frozen trunk equal to the plain path, the
margin rising on a tiny GPT-2 and a tiny Llama, the eval schedule and time budget, and `python -m rl_finetune
dpo` end to end on a temporary database (save, register, latest) with its refusals of bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from common.errors import UserError
from db.types import PreferencePair
from rl_finetune.offline import DPOConfig, dpo_loss, sequence_logprobs, train_dpo
from tests.test_hydra import tiny_gpt2, tiny_llama

PROMPTS = ["I think", "The movie was", "This is", "Well", "My", "It"]
GOOD, BAD = " good good good", " bad bad bad"
PAIRS = [PreferencePair(p, GOOD, BAD) for p in PROMPTS]


def tiny_config(**kw) -> DPOConfig:
    base = dict(lr=1e-3, epochs=8, batch_size=3, mixed_precision="no", eval_every=4, num_layers_unfrozen=-1)
    base.update(kw)
    return DPOConfig(**base)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def tiny_dir(request, tmp_path_factory):
    """A tiny random GPT-2 or Llama (3 layers) with GPT-2's tokenizer, saved in HF format."""
    from common.assets import gpt2_tokenizer

    torch.manual_seed(0)
    tok = gpt2_tokenizer()
    model = tiny_gpt2(len(tok)) if request.param == "gpt2" else tiny_llama(len(tok), tok.eos_token_id)
    out = tmp_path_factory.mktemp(f"tiny_{request.param}")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def margin_of(folder, pairs) -> float:
    """Mean log pi(chosen) - log pi(rejected) of a saved policy, by a plain forward pass (no trainer code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)

    def logp(prompt, completion):
        p, c = tok.encode(prompt), tok.encode(completion)
        with torch.no_grad():
            logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).sum().item()

    return sum(logp(x.prompt, x.chosen) - logp(x.prompt, x.rejected) for x in pairs) / len(pairs)


# ------------------------------------------------------------------ the pure functions, by hand


def test_dpo_loss_by_hand():
    # pair 1: log-ratios chosen (-1) - (-2) = 1, rejected (-3) - (-2.5) = -0.5; pair 2 the other way round
    pc, pr = torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -2.0])
    rc, rr = torch.tensor([-2.0, -3.0]), torch.tensor([-2.5, -2.5])
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.1)
    m1, m2 = 0.1 * ((-1 + 2) - (-3 + 2.5)), 0.1 * ((-4 + 3) - (-2 + 2.5))  # 0.15, -0.15
    expected = (-math.log(1 / (1 + math.exp(-m1))) - math.log(1 / (1 + math.exp(-m2)))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["rewards/chosen"].item() == pytest.approx((0.1 * 1 + 0.1 * -1) / 2)
    assert stats["rewards/rejected"].item() == pytest.approx((0.1 * -0.5 + 0.1 * 0.5) / 2)
    assert stats["rewards/margins"].item() == pytest.approx((m1 + m2) / 2, abs=1e-7)
    assert stats["rewards/accuracies"].item() == 0.5  # pair 1 right, pair 2 wrong
    assert stats["logps/chosen"].item() == pytest.approx(-2.5)
    # a single pair: loss = -log sigmoid(0.1 * ((a - b) - (c - d)))
    a, b, c, d = -5.0, -7.0, -6.0, -6.5
    one, _ = dpo_loss(torch.tensor([a]), torch.tensor([c]), torch.tensor([b]), torch.tensor([d]), beta=0.1)
    assert one.item() == pytest.approx(math.log1p(math.exp(-0.1 * ((a - b) - (c - d)))), abs=1e-6)


def test_dpo_loss_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = torch.tensor([-2.0], requires_grad=True), torch.tensor([-2.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.25) and pr.grad.item() == pytest.approx(0.25)  # beta * sigmoid(0) each


def test_sequence_logprobs_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    tokens, mask = torch.tensor([[0, 1, 2]]), torch.tensor([[1, 1, 0]])  # the third token is padding
    assert sequence_logprobs(logits, tokens, mask).item() == pytest.approx(math.log(0.5) + math.log(0.8), abs=1e-6)


# ------------------------------------------------------------------ the trainer on tiny models


def test_cached_trunk_gives_the_plain_paths_log_probs(tiny_dir):
    from rl_finetune.offline.batches import encode
    from rl_finetune.offline.loop import OfflineTrainer

    refs = []
    for cache in (True, False):
        trainer = OfflineTrainer(
            tiny_dir, tiny_config(num_layers_unfrozen=1, cache_trunk=cache, batch_size=4), method="dpo"
        )
        assert (trainer.trunk is not None) == cache
        seqs = encode(trainer.tok, PROMPTS * 2, [GOOD] * 6 + [" so so", " the end of it all"] * 3, 24, 32)
        refs.append(trainer.reference_pass(seqs))
        # another batch of the same sequences (other padding) gives the same log-probs as the reference pass
        assert torch.allclose(trainer.logps([11, 0, 5]), refs[-1][[11, 0, 5]], atol=1e-4)
    assert torch.allclose(refs[0], refs[1], atol=1e-4)


def test_dpo_raises_the_chosen_minus_rejected_margin(tiny_dir, tmp_path):
    calls = []

    def eval_fn(model, tok, step):
        calls.append(step)
        assert not model.training
        return {"eval/marker": float(step)}

    res = train_dpo(tiny_dir, PAIRS, tmp_path / "dpo", tiny_config(), eval_fn=eval_fn)
    rows = [r for r in res["metrics"] if "loss" in r]
    print(rows[0], rows[-1])
    assert res["steps"] == 16 and res["labels_used"] == 6  # 6 pairs / 3 a batch * 8 epochs
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy = reference at the first step
    assert rows[-1]["rewards/margins"] > 0.3 and rows[-1]["rewards/accuracies"] == 1.0
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    assert margin_of(res["out_dir"], PAIRS) > margin_of(tiny_dir, PAIRS) + 3.0  # the saved model prefers chosen
    # eval at 0, every eval_every steps and at the end, its rows in "evals" with step and elapsed_s
    assert calls == [0, 4, 8, 12, 16] and [e["step"] for e in res["evals"]] == calls
    assert res["final"]["eval/marker"] == 16.0 and res["evals"][-1]["elapsed_s"] <= res["wall_s"]
    saved = res["out_dir"]
    assert (saved / "model.safetensors").is_file() and (saved / "dpo_config.json").is_file()
    logged = [json.loads(line) for line in (saved / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(17)) and "rewards/accuracies" in logged[1]
    assert json.loads((saved / "summary.json").read_text())["eval/marker_after"] == 16.0
    assert not list(tmp_path.glob(".work-*"))  # the work folder is gone


def test_partial_training_changes_only_the_top_blocks(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    res = train_dpo(tiny_dir, PAIRS, tmp_path / "dpo", tiny_config(num_layers_unfrozen=1, epochs=4, lr=3e-3))
    before = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    after = AutoModelForCausalLM.from_pretrained(res["out_dir"]).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all((".2." in k) or "ln_f" in k or k.endswith("model.norm.weight") for k in changed), changed
    assert res["metrics"][-1]["rewards/margins"] > 0.05


def test_time_budget_stops_after_one_step_and_still_evaluates(tiny_dir, tmp_path):
    res = train_dpo(
        tiny_dir, PAIRS, tmp_path / "dpo", tiny_config(), eval_fn=lambda m, t, s: {"eval/x": 1.0}, time_budget_s=0
    )
    assert res["steps"] == 1 and [e["step"] for e in res["evals"]] == [0, 1]


@pytest.mark.parametrize(
    "pairs, match",
    [
        ([], "0 preference pair"),
        (PAIRS[:1], "1 preference pair.*at least 2"),
        ([PAIRS[0], PreferencePair("Well", " same", " same", comparison_id=7)], "comparison 7.*same completion"),
        ([PAIRS[0], PreferencePair("Well", "", " bad")], "empty completion"),
    ],
)
def test_bad_pairs_are_refused_before_anything_is_written(tiny_dir, tmp_path, pairs, match):
    with pytest.raises(UserError, match=match) as err:
        train_dpo(tiny_dir, pairs, tmp_path / "dpo", tiny_config())
    assert "\n" not in str(err.value) and err.value.fix
    assert not any(tmp_path.iterdir())


def test_unknown_policy_folder_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="no_such_policy"):
        train_dpo(tmp_path / "no_such_policy", PAIRS, tmp_path / "out" / "dpo", tiny_config())
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the command


def _labelled_pairs(n: int) -> None:
    """``n`` comparisons in the database (``db.connect()``), each judged by one labeller: chosen = GOOD."""
    import db
    from db.pairs import add_comparisons, get_pair, record_pair_judgement
    from db.types import NewCompletion

    engine = db.connect()
    prompts = PROMPTS[:n]
    db.add_prompts(engine, prompts)
    ids = db.add_completions(engine, [NewCompletion(p, t) for p in prompts for t in (BAD, GOOD)])
    assert add_comparisons(engine, [(ids[2 * i], ids[2 * i + 1]) for i in range(n)]) == n
    labeler = db.get_or_create_labeler(engine, "ann")
    for cid in range(1, n + 1):
        pair = get_pair(engine, cid)
        choice = "a" if pair.a == GOOD else "b"
        record_pair_judgement(engine, labeler_id=labeler, comparison_id=cid, choice=choice, left_side="a")
    engine.dispose()


def test_cli_trains_saves_registers_and_points_latest(smoke_env, tiny_policy_dir, capsys):
    from transformers import AutoModelForCausalLM

    import db
    from common.paths import policies_dir, resolve_latest
    from rl_finetune.__main__ import main

    _labelled_pairs(4)
    assert main(["dpo", "--policy", str(tiny_policy_dir), "--set", "max_steps=3", "--set", "eval_every=2"]) == 0
    out = capsys.readouterr().out
    run = resolve_latest(policies_dir())
    assert run is not None and run.name.startswith("dpo-") and f"saved {run}" in out
    assert AutoModelForCausalLM.from_pretrained(run) is not None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["labels_used"] == 4
    assert "eval/kl_after" in summary and summary["eval/kl_before"] == pytest.approx(0.0, abs=1e-5)
    assert (run / "samples.md").is_file() and "rewards/accuracies" in out
    assert not list(policies_dir().glob(".work-*"))
    engine = db.connect()
    versions = {v.id: v for v in db.list_model_versions(engine, kind="policy")}
    new = [v for v in versions.values() if v.name == run.name]
    assert len(new) == 1 and versions[new[0].parent_id].path == str(tiny_policy_dir.resolve())
    assert new[0].metrics["labels_used"] == 4


def test_cli_trains_from_a_pairs_file_without_the_database(smoke_env, tiny_policy_dir, tmp_path, capsys):
    from rl_finetune.__main__ import main

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": GOOD, "rejected": BAD}) + "\n" for p in PAIRS))
    out = tmp_path / "my-dpo"
    args = ["dpo", "--policy", str(tiny_policy_dir), "--pairs", str(path), "--out", str(out), "--no-db", "--no-eval"]
    assert main(args) == 0
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "summary.json").read_text())["labels_used"] == len(PAIRS)
    assert not smoke_env["db_file"].exists()  # --no-db with a pairs file: the database is never opened


def _refused(args, capsys) -> str:
    from rl_finetune.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_cli_refuses_bad_input_and_writes_nothing(smoke_env, tiny_policy_dir, tmp_path, capsys):
    from common.paths import policies_dir

    policy = ["--policy", str(tiny_policy_dir)]
    assert "0 preference pair" in _refused(["dpo", *policy], capsys)  # no comparisons at all
    _labelled_pairs(1)
    assert "1 preference pair" in _refused(["dpo", *policy], capsys)  # one pair
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "Well", "chosen": GOOD, "rejected": BAD}) + "\n")
    same.write_text(same.read_text() + json.dumps({"prompt": "Well", "chosen": " x", "rejected": " x"}) + "\n")
    assert "same completion" in _refused(["dpo", *policy, "--pairs", str(same)], capsys)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "holds no pairs" in _refused(["dpo", *policy, "--pairs", str(empty)], capsys)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": GOOD, "rejected": BAD}) + "\n" for p in PAIRS))
    missing = str(tmp_path / "no_such_policy")
    assert "no_such_policy" in _refused(["dpo", "--policy", missing, "--pairs", str(good)], capsys)
    assert "beta" in _refused(["dpo", *policy, "--pairs", str(good), "--set", "beta=0"], capsys)
    assert not policies_dir().exists() or not [p for p in policies_dir().iterdir()]
