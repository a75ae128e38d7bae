"""The same PPO code under DDP: two CPU processes (gloo) started by torchrun, on the tiny policy.

(``accelerate launch --cpu`` always starts one process; ``torchrun --nproc_per_node 2`` is how
accelerate runs several CPU processes on one machine.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
import torch
from accelerate import PartialState
from base_policy.loading import load_policy
from rl_finetune.ppo import GenKwargs, PPOConfig, train

policy_dir, out = sys.argv[1], sys.argv[2]
cfg = PPOConfig(total_steps=2, num_rollouts=4, generation_batch_size=4, minibatch_size=2, ppo_epochs=1, lr=1e-3,
                mixed_precision="no", kl_target=6.0, kl_horizon=100, eval_interval=2, checkpoint_interval=0,
                gen_kwargs=GenKwargs(max_new_tokens=6))
res = train(load_policy(policy_dir), lambda texts: [t.count("e") for t in texts], ["I think", "The movie", "This is", "Well"] * 2,
            cfg, eval_prompts=["I think"], progress=False)
state = PartialState()
weights = sum(float(p.detach().double().sum()) for p in res.policy.parameters())
with open(f"{out}.{state.process_index}.json", "w") as fh:
    json.dump({"rank": state.process_index, "world": state.num_processes, "weights": weights,
               "kl_coef": res.metrics[-1]["kl_coef"], "steps": res.summary["steps"]}, fh)
"""


def test_two_cpu_processes_train_in_lockstep(tiny_policy_dir, tmp_path):
    script = tmp_path / "ddp_ppo.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tiny_policy_dir),
            str(tmp_path / "out"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"out.{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in results] == [2, 2]
    assert all(r["steps"] == 2 for r in results)
    # DDP averaged the gradients: both processes end with the same weights and the same KL coefficient
    assert abs(results[0]["weights"] - results[1]["weights"]) < 1e-6
    assert results[0]["kl_coef"] == results[1]["kl_coef"] != 0.05
