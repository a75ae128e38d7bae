# RLHF pipeline. `make` (or `make help`) lists the targets.
# Every target depends on `setup`, so on a fresh clone any of them works as the first command.
SHELL := bash
.DEFAULT_GOAL := help
.SHELLFLAGS := -eu -o pipefail -c

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-setup
PYTHON ?= python3.11

# Profiles and locations, honoured by every stage (see README "Profiles").
# CONFIG=... is a short form of RLHF_CONFIG=...
ifdef CONFIG
export RLHF_CONFIG := $(CONFIG)
endif
export RLHF_CONFIG    ?= configs/default.yaml
export RLHF_DB_URL    ?= sqlite:///data/feedback.sqlite
export RLHF_ARTIFACTS ?= artifacts
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# How idle OpenMP threads wait is chosen by each command before torch loads (common/runtime.py): they spin when
# the other cores are idle (sampling SmolLM2 2x faster) and sleep when other work keeps them busy (3x faster
# then). OMP_WAIT_POLICY=PASSIVE or ACTIVE, or RLHF_OMP_WAIT=sleep or spin, overrides the choice.

PORT   ?= 8501
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: help setup lint format test test-slow bench demo label base-model generate reward-model score-queue finetune \
        db-upgrade db-stats export notebook analyse compare clean clean-all

help: ## List the targets
	@echo "RLHF pipeline: 1 base policy, 2 labelling in the browser, 3 reward model, 4 RL fine-tuning (PPO), around one database."
	@echo "Profile: RLHF_CONFIG=$(RLHF_CONFIG)  database: RLHF_DB_URL=$(RLHF_DB_URL)  outputs: RLHF_ARTIFACTS=$(RLHF_ARTIFACTS)"
	@echo
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install everything (torch 2.13.0 CPU first); idempotent

$(STAMP): pyproject.toml scripts/setup.sh
	scripts/setup.sh $(VENV) $(PYTHON)

lint: setup ## Check the code with ruff (lint rules and formatting), as CI does
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## Fix what ruff can: import order, modern syntax, formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup ## Run the test suite (smoke profile, real browser and PostgreSQL included)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup ## Run the long end-to-end tests only (default profile; tens of minutes)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

bench: setup ## Run every benchmark in benchmarks/ (prints JSON lines; long)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b $(ARGS); done

demo: setup ## The whole loop on the current profile: stages 1-4 (base policy, labels, reward model, PPO) and a report (ROUNDS=2 for two rounds, PAIRS=1 for the pairwise round and DPO)
	$(PY) -m demo $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(PAIRS),--pairwise) $(ARGS)

label: setup ## Stage 2: open the labelling app on http://localhost:$(PORT) (keys G/B/S/U; RLHF_LABEL_TOKEN for teams)
	$(PY) -m labeling_app --port $(PORT) $(ARGS)

base-model: setup ## Stage 1: pretrain the small GPT-2 base policy on IMDB into $RLHF_ARTIFACTS/base_policy
	$(PY) -m base_policy pretrain $(ARGS)

generate: setup ## Stage 1: fill the labelling queue with completions from the newest policy
	$(PY) -m base_policy generate $(ARGS)

reward-model: setup ## Stage 3: train the reward model (IMDB seed + human labels) into $RLHF_ARTIFACTS/reward_models
	$(PY) -m reward_training $(ARGS)

score-queue: setup ## Stage 3: write the newest reward model's P(good) of unlabelled completions into the db ("uncertain first" order)
	$(PY) -m reward_training score $(ARGS)

finetune: setup ## Stage 4: RL fine-tuning, PPO against the newest reward model into $RLHF_ARTIFACTS/policies
	$(PY) -m rl_finetune ppo $(ARGS)

compare: setup ## Every stage-3 learner (PPO, RLOO, GRPO, best-of-n, KTO, DPO) on one gold-vs-KL frontier into $RLHF_ARTIFACTS/compare/ (docs/compare.md)
	$(PY) -m rl_finetune compare $(ARGS)

analyse: setup ## What RL changed inside the model: report comparing BASE=folder and TUNED=folder (default TUNED: the newest PPO policy) into $RLHF_ARTIFACTS/analysis/
	$(PY) -m rl_finetune analyse $(or $(BASE),$(RLHF_ARTIFACTS)/base_policy) $(or $(TUNED),$(RLHF_ARTIFACTS)/policies/$$(cat $(RLHF_ARTIFACTS)/policies/latest 2>/dev/null || echo latest)) $(ARGS)

db-upgrade: setup ## Create or upgrade the feedback database schema (Alembic)
	$(PY) -m db upgrade

db-stats: setup ## Print database counts as JSON
	$(PY) -m db stats

export: setup ## Export the labels (FORMAT=jsonl|csv|hf, DEST=path)
	$(PY) -m db export --format $(or $(FORMAT),jsonl) $(or $(DEST),$(RLHF_ARTIFACTS)/labels.$(or $(FORMAT),jsonl))

notebook: setup ## Execute the walkthrough notebook top to bottom into $RLHF_ARTIFACTS/notebook/
	$(PY) notebooks/run_notebook.py $(ARGS)

.PHONY: clean-runs
clean-runs: setup ## Remove unfinished runs (.work-*) and temporary folders under $RLHF_ARTIFACTS whose owner is dead (`python -m db stats` lists them)
	$(PY) -m db clean-runs --yes $(ARGS)

clean: ## Remove run outputs (artifacts/, data/), keeping .venv
	rm -rf artifacts data

clean-all: clean ## Remove run outputs and .venv
	rm -rf $(VENV)
