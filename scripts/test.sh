#!/usr/bin/env bash
# Quick start 2: install (with the local LLM, dev tools and the ray extra), lint, type-check
# agent/, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh llm,dev,ray
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/ty check --exit-zero-on-warning agent  # warnings: see [tool.ty.rules]
exec .venv/bin/python -m pytest "$@"
