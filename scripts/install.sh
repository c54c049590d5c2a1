#!/usr/bin/env bash
# Install AutoAnnotator and its extras into a virtual environment (default .venv).
#   scripts/install.sh [EXTRAS]       e.g. scripts/install.sh llm,dev,ray
# Machines without an NVIDIA GPU get torch's CPU build first, so pip never downloads the
# multi-GB CUDA wheels there; machines with one get pip's default (CUDA) build.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${AUTOANNOTATOR_VENV:-.venv}
extras=${1:-llm}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip

if ! "$py" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install: NVIDIA GPU found; installing the default (CUDA) torch build" >&2
    "$py" -m pip install -q torch
  else
    echo "install: no GPU; installing torch's CPU build" >&2
    # A local wheel where the machine provides one (pip's find-links), else PyTorch's CPU index.
    "$py" -m pip install -q "torch==2.13.0+cpu" 2>/dev/null ||
      "$py" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# llama-cpp-python compiles llama.cpp (~5-8 min on 2 cores); pip caches the wheel afterwards.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
"$py" -m pip install -q -e ".[$extras]"
echo "install: done ($("$py" -c 'import torch; print("torch", torch.__version__)'))" >&2
